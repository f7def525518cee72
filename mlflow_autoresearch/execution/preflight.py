"""Preflight: a proposal's diff checked and applied to a fresh workspace before anything runs.

Two gates. Before applying, the paths the diff names are checked, so the usual mistakes get a
precise reason (a protected file, the evaluator, a path outside the workspace). After `git apply`,
one post-condition that no diff syntax can get around (renames, mode lines, symlinks, binary
patches): every file outside the editable surface is byte-identical to the environment's, the
editable files are still plain files, and nothing was added or removed. Every refusal is a
`PreflightError` whose message becomes the `preflight_crash` trial's excerpt.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path, PurePosixPath

import unidiff

from ..environment import Environment
from .workspace import materialise, snapshot


class PreflightError(Exception):
    """The edit cannot run; the message is the one-line reason recorded on the trial."""


def prepare_workspace(env: Environment, parent_files: dict[str, str] | None, diff: str,
                      dest: Path) -> Path:
    """The workspace a trial runs in: the environment at `dest`, the parent's editable files
    laid over it (None: as shipped), `diff` applied and checked, changed Python compiled.

    Raises:
        PreflightError: the reason the edit cannot run.
    """
    try:
        workspace = materialise(env, parent_files, dest)
    except ValueError as exc:
        raise PreflightError(str(exc)) from None
    if diff.strip():
        syntax_check(workspace, apply_diff(env, workspace, diff))
    return workspace


def check_diff(env: Environment, diff: str) -> list[str]:
    """Paths a diff names, after refusing anything but edits to existing editable files.

    Raises:
        PreflightError: the diff does not parse, changes nothing, or names a path outside the
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
    target = Path(name).resolve() if os.path.isabs(name) else (env.root / name).resolve()
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
    """Check `diff`, apply it to `workspace` with `git apply` (exact context, no fuzz), and
    check the post-condition. Returns the editable files the diff changed.

    Raises:
        PreflightError: with the reason (git's, for a hunk that does not apply).
    """
    check_diff(env, diff)
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
    return verify_surface(env, workspace)


def verify_surface(env: Environment, workspace: Path) -> list[str]:
    """The post-condition: only editable files differ from the environment, and they are still
    plain files; nothing was added or removed. Returns the editable files that differ.

    Raises:
        PreflightError: naming the first file that breaks it.
    """
    expected, found = snapshot(env.root), snapshot(workspace)
    added, removed = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
    if removed:
        raise PreflightError(f"the edit removes or renames {removed[0]!r}; only editing "
                             f"existing editable files is allowed")
    if added:
        raise PreflightError(f"the edit creates {added[0]!r}; only editing existing editable "
                             f"files is allowed")
    changed = sorted(rel for rel in expected if found[rel] != expected[rel])
    for rel in changed:
        if rel not in env.editable:
            what = "protected file" if env.is_protected(rel) else "file outside the editable surface"
            raise PreflightError(f"the edit changes {what} {rel!r}")
        if found[rel].startswith("link:") or (workspace / rel).is_symlink():
            raise PreflightError(f"the edit turns {rel!r} into a symbolic link")
    return changed


def syntax_check(workspace: Path, paths: list[str]) -> None:
    """Compile every changed Python file; a syntax error is a preflight failure, not a run."""
    for rel in paths:
        if rel.endswith(".py"):
            try:
                compile((workspace / rel).read_text(), rel, "exec")
            except SyntaxError as exc:
                raise PreflightError(f"syntax error in {rel} line {exc.lineno}: {exc.msg}") from None
