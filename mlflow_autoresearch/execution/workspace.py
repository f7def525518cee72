"""Trial workspaces: the parent's recipe laid over a fresh copy of the environment, and the logs
a trial leaves in its scratch folder.

A workspace is a copy of the environment folder (MLproject and protected files from disk, owned by
the harness) with the parent trial's editable files laid over it. Pure file work: no MLflow, no
processes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from ..environment import Environment

_IGNORED = ("__pycache__", "*.pyc", ".autoresearch", "mlruns", "mlflow.db")
IGNORE = shutil.ignore_patterns(*_IGNORED)
LOG_TAIL_BYTES = 64_000


def materialise(env: Environment, parent_files: dict[str, str] | None, dest: Path) -> Path:
    """Copy the environment to `dest` and overlay the parent's editable files (None = as on disk).

    Raises:
        ValueError: the parent's recipe holds a file that is not editable.
    """
    shutil.copytree(env.root, dest, ignore=IGNORE)
    for rel, text in (parent_files or {}).items():
        if rel not in env.editable:
            raise ValueError(f"parent recipe holds {rel!r}, which is not an editable file")
        (dest / rel).write_text(text)
    return dest


def read_editable(env: Environment, root: Path) -> dict[str, str]:
    """The editable surface of a workspace (or of the environment itself), path -> text."""
    return {rel: (root / rel).read_text() for rel in env.editable}


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (the ignored caches aside), relative path -> a fingerprint.

    A symbolic link's fingerprint is its target, so swapping a file for a link shows.
    """
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not _ignored(d)]
        for name in files:
            if _ignored(name):
                continue
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def collect_logs(run_dir: Path) -> dict[str, str]:
    """The tail of every `.txt` log a trial's processes wrote under `run_dir`, outside the
    workspace, keyed by its path with folders joined by `__` (`seeds__0__stderr.txt`)."""
    logs = {}
    if not run_dir.is_dir():
        return logs
    for path in sorted(run_dir.rglob("*.txt")):
        rel = path.relative_to(run_dir)
        if rel.parts[0] == "workspace" or not path.is_file():
            continue
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            logs["__".join(rel.parts)] = handle.read().decode(errors="replace")
    return logs


def _ignored(name: str) -> bool:
    return any(Path(name).match(pattern) for pattern in _IGNORED)
