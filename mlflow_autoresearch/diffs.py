"""Edits as unified diffs: make one between two editable surfaces, fingerprint it, count it.

Pure functions over text, shared by the store (the dedup tag), execution (preflight, the
`diff_lines` metric) and the agents (building edits, spotting repeats).
"""

from __future__ import annotations

import difflib
import hashlib

import unidiff


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


def files_named(diff: str) -> list[str]:
    """The target paths a diff names (prefix `b/` dropped); none for one that does not parse."""
    try:
        patch = unidiff.PatchSet(diff)
    except unidiff.UnidiffParseError:
        return []
    return sorted({f.path for f in patch})
