"""Workers die with their parent, whatever kills it (sim.execution.die_with_parent, LocalRay).

Each test starts a parent process (the executor class, or the ``fedwave`` CLI), waits until
its workers are busy, records every descendant of the parent (pid and start time, from
/proc), kills the parent with SIGKILL and asserts that none of them runs 10 s later. The
test kills, at the end, only what it recorded (or started), so a failure leaves no orphan.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc to find the workers (Linux)")

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("fedwave")  # the installed CLI, as a user runs it
FEDWAVE = ([str(_SCRIPT)] if _SCRIPT.is_file()
           else [sys.executable, "-c", "import sys; from sim.cli import main; sys.exit(main())"])
SURROGATE = str(ROOT / "scenarios" / "surrogate_quickstart.yaml")
GONE_WITHIN_S = 10.0

# A job for the executors, importable by name in every worker: it says it started (a file
# named by its pid) and then sleeps far longer than any test.
JOB = '''
import os, time
from pathlib import Path

def touch_and_sleep(replica, where):
    Path(where, str(os.getpid())).touch()
    time.sleep(300)
'''

# The parent: an executor of two workers, each running the job.
EXECUTOR_PARENT = '''
import sys, time
from sim.execution import {executor}
from orphan_job import touch_and_sleep

if __name__ == "__main__":
    ex = {executor}(dict, 2, 1, 1)
    pending = [ex.submit(touch_and_sleep, sys.argv[1]) for _ in range(2)]
    time.sleep(300)
'''


# ----------------------------------------------------------------------------- /proc
def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of process ``pid``, or None when there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _descendants(pid: int) -> dict[int, int]:
    """pid -> start time of every descendant of ``pid``."""
    out: dict[int, int] = {}
    todo = [pid]
    while todo:
        for child in _children(todo.pop()):
            st = _stat(child)
            if st is not None and child not in out:
                out[child] = st[2]
                todo.append(child)
    return out


def _running(procs: dict[int, int]) -> dict[int, int]:
    """Those of ``procs`` (pid -> start time) still running: same start time, not a zombie."""
    out = {}
    for pid, t0 in procs.items():
        st = _stat(pid)
        if st is not None and st[2] == t0 and st[0] != "Z":
            out[pid] = t0
    return out


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:100]
    return "?"


def _wait_until(done: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if done():
            return True
        time.sleep(poll_s)
    return done()


# ----------------------------------------------------------------------------- harness
class Parent:
    """The parent process under test, its recorded descendants, and the clean-up."""

    def __init__(self, args: list[str], tmp_path: Path) -> None:
        (tmp_path / "orphan_job.py").write_text(textwrap.dedent(JOB))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT), str(tmp_path)] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
        self.log = tmp_path / "parent.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        self.recorded: dict[int, int] = {}  # pid -> start time
        self.names: dict[int, str] = {}  # pid -> command line, when recorded

    def wait_busy(self, ready: Callable[[], bool], timeout_s: float) -> None:
        """Wait until ``ready()``; the parent dying or the time running out fails the test."""
        ok = _wait_until(lambda: ready() or self.proc.poll() is not None, timeout_s)
        if self.proc.poll() is not None or not ok:
            pytest.fail(f"the parent did not get its workers busy within {timeout_s} s "
                        f"(exit code {self.proc.poll()}); its output:\n{self.log.read_text()}")

    def kill_and_watch(self) -> dict[int, int]:
        """Record the descendants, SIGKILL the parent; those still running 10 s later."""
        self.recorded = _descendants(self.proc.pid)
        self.names = {pid: _cmdline(pid) for pid in self.recorded}
        assert self.recorded, "the parent has no child processes to watch"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        _wait_until(lambda: not _running(self.recorded), GONE_WITHIN_S, poll_s=0.2)
        return _running(self.recorded)

    def clean_up(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in _running(self.recorded):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def parent(tmp_path) -> Iterator[Callable[[list[str]], Parent]]:
    started: list[Parent] = []

    def start(args: list[str]) -> Parent:
        started.append(Parent(args, tmp_path))
        return started[-1]

    yield start
    for p in started:
        p.clean_up()


def _left_msg(left: dict[int, int]) -> str:
    return (f"still running {GONE_WITHIN_S} s after kill -9 of the parent: "
            + "; ".join(f"{pid}: {_cmdline(pid)}" for pid in sorted(left)))


def _files(path: Path) -> int:
    return len(list(path.iterdir())) if path.is_dir() else 0


def _executor_parent(parent, tmp_path: Path, executor: str, timeout_s: float) -> Parent:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(EXECUTOR_PARENT.format(executor=executor)))
    started = tmp_path / "started"
    started.mkdir()
    p = parent([sys.executable, str(script), str(started)])
    p.wait_busy(lambda: _files(started) == 2, timeout_s)  # both workers run a job
    return p


# ----------------------------------------------------------------------------- process pools
def test_process_executor_workers_die_with_a_killed_parent(parent, tmp_path):
    p = _executor_parent(parent, tmp_path, "ProcessExecutor", timeout_s=60)
    workers = {int(f.name) for f in (tmp_path / "started").iterdir()}
    assert workers <= set(_descendants(p.proc.pid))
    left = p.kill_and_watch()
    assert workers <= set(p.recorded)  # workers and the resource tracker were watched
    assert not left, _left_msg(left)


def test_sweep_process_workers_die_with_a_killed_parent(parent, tmp_path):
    out = tmp_path / "sweep"
    p = parent(FEDWAVE + ["sweep", SURROGATE, "--seeds", "0-3", "--set", "fl.rounds=400",
                          "--workers", "2", "--backend", "process", "--out", str(out), "--quiet"])
    # a variant's run directory appears once a worker (its initializer done) runs it
    p.wait_busy(lambda: sum(d.is_dir() for d in out.glob("seed=*")) >= 2, timeout_s=60)
    left = p.kill_and_watch()
    assert sum("spawn_main" in name for name in p.names.values()) == 2, p.names  # the workers
    assert not left, _left_msg(left)


# ----------------------------------------------------------------------------- the mechanism
def test_a_worker_whose_parent_already_died_exits_at_once():
    # the race die_with_parent guards against: the parent died (the worker was re-parented)
    # before the death signal was armed; here the "expected parent" is simply not the parent
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from sim.execution import "
            "die_with_parent; import os; die_with_parent(os.getppid() + 1); print('still here')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (1, "")


def test_the_polling_fallback_ends_an_orphan(parent, tmp_path):
    # the fallback for platforms without prctl, exercised on Linux: a grandchild watches its
    # parent with _watch_parent only (no death signal), then its parent is killed
    grandchild = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); import os; "
                  "from sim.execution import _watch_parent; _watch_parent(os.getppid(), 0.1); "
                  "open(sys.argv[1], 'w').close(); time.sleep(300)")
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f'''
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {grandchild!r}, sys.argv[1]])
        time.sleep(300)
    '''))
    armed = tmp_path / "armed"
    p = parent([sys.executable, str(script), str(armed)])
    p.wait_busy(armed.exists, timeout_s=60)
    left = p.kill_and_watch()
    assert len(p.recorded) == 1
    assert not left, _left_msg(left)


# ----------------------------------------------------------------------------- Ray
@pytest.mark.slow  # Ray's start-up: 10-30 s on 2 cores
def test_ray_executor_leaves_nothing_after_a_killed_parent(parent, tmp_path):
    pytest.importorskip("ray")
    p = _executor_parent(parent, tmp_path, "RayExecutor", timeout_s=120)
    actors = {int(f.name) for f in (tmp_path / "started").iterdir()}
    left = p.kill_and_watch()
    names = list(p.names.values())
    assert actors <= set(p.recorded)  # GCS, raylet, agents, actors, the reaper were watched
    assert any("raylet" in n for n in names) and any("Agent" in n for n in names), names
    assert not left, _left_msg(left)


@pytest.mark.slow  # Ray's start-up: 10-30 s on 2 cores
def test_sweep_on_ray_leaves_nothing_after_a_killed_parent(parent, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "sweep"
    p = parent(FEDWAVE + ["sweep", SURROGATE, "--seeds", "0-3", "--set", "fl.rounds=400",
                          "--workers", "2", "--backend", "ray", "--out", str(out), "--quiet"])
    p.wait_busy(lambda: sum(d.is_dir() for d in out.glob("seed=*")) >= 2, timeout_s=120)
    left = p.kill_and_watch()
    assert any("raylet" in name for name in p.names.values()), p.names
    assert not left, _left_msg(left)
