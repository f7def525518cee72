"""Trial workspaces: the parent's recipe plus one edit, checked before anything runs.

A workspace is a fresh copy of the environment folder (MLproject and protected files from disk,
owned by the harness) with the parent trial's editable files laid over it, then the proposal's
diff applied. Every refusal here becomes a `preflight_crash` trial with the reason as its excerpt.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import unidiff

from .environment import Environment

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".autoresearch", "mlruns", "mlflow.db")


class PreflightError(Exception):
    """The edit cannot run; the message is the one-line reason recorded on the trial."""


def materialise(env: Environment, parent_files: dict[str, str] | None, dest: Path) -> Path:
    """Copy the environment to `dest` and overlay the parent's editable files (None = as on disk)."""
    shutil.copytree(env.root, dest, ignore=_IGNORE)
    for rel, text in (parent_files or {}).items():
        if rel not in env.editable:
            raise PreflightError(f"parent recipe holds {rel!r}, which is not an editable file")
        (dest / rel).write_text(text)
    return dest


def read_editable(env: Environment, root: Path) -> dict[str, str]:
    """The editable surface of a workspace (or of the environment itself), path -> text."""
    return {rel: (root / rel).read_text() for rel in env.editable}


def make_diff(before: dict[str, str], after: dict[str, str]) -> str:
    """Unified diff between two editable surfaces, with `a/` and `b/` prefixes as git writes."""
    chunks = []
    for rel in sorted(set(before) | set(after)):
        old, new = before.get(rel, ""), after.get(rel, "")
        if old != new:
            chunks.extend(difflib.unified_diff(
                old.splitlines(keepends=True), new.splitlines(keepends=True),
                fromfile=f"a/{rel}", tofile=f"b/{rel}"))
    return "".join(chunks)


def diff_sha(diff: str) -> str:
    """A fingerprint of an edit, ignoring trailing whitespace, to spot repeats."""
    normal = "\n".join(line.rstrip() for line in diff.strip().splitlines())
    return hashlib.sha256(normal.encode()).hexdigest()


def diff_lines(diff: str) -> int:
    """Lines added plus lines removed: "simpler wins ties" made mechanical."""
    try:
        patch = unidiff.PatchSet(diff)
    except unidiff.UnidiffParseError:
        return 0
    return sum(f.added + f.removed for f in patch)


def check_diff(env: Environment, diff: str) -> list[str]:
    """Paths a diff touches, after refusing anything but edits to existing editable files.

    Raises:
        PreflightError: the diff does not parse, changes nothing, or touches a path outside the
            editable surface (protected files, the evaluator, anything outside the workspace).
    """
    try:
        patch = unidiff.PatchSet(diff)
    except unidiff.UnidiffParseError as exc:
        raise PreflightError(f"the edit is not a unified diff: {exc}") from None
    if not len(patch):
        raise PreflightError("the edit changes no file (empty or headerless diff)")
    touched = []
    for patched in patch:
        for raw in (patched.source_file, patched.target_file):
            if raw == "/dev/null":
                raise PreflightError(f"the edit adds or deletes {patched.path!r}; only editing "
                                     f"existing editable files is allowed")
            touched.append(_check_path(env, raw))
    return sorted(set(touched))


def _check_path(env: Environment, raw: str) -> str:
    name = raw.split("\t")[0].strip()
    if name.startswith(("a/", "b/")):
        name = name[2:]
    if os.path.isabs(name):
        target = Path(name).resolve()
    else:
        target = (env.root / name).resolve()
    if target == env.evaluator:
        raise PreflightError(f"the edit touches the evaluator {name!r}, which is harness-owned")
    rel = PurePosixPath(os.path.normpath(name))
    if os.path.isabs(name) or rel.parts[:1] == ("..",):
        raise PreflightError(f"the edit touches {name!r}, outside the workspace")
    if env.is_protected(str(rel)):
        raise PreflightError(f"the edit touches protected file {str(rel)!r}")
    if str(rel) not in env.editable:
        raise PreflightError(f"the edit touches {str(rel)!r}, which is not an editable file "
                             f"(editable: {', '.join(env.editable)})")
    return str(rel)


def apply_diff(env: Environment, workspace: Path, diff: str) -> list[str]:
    """Check `diff` and apply it to `workspace` with `git apply` (exact context, no fuzz).

    Returns the touched paths. Raises PreflightError with git's reason when a hunk does not apply.
    """
    touched = check_diff(env, diff)
    # A ceiling keeps git from finding an enclosing repository and re-rooting the paths.
    git_env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(workspace.parent)}
    try:
        proc = subprocess.run(
            ["git", "apply", "--whitespace=nowarn", "-"], cwd=workspace, input=diff,
            capture_output=True, text=True, env=git_env, timeout=60)
    except FileNotFoundError:
        raise PreflightError("git is not installed; the harness needs `git apply`") from None
    if proc.returncode != 0:
        reason = " ".join(proc.stderr.split()) or "git apply failed"
        raise PreflightError(f"the edit does not apply: {reason}")
    return touched


def syntax_check(workspace: Path, paths: list[str]) -> None:
    """Compile every touched Python file; a syntax error is a preflight failure, not a run."""
    for rel in paths:
        if rel.endswith(".py"):
            try:
                compile((workspace / rel).read_text(), rel, "exec")
            except SyntaxError as exc:
                raise PreflightError(f"syntax error in {rel} line {exc.lineno}: {exc.msg}") from None
