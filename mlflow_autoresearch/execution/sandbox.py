"""The sandbox: turns a command that runs recipe code into the command to run.

Every process that executes recipe code starts through one launcher (`_launch.py`): each seed's
training process (`projects.run_seeds`) and every evaluator child that imports the recipe to score
what it saved (the evaluator reads `AUTORESEARCH_SANDBOX`, see evaluators/README.md).
`Sandbox.wrap` gives the argv: the launcher, run by path (standard library only, `-I -S`), puts
itself under the limits and then executes the command, inside bubblewrap where the sandbox is
`bwrap`:

- read-only: the system (`/usr`, `/etc`), the Python installation, the environment's
  `python_path`, and the paths the caller names (the workspace, the public data);
- writable: only the paths the caller names (the seed's output folder) and a private `/tmp`;
- nothing else exists inside: no private data, evaluators, repository, store, other trials,
  logs or `$HOME`; no network; its own PID namespace, killed with the harness; no capabilities.

Limits apply with or without bubblewrap (`_launch.py` says how). The namespace work is
bubblewrap's: none is written here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..environment import Environment
from . import _launch

LAUNCHER = Path(__file__).resolve().with_name("_launch.py")
ENV_VAR = "AUTORESEARCH_SANDBOX"  # the launcher and policy, for evaluators that start recipe code
BWRAP = "bwrap"
NONE = "none"


@dataclass(frozen=True)
class Limits:
    """Per-process limits (`limits:` in a profile); the defaults fit a 2-core, 24 GB machine."""

    memory_mb: int = 8192   # resident memory (cgroup) or address space (rlimit) of the command
    processes: int = 1024   # tasks (threads count) in the command's cgroup
    file_mb: int = 1024     # the largest file it may write; also the size of its private /tmp


@dataclass(frozen=True)
class Sandbox:
    """How recipe code runs: `kind` is `bwrap` or `none`; `system` the read-only paths every
    sandboxed command sees besides the system (the Python installation, `python_path`)."""

    kind: str
    limits: Limits = field(default_factory=Limits)
    system: tuple[str, ...] = ()

    def wrap(self, argv: list[str], read: tuple[str, ...] = (), write: tuple[str, ...] = (),
             cwd: str | None = None, group: str | None = None) -> list[str]:
        """The argv that runs `argv` in this sandbox, seeing `read` read-only and `write`;
        `group` names its cgroup, for `group_cpu_seconds` and `remove_group` after it ends."""
        policy = self.policy()
        policy.update(read=[*policy["read"], *map(str, read)], write=list(map(str, write)),
                      cwd=cwd, group=group)
        return [*launcher_argv(), json.dumps(policy), "--", *argv]

    def policy(self) -> dict:
        """The launcher's policy before the caller's own paths (evaluators/README.md)."""
        return {"kind": self.kind, "limits": asdict(self.limits), "read": list(self.system),
                "write": [], "cwd": None}

    def child_env(self) -> dict[str, str]:
        """`AUTORESEARCH_SANDBOX` for an evaluator: the launcher argv and the base policy."""
        return {ENV_VAR: json.dumps({"launcher": launcher_argv(), "policy": self.policy()})}


def new_group() -> str:
    """A cgroup name no other launch uses."""
    return f"h{os.getpid()}-{time.time_ns()}"


def group_cpu_seconds(group: str) -> float | None:
    """CPU seconds of everything that ran in the launch's cgroup (None: no cgroup was made)."""
    return _launch.cpu_seconds(group)


def remove_group(group: str) -> None:
    _launch.remove(group)


def choose(mode: str) -> tuple[str, str]:
    """The sandbox kind for `--sandbox MODE` (auto, bwrap, off), and why bubblewrap cannot be
    used where it was asked for or `auto` falls back to none ("" otherwise)."""
    if mode == "off":
        return NONE, ""
    problem = bwrap_works()
    return (NONE, problem) if problem else (BWRAP, "")


def for_environment(kind: str, env: Environment) -> Sandbox:
    """The sandbox for one environment's profile: its `limits`, and its `python_path` readable."""
    return Sandbox(kind, Limits(**env.limits),
                   python_paths() + tuple(str(p) for p in env.python_path))


def launcher_argv() -> list[str]:
    return [sys.executable, "-I", "-S", str(LAUNCHER)]


def python_paths() -> tuple[str, ...]:
    """The Python installation the harness runs: a virtual environment, its base, and every
    package folder on its path (a `.pth` may add one from elsewhere). Source folders an
    editable install puts on the path (a repository) are not among them."""
    found = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    found |= {os.path.realpath(p) for p in sys.path
              if os.path.basename(p) in ("site-packages", "dist-packages") and os.path.isdir(p)}
    return tuple(p for p in sorted(found)
                 if not any(Path(p).is_relative_to(q) and p != q for q in found))


def bwrap_works() -> str:
    """"" when bubblewrap runs a command here exactly as trials will run (every flag the
    launcher passes: an old bwrap lacks some), else why not (one line)."""
    if shutil.which(BWRAP) is None:
        return "no `bwrap` on PATH (Debian/Ubuntu: apt-get install bubblewrap)"
    try:
        probe = subprocess.run(Sandbox(BWRAP, system=python_paths()).wrap(["true"]),
                               capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`bwrap` did not run `true` within 30 s"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"`bwrap` cannot make the sandbox here: {last}"
    return ""
