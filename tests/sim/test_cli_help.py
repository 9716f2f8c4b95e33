"""The CLI's help reads well: --version, flags shown as flags, the algorithm names listed."""

from __future__ import annotations

from importlib.metadata import version

from typer.testing import CliRunner

from fl.core.algorithm import algorithm_names
from sim.cli import app

COMMANDS = ("validate", "run", "sweep", "plot", "report", "compare", "calibrate")


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})


def test_version():
    r = _invoke("--version")
    assert r.exit_code == 0 and r.output.strip() == f"fedwave {version('fedwave')}"


def test_boolean_flags_take_no_value_in_the_help():
    for cmd in COMMANDS:
        r = _invoke(cmd, "--help")
        assert r.exit_code == 0, r.output
        flags = [l for l in r.output.splitlines() if "<bool>" in l and "--help" not in l]
        assert not flags, f"{cmd}: {flags}"


def test_compare_help_lists_the_algorithms():
    out = " ".join(_invoke("compare", "--help").output.split())
    assert all(name in out for name in algorithm_names())


def test_each_command_has_a_one_line_summary():
    r = _invoke("--help")
    for cmd in COMMANDS:
        line = next(l for l in r.output.splitlines() if f" {cmd} " in l)
        assert len(line.split(cmd, 1)[1].strip(" │")) > 10  # its summary, on its own line
