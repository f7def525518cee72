"""`autoresearch doctor`: what works on this machine, one check per row, each failure with its fix.

Checks the sandbox for real (a command inside it tries a read it must not be able to make), the
limits, the GPUs a sandboxed recipe would see, the tracking store (a write that is undone) and
the prepared data of each shipped environment.
"""

from __future__ import annotations

import glob
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .environment import load_environment, shipped_environments
from .errors import AutoresearchError
from .execution.sandbox import BWRAP, NONE, Sandbox, choose, python_paths
from .store import MlflowStore

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn (campaigns run, with less protection), FAIL (a campaign cannot)
    detail: str
    fix: str = ""


def run_checks(tracking_uri: str | None, workdir: Path, mode: str) -> list[Check]:
    """Every check, in the order the table shows them."""
    kind, problem = choose(mode)
    found = [_bubblewrap(mode, problem)]
    if kind == BWRAP:
        found.append(_sandbox_view())
    found += [_limits(), _gpus(kind), _store(tracking_uri)]
    return found + [_data(name, workdir) for name in shipped_environments()]


def _bubblewrap(mode: str, problem: str) -> Check:
    if mode == "off":
        return Check("sandbox", WARN, "off (--sandbox off): recipes see the whole machine")
    if not problem:
        version = subprocess.run([BWRAP, "--version"], capture_output=True, text=True).stdout
        return Check("sandbox", OK, f"{version.strip()}; user, PID and network namespaces work")
    fix = "apt-get install bubblewrap (Debian/Ubuntu), or dnf install bubblewrap"
    return Check("sandbox", FAIL if mode == BWRAP else WARN,
                 f"{problem}; `auto` runs recipes unsandboxed", fix)


def _inside(sandbox: Sandbox, code: str, read: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    argv = sandbox.wrap([sys.executable, "-c", code], read)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _sandbox_view() -> Check:
    """A file next to a folder the sandbox may read must stay invisible; the folder read-only."""
    with tempfile.TemporaryDirectory() as tmp:
        secret, shown = Path(tmp) / "private.txt", Path(tmp) / "public"
        secret.write_text("secret")
        shown.mkdir()
        code = (f"import pathlib\ntry:\n    pathlib.Path({str(secret)!r}).read_text()\n"
                f"    print('READ')\nexcept OSError:\n    pass\ntry:\n"
                f"    pathlib.Path({str(shown)!r}, 'x').write_text('x')\n    print('WROTE')\n"
                f"except OSError:\n    pass\nimport socket\ntry:\n"
                f"    socket.create_connection(('1.1.1.1', 53), timeout=2)\n    print('NET')\n"
                f"except OSError:\n    pass\n")
        result = _inside(Sandbox(BWRAP, system=python_paths()), code, (str(shown),))
    leaks = result.stdout.split()
    if result.returncode != 0:
        return Check("sandbox view", FAIL, f"a command inside the sandbox failed: "
                     f"{result.stderr.strip()[-200:]}", "run `autoresearch doctor` as the user "
                     "who runs campaigns; check `bwrap --version`")
    if leaks:
        return Check("sandbox view", FAIL, f"inside the sandbox these succeeded: {leaks}",
                     "report this: the sandbox does not hold")
    return Check("sandbox view", OK, "inside: a file beside the data is invisible, the data is "
                 "read-only, no network")


def _limits() -> Check:
    result = _inside(Sandbox(NONE), "print(open('/proc/self/cgroup').read())")
    if "autoresearch" in result.stdout:
        return Check("limits", OK, "memory and processes by cgroup, file size by rlimit")
    detail = "memory and processes by rlimit (RLIMIT_AS, RLIMIT_NPROC), file size by rlimit"
    if os.getuid() == 0:
        return Check("limits", WARN, detail + "; RLIMIT_NPROC never binds root, so a fork bomb "
                     "is bounded only by the budget", "give the harness a writable cgroup "
                     "(cgroup v1 memory+pids, or v2 with both controllers delegated)")
    return Check("limits", OK, detail)


def _gpus(kind: str) -> Check:
    outside = sorted(glob.glob("/dev/nvidia[0-9]*"))
    if not outside:
        return Check("GPUs", OK, "none on this machine (CPU profiles only)")
    if kind != BWRAP:
        return Check("GPUs", OK, f"{len(outside)} visible (no sandbox)")
    seen = _inside(Sandbox(BWRAP, system=python_paths()),
                   "import glob; print(len(glob.glob('/dev/nvidia[0-9]*')))").stdout.strip()
    status = OK if seen == str(len(outside)) else FAIL
    return Check("GPUs", status, f"{len(outside)} on the machine, {seen or 0} inside the sandbox",
                 "" if status == OK else "check that /dev/nvidia* exist when the harness starts")


def _store(tracking_uri: str | None) -> Check:
    try:
        store = MlflowStore(tracking_uri)
        store.check_writable()
    except AutoresearchError as exc:
        return Check("tracking store", FAIL, str(exc), "start the server or fix --tracking-uri")
    return Check("tracking store", OK, f"{store.uri}: reachable, a test write went through")


def _data(name: str, workdir: Path) -> Check:
    env = load_environment(name)
    data_dir = workdir.resolve() / "data" / env.name / env.profile
    if (data_dir / "public" / "meta.json").is_file():
        return Check(f"data {name}/{env.profile}", OK, f"prepared in {data_dir}")
    command = shlex.join([sys.executable, str(env.evaluator), "prepare", "--profile",
                          env.profile, "--data-dir", str(data_dir)])
    return Check(f"data {name}/{env.profile}", WARN,
                 "not prepared yet (the first campaign prepares it)", command)
