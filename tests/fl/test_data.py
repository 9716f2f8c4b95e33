import json

import numpy as np
import pytest
import torch

from fl.lm.data import (
    FORTUNE_LABELS, Dataset, collate, encode_task, fortune_dir, load_dataset, load_fortunes, load_hf, load_table,
    parse_fortune_file,
)
from fl.lm.specs import DataSpec


def _raw_entries(path):
    """An independent reader (no filtering) for the oracle."""
    text = path.read_text(encoding="utf-8", errors="replace")
    out = []
    for chunk in text.split("\n%\n"):
        lines = [l for l in chunk.splitlines() if not l.startswith("%%") and l.strip() != "%"]
        out.append(" ".join(" ".join(lines).split()))
    return {e for e in out if e}


def test_fortunes_never_come_from_offensive_files(fortunes):
    assert not any(name.endswith("-o") for name in FORTUNE_LABELS)
    offensive = sorted(fortune_dir().glob("*-o"))
    assert offensive, "the offensive files are installed, so this test means something"
    clean = set().union(*(_raw_entries(fortune_dir() / f) for f in FORTUNE_LABELS))
    full = load_fortunes(max_per_class=None)
    ours = {" ".join(t.split()) for t in full.texts}
    for path in offensive:
        with pytest.raises(ValueError, match="offensive"):
            parse_fortune_file(path)
        leaked = (ours & _raw_entries(path)) - clean
        assert not leaked, f"{len(leaked)} entries of {path.name} leaked"


def test_fortune_labels_are_complete_and_non_empty(fortunes):
    assert fortunes.label_names == ("general", "limerick", "murphy", "startrek", "zippy", "unix")
    counts = fortunes.counts()
    assert all(n > 0 for n in counts.values()), counts
    assert all(t.strip() for t in fortunes.texts)
    assert len(set(fortunes.texts)) == len(fortunes)  # deduplicated
    assert all(20 <= len(t) <= 200 for t in fortunes.texts)
    assert max(counts.values()) <= 40  # the fixture caps every class at 40


def test_fortunes_are_stable_and_capped():
    a, b = load_fortunes(max_per_class=100), load_fortunes(max_per_class=100)
    assert a.texts == b.texts and np.array_equal(a.labels, b.labels)
    assert a.counts()["general"] == 100
    assert np.all(np.diff(a.labels) >= 0)  # ordered by label
    assert load_fortunes(max_per_class=None).counts()["general"] > 5000


def test_label_words_have_distinct_first_tokens(tokenizer, fortunes):
    firsts = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in fortunes.label_names]
    assert len(set(firsts)) == len(firsts)


def test_parse_fortune_file_format(tmp_path):
    f = tmp_path / "mine"
    f.write_text("%% a comment\n%\nfirst\n\tline two\n%\n%\n  second  entry \n%\n")
    assert parse_fortune_file(f) == ["first\nline two", "second entry"]


def test_parse_fortune_file_is_cached_per_file_version(tmp_path):
    f = tmp_path / "mine"
    f.write_text("one\n%\ntwo\n")
    a = parse_fortune_file(f)
    a.append("caller's own list")  # callers get a fresh list, never the cached tuple
    assert parse_fortune_file(f) == ["one", "two"]
    f.write_text("one\n%\ntwo\n%\nthree, a new entry\n")  # new size -> parsed again
    assert parse_fortune_file(f) == ["one", "two", "three, a new entry"]


def _rows():
    return [
        {"sentence": "the cat sat on the mat", "y": "animal"},
        {"sentence": "stock prices fell sharply", "y": "finance"},
        {"sentence": "the dog barked all night", "y": "animal"},
        {"sentence": "the dog barked all night", "y": "animal"},  # duplicate
        {"sentence": "ambiguous line here", "y": "animal"},
        {"sentence": "ambiguous line here", "y": "finance"},  # conflicting label: dropped
    ]


def _check_table(ds):
    assert ds.label_names == ("animal", "finance")
    assert sorted(zip(ds.texts, ds.labels.tolist())) == [
        ("stock prices fell sharply", 1), ("the cat sat on the mat", 0), ("the dog barked all night", 0)]


def test_local_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _rows()) + "\n")
    _check_table(load_dataset(DataSpec(dataset=str(path), text_column="sentence", label_column="y", min_chars=5)))


def test_local_csv(tmp_path):
    import csv

    path = tmp_path / "d.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["sentence", "y"])
        w.writeheader()
        w.writerows(_rows())
    _check_table(load_dataset(DataSpec(dataset=str(path), text_column="sentence", label_column="y", min_chars=5)))


def test_local_table_missing_column_names_it(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "x", "label": "a"}) + "\n")
    with pytest.raises(KeyError, match="no column 'sentence'.*data.text_column"):
        load_table(path, text_column="sentence")


def test_hf_dataset_save_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = _rows()
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "y": datasets.ClassLabel(names=["animal", "finance"])})
    ds = datasets.Dataset.from_dict(
        {"sentence": [r["sentence"] for r in rows], "y": [0 if r["y"] == "animal" else 1 for r in rows]},
        features=features)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "hf"))
    _check_table(load_dataset(DataSpec(dataset=str(tmp_path / "hf"), text_column="sentence", label_column="y",
                                       min_chars=5)))


