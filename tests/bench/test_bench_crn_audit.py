"""bench/crn_audit.py at a small size: the audit runs, samples reads, and finds none that
differ from a pristine channel's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_crn_audit_small_run_finds_no_difference():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "crn_audit.py"), "--clients", "300",
                          "--rounds", "2", "--sample", "0.5"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"history-free audit: (\d+) reads checked, (\d+) differ", out.stdout)
    assert m, out.stdout
    assert int(m.group(1)) >= 20 and int(m.group(2)) == 0, out.stdout
