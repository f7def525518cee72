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
from .store import MlflowStore, default_uri

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


# Run inside the sandbox with argv [secret file, readable folder]; prints what it managed to do.
FORBIDDEN = """
import pathlib, socket, sys
attempts = {
    "read a file beside the data": lambda: pathlib.Path(sys.argv[1]).read_text(),
    "write the read-only data": lambda: pathlib.Path(sys.argv[2], "x").write_text("x"),
    "open a network connection": lambda: socket.create_connection(("1.1.1.1", 53), timeout=2),
}
for name, attempt in attempts.items():
    try:
        attempt()
        print(name)
    except OSError:
        pass
"""


def _inside(sandbox: Sandbox, argv: list[str], read: tuple[str, ...] = ()
            ) -> subprocess.CompletedProcess:
    """Run `argv` in `sandbox`; a launch that fails or hangs is a failed process, not a raise."""
    wrapped = sandbox.wrap(argv, read)
    try:
        return subprocess.run(wrapped, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(wrapped, 1, "", str(exc))


def _sandbox_view() -> Check:
    """A file next to a folder the sandbox may read must stay invisible; the folder read-only."""
    with tempfile.TemporaryDirectory() as tmp:
        secret, shown = Path(tmp) / "private.txt", Path(tmp) / "public"
        secret.write_text("secret")
        shown.mkdir()
        result = _inside(Sandbox(BWRAP, system=python_paths()),
                         [sys.executable, "-c", FORBIDDEN, str(secret), str(shown)], (str(shown),))
    leaks = result.stdout.strip().splitlines()
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
    result = _inside(Sandbox(NONE), ["cat", "/proc/self/cgroup"])
    if "autoresearch" in result.stdout:
        return Check("limits", OK, "memory and processes by cgroup, file size by rlimit")
    return Check("limits", WARN, "no cgroup could be made: memory by RLIMIT_AS (none on GPU "
                 "machines), file size by RLIMIT_FSIZE, processes unbounded (a fork bomb runs "
                 "until the budget)", "let the harness's user create cgroups (v1 memory and pids, "
                 "or v2 with both controllers delegated)")


def _gpus(kind: str) -> Check:
    outside = sorted(glob.glob("/dev/nvidia[0-9]*"))
    if not outside:
        return Check("GPUs", OK, "none on this machine (CPU profiles only)")
    if kind != BWRAP:
        return Check("GPUs", OK, f"{len(outside)} visible (no sandbox)")
    count = "import glob; print(len(glob.glob('/dev/nvidia[0-9]*')))"
    result = _inside(Sandbox(BWRAP, system=python_paths()), [sys.executable, "-c", count])
    seen = result.stdout.strip() if result.returncode == 0 else f"none ({result.stderr[-200:]})"
    status = OK if seen == str(len(outside)) else FAIL
    return Check("GPUs", status, f"{len(outside)} on the machine, {seen} inside the sandbox",
                 "" if status == OK else "check `bwrap --dev-bind /dev/nvidia0 /dev/nvidia0 ...` "
                 "by hand, or run with --sandbox off")


def _store(tracking_uri: str | None) -> Check:
    uri = default_uri(tracking_uri)
    path = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    if path is not None and not path.exists():  # doctor creates no store
        if os.access(path.parent, os.W_OK):
            return Check("tracking store", OK, f"{uri}: none yet; the first campaign creates it")
        return Check("tracking store", FAIL, f"{uri}: its folder is not writable",
                     "pass --tracking-uri with a writable place")
    try:
        store = MlflowStore(uri)
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
