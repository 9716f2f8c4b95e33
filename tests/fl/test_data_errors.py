"""Malformed data files: each error names the file and line, the rule, the value and the fix;
check_data_file / check_data report the same problems without raising (and without torch)."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from fl.lm.data import (
    FORTUNE_LABELS, DataColumnError, DataFileError, check_data, check_data_file, fortune_dir, load_dataset,
    load_fortunes, load_hf, load_table,
)
from fl.lm.specs import DataSpec


def _jsonl(*rows):
    """Lines of a JSONL file: dicts are dumped, strings written as they are."""
    return "".join((json.dumps(r) if isinstance(r, dict) else r) + "\n" for r in rows)


GOOD_A = {"text": "the cat sat on the mat", "label": "animal"}
GOOD_B = {"text": "stock prices fell sharply", "label": "finance"}
BAD_BYTES = b'{"text": "caf\xe9 au lait", "label": "food"}\n'  # latin-1, not UTF-8

# (case, file name, content, message pattern): the pattern pins the file, the line and the rule
CASES = [
    ("bad json", "d.jsonl", _jsonl(GOOD_A, GOOD_B, '{"text": "x", "label": }'),
     r"d\.jsonl line 3: not valid JSON \(Expecting value at column 24\): .*Fix: correct the line"),
    ("row is an array", "d.jsonl", _jsonl(GOOD_A, '["a text", "animal"]', GOOD_B),
     r"d\.jsonl line 2: a JSON array \(\['a text', 'animal'\]\), not an object; every row needs a text"),
    ("row is a string", "d.jsonl", _jsonl(GOOD_A, GOOD_B, '"just text"'),
     r"d\.jsonl line 3: a JSON string \('just text'\), not an object"),
    ("missing label", "d.jsonl", _jsonl(GOOD_A, {"text": "no label here"}, GOOD_B),
     r"d\.jsonl line 2: no column 'label' \(columns: \['text'\]\); every row needs a text and a label\. "
     r"Fix: add it, or set data\.label_column"),
    ("missing text", "d.jsonl", _jsonl(GOOD_A, GOOD_B, {"sentence": "wrong key", "label": "animal"}),
     r"d\.jsonl line 3: no column 'text' \(columns: \['label', 'sentence'\]\).*data\.text_column"),
    ("null label", "d.jsonl", _jsonl(GOOD_A, GOOD_B, GOOD_A, GOOD_B, GOOD_A, GOOD_B, {"text": "x y z", "label": None}),
     r"d\.jsonl line 7: 'label' is null; every row needs a text and a label\. Fix: fill it in or delete the row"),
    ("null text", "d.jsonl", _jsonl(GOOD_A, {"text": None, "label": "animal"}),
     r"d\.jsonl line 2: 'text' is null"),
    ("text is a number", "d.jsonl", _jsonl(GOOD_A, GOOD_B, {"text": 42, "label": "animal"}),
     r"d\.jsonl line 3: 'text' must be a string\. Got number 42 instead\. Fix:"),
    ("text is an object", "d.jsonl", _jsonl({"text": {"en": "hi"}, "label": "animal"}, GOOD_B),
     r"d\.jsonl line 1: 'text' must be a string\. Got object \{'en': 'hi'\} instead"),
    ("label is an array", "d.jsonl", _jsonl(GOOD_A, {"text": "two labels", "label": ["a", "b"]}),
     r"d\.jsonl line 2: 'label' must be a string or a number\. Got array \['a', 'b'\] instead"),
    ("blank label", "d.jsonl", _jsonl(GOOD_A, GOOD_B, {"text": "blank", "label": "  "}),
     r"d\.jsonl line 3: 'label' is empty; every row needs a text and a label"),
    ("not utf-8", "d.jsonl", _jsonl(GOOD_A, GOOD_B).encode() + BAD_BYTES,
     r"d\.jsonl line 3: not valid UTF-8 \(byte 0xe9 at byte offset {offset} of the file\).*"
     r"Fix: save the file as UTF-8"),
    ("empty", "d.jsonl", "", r"d\.jsonl is empty: no rows; every row needs a text and a label\. Fix:"),
    ("only blank lines", "d.jsonl", "\n  \n\n", r"d\.jsonl is empty"),
    ("one label", "d.jsonl",
     _jsonl(GOOD_A, {"text": "the dog barked", "label": "animal"}, {"text": "a cow", "label": "animal"}),
     r"d\.jsonl: all 3 rows have the label 'animal'; a classification task needs at least two labels\. Fix:"),
    ("csv missing column", "d.csv", "text,y\nthe cat sat,animal\n",
     r"d\.csv line 1 \(the header\): no column 'label' \(columns: \['text', 'y'\]\).*Fix: set data\.label_column"),
    ("csv header after blank lines", "d.csv", "\n\nsentence,label\nthe cat sat,animal\n",
     r"d\.csv line 3 \(the header\): no column 'text'"),
    ("csv unquoted comma", "d.csv", "text,label\nthe cat sat,animal\nstocks fell, sharply,finance\n",
     r"d\.csv line 3: 3 fields, but the header \(line 1\) names 2: .*Fix: quote texts that hold commas"),
    ("csv line numbers after a multi-line text", "d.csv",
     'text,label\n"a limerick\nin two lines",poem\nstocks fell,finance\nno label\n',
     r"d\.csv line 5: 1 fields, but the header \(line 1\) names 2"),
    ("csv blank label", "d.csv", "text,label\nthe cat sat,animal\nstocks fell,\n",
     r"d\.csv line 3: 'label' is empty"),
    ("csv not utf-8", "d.csv", b"text,label\nthe cat sat,animal\ncaf\xe9 au lait,food\n",
     r"d\.csv line 3: not valid UTF-8 \(byte 0xe9 at byte offset {offset} of the file\)"),
    ("csv empty", "d.csv", "", r"d\.csv is empty: no rows"),
    ("csv header only", "d.csv", "text,label\n", r"d\.csv has a header \(line 1\) but no rows"),
    ("csv one label", "d.csv", "text,label\nthe cat sat,animal\nthe dog barked,animal\n",
     r"d\.csv: all 2 rows have the label 'animal'"),
    ("unknown suffix", "d.txt", "the cat sat\tanimal\n",
     r"data\.dataset '.*d\.txt': expected a \.jsonl or \.csv file\. Got a \.txt file instead\. Fix:"),
]


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _pattern(content, pattern):
    offset = content.find(b"\xe9") if isinstance(content, bytes) else -1
    return pattern.replace("{offset}", str(offset))


@pytest.mark.parametrize("case, name, content, pattern", CASES, ids=[c[0] for c in CASES])
def test_malformed_file_names_file_line_and_fix(case, name, content, pattern, tmp_path):
    path = _write(tmp_path, name, content)
    pattern = _pattern(content, pattern)
    with pytest.raises(DataFileError, match=pattern):
        load_table(path)
    with pytest.raises(ValueError, match=pattern):  # also through the spec, as a run loads it
        load_dataset(DataSpec(dataset=str(path)))
    errors = check_data_file(path)
    assert errors, case
    assert any(re.search(pattern, e) for e in errors), errors


def test_utf8_offset_is_the_offending_byte(tmp_path):
    content = _jsonl(GOOD_A, GOOD_B).encode() + BAD_BYTES
    path = _write(tmp_path, "d.jsonl", content)
    with pytest.raises(DataFileError) as info:
        load_table(path)
    offset = int(str(info.value).split("at byte offset ")[1].split()[0])
    assert content[offset] == 0xE9 and content[:offset].count(b"\n") + 1 == 3


def test_missing_column_is_also_a_key_error(tmp_path):
    path = _write(tmp_path, "d.csv", "text,y\nthe cat sat,animal\n")
    with pytest.raises(KeyError) as info:
        load_table(path)
    assert isinstance(info.value, DataColumnError)
    assert str(info.value).startswith(str(path))  # the message itself, not KeyError's quoted repr


def test_byte_order_mark_and_crlf_are_accepted(tmp_path):
    rows = [GOOD_A, GOOD_B]
    jsonl = _write(tmp_path, "d.jsonl", b"\xef\xbb\xbf" + _jsonl(*rows).replace("\n", "\r\n").encode())
    csv = _write(tmp_path, "d.csv", b"\xef\xbb\xbftext,label\r\n" + b"".join(
        f'"{r["text"]}",{r["label"]}\r\n'.encode() for r in rows))
    for path in (jsonl, csv):
        ds = load_table(path)
        assert ds.texts == (GOOD_A["text"], GOOD_B["text"]) and ds.label_names == ("animal", "finance")
        assert check_data_file(path) == []


def test_numeric_labels_become_label_words(tmp_path):
    path = _write(tmp_path, "d.jsonl", _jsonl({"text": "good film", "label": 1}, {"text": "bad film", "label": 0}))
    assert load_table(path).label_names == ("0", "1")


def test_check_data_file_lists_every_bad_row(tmp_path):
    path = _write(tmp_path, "d.jsonl", _jsonl(GOOD_A, "{oops", GOOD_B, {"text": None, "label": "x"}, "[1]"))
    errors = check_data_file(path)
    assert [e.split(":")[0].rsplit(" ", 2)[-2:] for e in errors] == [["line", "2"], ["line", "4"], ["line", "5"]]
    assert check_data_file(path, max_errors=2)[-1] == f"{path}: 1 more malformed rows."
    nope = str(tmp_path / "nope.jsonl")
    assert check_data_file(nope) == [f"data.dataset {nope!r} is not an existing file."]


def test_check_data_follows_the_spec(tmp_path):
    good = _write(tmp_path, "d.jsonl", _jsonl({"sentence": "the cat sat on the mat", "y": "animal"},
                                              {"sentence": "stock prices fell sharply", "y": "finance"},
                                              {"sentence": "ok", "y": "finance"}))
    assert check_data(DataSpec(dataset=str(good), text_column="sentence", label_column="y")) == []
    missing = check_data(DataSpec(dataset=str(good)))  # every row lacks the default columns
    assert len(missing) == 3 and "d.jsonl line 1: no column 'text'" in missing[0]
    # the length filter leaves a label without examples: reported as a run would fail
    [starved] = check_data(DataSpec(dataset=str(good), text_column="sentence", label_column="y", max_chars=22))
    assert "labels ['finance'] have no example left after filtering to 20..22 characters" in starved
    [absent] = check_data(DataSpec(dataset=str(tmp_path / "nope.jsonl")))
    assert "neither 'fortunes' nor an existing file" in absent
    assert check_data(DataSpec()) == []  # the fortune task
    (tmp_path / "hf").mkdir()
    assert check_data(DataSpec(dataset=str(tmp_path / "hf"))) == []  # a datasets folder: read at run time


def test_check_data_is_torch_free(tmp_path):
    path = _write(tmp_path, "d.csv", "text,label\nthe cat sat on the mat,animal\n")
    code = (f"import sys; from fl.lm.data import check_data; from fl.lm.specs import DataSpec; "
            f"print(check_data(DataSpec(dataset={str(path)!r}))); "
            f"print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    errors, heavy = out.stdout.strip().splitlines()
    assert "d.csv: all 1 rows have the label 'animal'" in errors and heavy == "[]"


# --- the fortune files and datasets folders ------------------------------------------------------


def _fortune_copy(tmp_path):
    folder = tmp_path / "fortune"
    folder.mkdir()
    for name in FORTUNE_LABELS:
        shutil.copy(fortune_dir() / name, folder / name)
    return folder


def test_fortune_file_not_utf8_names_line_and_byte(tmp_path):
    folder = _fortune_copy(tmp_path)
    content = b"Yow!  Am I having fun yet?\n%\nAre we THERE yet? caf\xe9\n%\n"
    (folder / "zippy").write_bytes(content)
    offset = content.index(b"\xe9")  # 50
    with pytest.raises(DataFileError, match=rf"zippy line 3: not valid UTF-8 \(byte 0xe9 at byte offset {offset} of"):
        load_fortunes(directory=folder)


def test_empty_fortune_file_is_named(tmp_path):
    folder = _fortune_copy(tmp_path)
    (folder / "startrek").write_text("%% only a comment\n%\n")
    with pytest.raises(DataFileError, match=r"startrek: no fortune entries .*Fix: reinstall"):
        load_fortunes(directory=folder)


@pytest.mark.parametrize("texts, labels, pattern", [
    (["the cat sat on the mat", None], ["animal", "finance"], r"split 'train' row 1: 'text' is null"),
    (["the cat sat on the mat", "stock prices"], ["animal", None], r"split 'train' row 1: 'label' is null"),
    (["the cat sat on the mat", "stock prices"], ["animal", "animal"],
     r"split 'train': all 2 rows have the label 'animal'"),
], ids=["null text", "null label", "one label"])
def test_hf_dataset_rows_are_checked(texts, labels, pattern, tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": texts, "label": labels},
                                    features=datasets.Features({"text": datasets.Value("string"),
                                                                "label": datasets.Value("string")}))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DataFileError, match=pattern):
        load_hf(tmp_path / "hf")


def test_hf_dataset_missing_column_is_named(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["a", "b"], "y": ["p", "q"]}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DataColumnError,
                       match=r"hf has no column 'label' \(columns: \['text', 'y'\]\).*data\.label_column"):
        load_hf(tmp_path / "hf")
