"""The dependency direction channel <- sim -> fl, checked in fresh interpreters."""

import subprocess
import sys

import pytest

CHECK = """
import sys, importlib, pkgutil
pkg = importlib.import_module({pkg!r})
for m in pkgutil.walk_packages(pkg.__path__, prefix={pkg!r} + "."):
    importlib.import_module(m.name)
bad = sorted(n for n in sys.modules if n.split(".")[0] in {forbidden!r})
print(",".join(bad))
"""


@pytest.mark.parametrize(
    "pkg, forbidden",
    [
        ("channel", ["simpy", "torch", "sim", "fl", "transformers", "peft"]),
        ("fl", ["simpy", "channel", "sim"]),
    ],
)
def test_layering(pkg, forbidden):
    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(pkg=pkg, forbidden=forbidden)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{pkg} imports {out.stdout.strip()}"


def test_fl_contract_is_torch_free():
    """The contract and the registry must not drag torch in (the surrogate runs without it)."""
    code = "import sys, fl.core.actions, fl.core.algorithm; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