def test_hf_dataset_local_data_files(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in _rows()) + "\n")
    ds = load_hf(folder, text_column="sentence", label_column="y")
    assert len(ds) == 6 and ds.label_names == ("animal", "finance")
    with pytest.raises(KeyError, match="data.split 'test'"):
        load_hf(folder, text_column="sentence", label_column="y", split="test")


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="data.dataset 'nope.jsonl' is neither 'fortunes'"):
        load_dataset(DataSpec(dataset="nope.jsonl"))


# --- tokenisation -----------------------------------------------------------------------------


def test_prompt_uses_chat_template_and_answer_is_label_word(task, tokenizer, fortunes):
    i = int(np.argmin([len(t) for t in fortunes.texts]))  # short: not cut to max_len
    text = tokenizer.decode(task.prompts[i])
    assert text.startswith("<|im_start|>")
    assert "Which fortune collection is this quote from? Options: general, limerick" in text
    assert f"Quote: {fortunes.texts[i]}<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert [tokenizer.decode(a) for a in task.answers] == [w + "<|im_end|>" for w in fortunes.label_names]


@pytest.mark.parametrize("side", ["left", "right"])
def test_loss_only_on_answer_tokens(task, side):
    idx = [0, 45, 90, 200]
    b = collate(task, idx, padding_side=side)
    B, T = b.input_ids.shape
    assert T == max(len(task.prompts[i]) + len(task.answers[task.labels[i]]) for i in idx)
    for row, i in enumerate(idx):
        answer = list(task.answers[task.labels[i]])
        marked = (b.labels[row] != -100).nonzero().flatten()
        assert b.labels[row, marked].tolist() == answer  # exactly the answer tokens
        assert (b.input_ids[row, marked] == b.labels[row, marked]).all()
        # the positions that predict them are the ones before
        n = len(answer)
        assert b.target_pos[row, :n].tolist() == (marked - 1).tolist()
        assert b.target_ids[row, :n].tolist() == answer and not b.target_mask[row, n:].any()
        real = b.attention_mask[row].nonzero().flatten()
        assert (real[-1] == T - 1) if side == "left" else (real[0] == 0)


def test_left_and_right_padding_give_the_same_loss(task, tiny_lora):
    from fl.lm.train import answer_loss

    with torch.no_grad():
        for p in tiny_lora.parameters():
            if p.requires_grad:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(0))
        idx = [3, 50, 120, 222]
        left = answer_loss(tiny_lora, collate(task, idx, "left"))
        right = answer_loss(tiny_lora, collate(task, idx, "right"))
        padded = answer_loss(tiny_lora, collate(task, idx, "left", pad_to=96))
        single = torch.stack([answer_loss(tiny_lora, collate(task, [i])) for i in idx])
    assert torch.allclose(left, right, atol=1e-5) and torch.allclose(left, padded, atol=1e-5)
    n_tok = torch.tensor([len(task.answers[task.labels[i]]) for i in idx], dtype=torch.float32)
    assert torch.allclose(left, (single * n_tok).sum() / n_tok.sum(), atol=1e-5)


def test_long_texts_are_cut_to_max_len(tokenizer):
    ds = Dataset(("word " * 400, "short text here"), np.array([0, 1]), ("alpha", "beta"), "Which? {options}")
    enc = encode_task(ds, tokenizer, max_len=64)
    assert all(len(p) + len(enc.answers[l]) <= 64 for p, l in zip(enc.prompts, enc.labels))
    assert tokenizer.decode(enc.prompts[0]).endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="raise data.max_len"):
        encode_task(ds, tokenizer, max_len=40)


def test_scarce_labels_names_the_label_and_the_fix():
    from fl.lm.algorithm import scarce_labels

    labels = np.array([0] * 50 + [1] * 12)
    train = np.concatenate([np.arange(0, 40), np.arange(50, 55)])  # label 1: 5 training examples
    test = np.concatenate([np.arange(40, 50), np.arange(55, 62)])  # label 1: 7 in the test
    spec = DataSpec(max_chars=140, n_test=17)
    [msg] = scarce_labels(labels, train, test, ("common", "rare"), spec)
    assert "'rare' keeps 5 training examples" in msg and "takes 7" in msg
    assert "data.max_chars" in msg and "20..140" in msg and "data.n_test (now 17)" in msg
    assert scarce_labels(labels, np.arange(0, 60), test, ("common", "rare"), spec) == []


def test_no_shipped_scenario_starves_a_label():
    """Every scenario's data leaves each label more training than test examples (a 140-char
    cap once left 17 limericks for 8 clients and 20 in the test: accuracy at chance)."""
    from pathlib import Path

    from fl.lm.data import load_dataset
    from fl.lm.algorithm import scarce_labels
    from fl.lm.partition import holdout_split
    from fl.core.seeding import numpy_stream
    from sim.scenario import load_scenario

    root = Path(__file__).resolve().parents[2] / "scenarios"
    checked = 0
    for path in sorted(root.glob("*.yaml")):
        scn = load_scenario(path)
        options = scn.fl.options  # the algorithm's validated config
        data = getattr(options, "data", None)
        if data is None or data.dataset != "fortunes":
            continue
        ds = load_dataset(data)
        root_seed = options.data_seed if options.data_seed is not None else scn.seed
        train, _, test = holdout_split(ds.labels, data.n_test, data.n_public, numpy_stream(root_seed, "holdout"))
        assert scarce_labels(ds.labels, train, test, ds.label_names, data) == [], path.name
        checked += 1
    assert checked >= 4
