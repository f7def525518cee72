"""Processes the harness starts: one process group each, bounded from outside, dying with us.

Every command (a seed's training run, the evaluator) runs under the guard (`_guard.py`) as the
leader of a new session and process group. The life of one:

1. `start` launches the guard; it waits for the word to go. The caller records the group
   (`Group.marker`) where a later loop can find it, off the budget clock.
2. `Child.go` starts the command and the clock. `Child.wait` waits up to the budget, then
   SIGTERMs the group, SIGKILLs it `grace` seconds later, and always reaps stragglers.
3. If anything goes wrong in between (an exception, Ctrl-C, SIGTERM turned into
   KeyboardInterrupt by the CLI), `run` kills the group before re-raising. If the harness itself
   dies (even by `kill -9`), the guard's parent-death signal kills the group (Linux).

Not a sandbox by itself: commands that run recipe code arrive here already wrapped by
`sandbox.Sandbox.wrap`, whose PID namespace also catches a process that leaves the group
(`setsid`); unwrapped (`--sandbox off`) such a process escapes these kills. Call `start` from a
thread that outlives the child: Linux sends the parent-death signal when the starting thread
exits.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GRACE_SECONDS = 5.0
SECRET = re.compile(r"API_?KEY|ACCESS_KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
GUARD = Path(__file__).resolve().with_name("_guard.py")
_pinned = threading.local()  # this thread's slot: variables every child it starts gets


@dataclass(frozen=True)
class Finished:
    """How a command ended: exit code (negative = killed by that signal), whether we killed it,
    wall seconds from `go` to exit, and the CPU seconds (user + system) of its whole process
    tree, as the kernel accounted them for every process that was reaped inside it."""

    exit_code: int
    timed_out: bool
    seconds: float
    cpu_seconds: float = 0.0


@dataclass(frozen=True)
class Group:
    """A process group the harness started: its id and its leader's start time in clock ticks,
    so a recycled id is never mistaken for it."""

    pgid: int
    start_ticks: int

    @property
    def marker(self) -> str:
        return f"{self.pgid}@{self.start_ticks}"

    @classmethod
    def from_marker(cls, marker: str) -> Group | None:
        pgid, _, ticks = marker.partition("@")
        return cls(int(pgid), int(ticks)) if pgid.isdigit() and ticks.isdigit() else None


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of harness children: this interpreter first on PATH, no MLflow variables
    at all (no tracking URI, run or experiment id: children write files, the harness logs), and
    no secrets (API keys, tokens, passwords), which a recipe could print into its logs."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLFLOW_") and not SECRET.search(k)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(getattr(_pinned, "env", {}))
    env.update(extra or {})
    return env


def pin_thread(cores: tuple[int, ...], variables: dict[str, str]) -> None:
    """Hold the calling thread, and so every process it starts from now on, to `cores`, and
    give those processes `variables` (a slot's `CUDA_VISIBLE_DEVICES`). Linux applies an
    affinity to the calling thread alone and a child inherits its starting thread's, so each
    concurrent trial, run from its own thread, keeps to its own cores."""
    os.sched_setaffinity(0, cores)
    _pinned.env = dict(variables)


class Child:
    """A started command waiting under its guard; see the module docstring."""

    def __init__(self, proc: subprocess.Popen, grace: float):
        self.proc = proc
        self.group = Group(proc.pid, _start_ticks(proc.pid))
        self.grace = grace
        self.started: float | None = None

    def go(self) -> None:
        """Let the command run; its budget counts from now."""
        self.started = time.monotonic()
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()

    def wait(self, timeout: float | None) -> Finished:
        """Wait up to `timeout` seconds from `go`; past it, kill the whole group."""
        assert self.started is not None, "unreachable: wait() before go()"
        remaining = None if timeout is None else max(0.0, self.started + timeout - time.monotonic())
        timed_out = not _exits_within(self.proc, remaining)
        if timed_out:
            kill_group(self.proc.pid, self.grace)
        code, cpu = _reap(self.proc)
        seconds = time.monotonic() - self.started
        kill_group(self.proc.pid, 0.0)  # stragglers the command left in its group
        return Finished(code, timed_out, seconds, cpu)

    def kill(self) -> None:
        """SIGKILL the group at once (the harness is failing or was interrupted)."""
        _signal_group(self.proc.pid, signal.SIGKILL)
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait()


def start(argv: list[str], cwd: Path, env: dict[str, str], stdout: Path, stderr: Path,
          grace: float = GRACE_SECONDS) -> Child:
    """Launch `argv` under a guard, in a new session, output to files; it waits for `go`."""
    guard = [sys.executable, "-I", "-S", str(GUARD), str(os.getpid()), "--", *argv]
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen(guard, cwd=cwd, env=env, stdout=out, stderr=err,
                                stdin=subprocess.PIPE, start_new_session=True)
    return Child(proc, grace)


def run(argv: list[str], cwd: Path, timeout: float | None, stdout: Path, stderr: Path,
        env: dict[str, str] | None = None, on_start: Callable[[Group], None] | None = None,
        grace: float = GRACE_SECONDS) -> Finished:
    """Run `argv` to completion or to its budget. `on_start(group)` runs before the command
    starts; whatever fails from there on (including `on_start`) kills the group first."""
    child = start(argv, cwd, env or child_env(), stdout, stderr, grace)
    return supervise(child, timeout, on_start)


def supervise(child: Child, timeout: float | None,
              on_start: Callable[[Group], None] | None = None) -> Finished:
    """Record, start and wait for a started child, killing it on any exception."""
    try:
        if on_start is not None:
            on_start(child.group)
        child.go()
        return child.wait(timeout)
    except BaseException:
        child.kill()
        raise


def reap(marker: str) -> bool:
    """Kill a group a dead loop recorded, if its leader is still the process that was recorded
    (same id, same start time). Linux only; True if something was killed."""
    group = Group.from_marker(marker)
    if group is None or _start_ticks(group.pgid) != group.start_ticks:
        return False
    kill_group(group.pgid, GRACE_SECONDS)
    return True


def kill_group(pgid: int, grace: float) -> None:
    """SIGTERM the process group, give it `grace` seconds, then SIGKILL whatever is left."""
    if not _signal_group(pgid, signal.SIGTERM if grace > 0 else signal.SIGKILL):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


def _exits_within(proc: subprocess.Popen, timeout: float | None) -> bool:
    """Block until `proc` exits (True) or `timeout` passes (False), waking at the exit itself.

    A pidfd (Linux 5.3+) wakes at once; `Popen.wait(timeout)` polls at intervals growing to
    50 ms, which put every measured time on 50 ms steps. Elsewhere, peek every millisecond
    (without reaping: `_reap` reads the resource usage then)."""
    if timeout is None:
        return True
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        deadline = time.monotonic() + timeout
        while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def _reap(proc: subprocess.Popen) -> tuple[int, float]:
    """Wait for `proc` and return its exit code and the CPU seconds of its process tree."""
    if proc.returncode is not None:  # reaped already (e.g. by a poll): no usage to read
        return proc.returncode, 0.0
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _start_ticks(pid: int) -> int:
    """A process's start time in clock ticks since boot (0 where /proc is unavailable)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def _group_alive(pgid: int) -> bool:
    """True while a member of the group is alive; zombies (dead, not yet reaped) do not count."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False
