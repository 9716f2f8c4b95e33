"""bench/frameworks.py --quick end to end (tiny random model, all four learners): the line per
learner and the last line in their exact formats, consistent with compare.csv; --resume keeps
the finished variants. About a minute on two idle cores (slow)."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ACC = r"(\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\]"
LINE = re.compile(rf"^(fedavg_lora|kd_topk|split_lora|fedsoda): final accuracy {ACC} vs untrained {ACC}: "
                  r"(learns|does not learn)$")
LAST = re.compile(r"^learners above the untrained model: (\d)/4 in (\d+\.\d) min of wall time$")


def _bench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "bench" / "frameworks.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=1500, env=env)


@pytest.mark.slow
def test_frameworks_quick_prints_one_line_per_learner_and_the_count(tmp_path):
    out = tmp_path / "fw"
    r = _bench("--quick", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    m = LAST.match(lines[-1])
    assert m, lines[-1]
    per = [LINE.match(ln) for ln in lines if LINE.match(ln)]
    assert [p.group(1) for p in per] == ["fedavg_lora", "kd_topk", "split_lora", "fedsoda"]
    rows = {row["algorithm"]: row for row in csv.DictReader((out / "compare.csv").open())}
    n_learn = 0
    for p in per:
        a, lo, hi, u, u_lo, u_hi = (float(p.group(i)) for i in range(2, 8))
        row = rows[p.group(1)]
        assert row["status"] == "ok"
        assert (a, lo, hi) == tuple(round(float(row[k]), 3) for k in
                                    ("final_accuracy", "final_accuracy_lo", "final_accuracy_hi"))
        assert lo <= a <= hi and u_lo <= u <= u_hi
        assert (p.group(8) == "learns") == (lo > u_hi)
        n_learn += p.group(8) == "learns"
    assert int(m.group(1)) == n_learn
    # the table carries every measure the comparison paper compares
    head = next(ln for ln in lines if ln.startswith("algorithm "))
    for col in ("accuracy [95 % Wilson]", "Mbit up/round", "Mbit down/round", "client GFLOP/round",
                "latency s/round"):
        assert col in head
    assert (out / "latency_accuracy.png").is_file() and (out / "compare_pairs.csv").is_file()
    assert "test split:" in r.stdout

    again = _bench("--quick", "--out", str(out), "--resume")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stderr.count("kept (finished before)") == 4
    assert [ln for ln in again.stdout.splitlines() if LINE.match(ln)] == [p.group(0) for p in per]
    assert LAST.match(again.stdout.strip().splitlines()[-1])
