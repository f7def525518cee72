"""Child processes with hard budgets: own process group, SIGTERM at the deadline, then SIGKILL.

Budgets are enforced from outside the recipe, so nothing the recipe does (sleeping, forking,
ignoring SIGTERM) lets it run past `timeout + grace`. This is not a sandbox: the child runs as the
same user with the same filesystem and network.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Finished:
    """How a child ended: exit code (negative = killed by that signal), whether we killed it."""

    exit_code: int
    timed_out: bool
    seconds: float


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for harness children: this interpreter first on PATH, quiet MLflow."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    env.update(extra or {})
    return env


def start(argv: list[str], cwd: Path, env: dict[str, str], stdout: Path,
          stderr: Path) -> subprocess.Popen:
    """Start `argv` as the leader of a new session, output captured to files."""
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait(proc: subprocess.Popen, timeout: float | None, started: float,
         grace: float = GRACE_SECONDS) -> Finished:
    """Wait for `proc` up to `timeout` seconds after `started`, then kill its process group."""
    remaining = None if timeout is None else max(0.0, started + timeout - time.monotonic())
    try:
        code = proc.wait(timeout=remaining)
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, grace)
        code = proc.wait()
        timed_out = True
    seconds = time.monotonic() - started
    # Reap stragglers the child left in its group even when it exited on time.
    kill_group(proc.pid, 0.0)
    return Finished(code, timed_out, seconds)


def kill_group(pgid: int, grace: float) -> None:
    """SIGTERM the process group, give it `grace` seconds, then SIGKILL whatever is left."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


def run(argv: list[str], cwd: Path, timeout: float | None, stdout: Path, stderr: Path,
        env: dict[str, str] | None = None) -> Finished:
    """Run `argv` to completion or to its budget."""
    started = time.monotonic()
    proc = start(argv, cwd, env or child_env(), stdout, stderr)
    return wait(proc, timeout, started)


def reap_orphan(pgid: int, run_id: str) -> bool:
    """Kill a dead loop's leftover trial process group, if the process still belongs to `run_id`
    (its environment names the run: a recycled pid is left alone). Linux only; True if killed."""
    try:
        environ = Path(f"/proc/{pgid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    if f"MLFLOW_RUN_ID={run_id}".encode() not in environ:
        return False
    kill_group(pgid, GRACE_SECONDS)
    return True


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


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
