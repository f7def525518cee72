"""Shared by the edit formats and the answer reader: the markers of search/replace blocks, diff
hunks and fenced blocks, how messages name a fenced block, the editable path an edit names,
placing a run of lines in a file by content (forgiving whitespace and indentation), and
`EditError`."""

from __future__ import annotations

import difflib
import re

SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\b.*$")
DIVIDER = re.compile(r"^\s*={5,9}\s*$")
REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\b.*$")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*(.*?)\s*$")
HUNK = re.compile(r"^@@\s*(?:-(\d+)(?:,\d+)?\s+\+(\d+)(?:,\d+)?)?\s*@@")
_PATHLIKE = re.compile(r"^[\w.\-/\\]+\.[A-Za-z]\w*$")
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
             "ninth", "tenth")


class EditError(ValueError):
    """An edit that cannot be applied; the message is written to be sent back to the model."""


def resolve_path(raw: str, files: dict[str, str], strict: bool = True) -> str | None:
    """The editable path a model meant by `raw` (decorated, prefixed, or just the file name).

    Returns None when `raw` does not look like a path. Raises EditError (if `strict`) when it
    names a file that is not editable.
    """
    name = raw.strip().strip("*_`'\":").strip()
    name = re.sub(r"^(?:#+\s*|//\s*)?(?:file|path|filename)\s*[:=]\s*", "", name, flags=re.I)
    name = name.strip("*_`'\" ").split("\t")[0].replace("\\", "/")
    for prefix in ("a/", "b/", "./"):
        if name.startswith(prefix) and name not in files:
            name = name[len(prefix):]
    if name in files:
        return name
    if not _PATHLIKE.match(name):
        return None
    matches = [p for p in files if p.endswith("/" + name) or name.endswith("/" + p)
               or p.rsplit("/", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if strict:
        raise EditError(f"the edit names {name!r}, which is not an editable file; only "
                        f"{', '.join(sorted(files))} may change (no new, deleted or other files)")
    return None


def fenced_blocks(text: str) -> list[tuple[str, list[str], int]]:
    """Fenced blocks as (info string, body lines, index of the opening line)."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opener = FENCE.match(lines[i])
        if not opener:
            i += 1
            continue
        fence = opener.group(1)
        j = i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            j += 1
        blocks.append((opener.group(2), lines[i + 1:j], i))
        i = j + 1
    return blocks


def fence_label(fences: list[tuple[str, list[str], int]], k: int) -> str:
    """How messages name fenced block `k`: "the ```python block", "the second ```python block"."""
    lang = _language(fences[k][0])
    same = [i for i, (info, _, _) in enumerate(fences) if _language(info) == lang]
    if len(same) == 1:
        return f"the ```{lang} block"
    n = same.index(k)
    return f"the {_ORDINALS[n] if n < len(_ORDINALS) else f'#{n + 1}'} ```{lang} block"


def _language(info: str) -> str:
    return (info.split() or [""])[0].lower()


def splice(text: str, start: int, n: int, replace: list[str], shift: tuple[str, str]) -> str:
    """`text` with its lines start..start+n replaced by `replace` (re-indented by `shift`)."""
    lines = text.splitlines()
    ending = "\n" if text.endswith("\n") or not text else ""
    if shift != ("", ""):
        replace = [_reindent(r, shift) for r in replace]
    return "\n".join(lines[:start] + replace + lines[start + n:]) + ending


def locate(lines: list[str], search: list[str], where: str, near: int | None = None,
           after: int = 0) -> tuple[int, tuple[str, str]]:
    """Index where `search` matches, and the indentation shift (file prefix, search prefix).

    Exact lines first, then ignoring trailing whitespace, then ignoring a uniform indentation
    difference. Several exact matches: the one nearest `near` (a hunk's line number) if given.
    """
    n = len(search)
    for normalise in (lambda s: s, str.rstrip, str.strip):
        want = [normalise(s) for s in search]
        hits = [i for i in range(len(lines) - n + 1)
                if [normalise(x) for x in lines[i:i + n]] == want]
        if not hits:
            continue
        if len(hits) > 1 and near is not None:
            later = [h for h in hits if h >= after] or hits
            hits = [min(later, key=lambda h: abs(h - near))]
        if len(hits) > 1:
            at = ", ".join(str(h + 1) for h in hits[:6])
            raise EditError(f"{where}: the lines to replace occur {len(hits)} times in the file "
                            f"(at lines {at}); include more surrounding lines so they match once.")
        shift = ("", "")
        if normalise is str.strip:
            shift = _shift(lines[hits[0]:hits[0] + n], search)
            if shift is None:
                continue
        return hits[0], shift
    raise EditError(f"{where}: the lines to replace are not in the file. They must match the "
                    f"parent's file exactly, character for character." + _closest(lines, search))


def _shift(found: list[str], search: list[str]) -> tuple[str, str] | None:
    """The uniform indentation change (file prefix, search prefix), or None if not uniform."""
    pairs = [(f, s) for f, s in zip(found, search) if s.strip()]
    f0, s0 = pairs[0]
    fi, si = f0[: len(f0) - len(f0.lstrip())], s0[: len(s0) - len(s0.lstrip())]
    for f, s in pairs:
        if not (f.startswith(fi) and s.startswith(si)
                and f[len(fi):].rstrip() == s[len(si):].rstrip()):
            return None
    return fi, si


def _reindent(line: str, shift: tuple[str, str]) -> str:
    file_prefix, search_prefix = shift
    if not line.strip():
        return line
    if line.startswith(search_prefix):
        return file_prefix + line[len(search_prefix):]
    return line


def _closest(lines: list[str], search: list[str]) -> str:
    """The most similar region of the file, quoted with line numbers, for the repair turn."""
    n = max(1, len(search))
    if not lines or len(lines) > 20000:
        return ""
    target = "\n".join(s.strip() for s in search)
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(target)
    best, best_i = 0.0, 0
    for i in range(0, max(1, len(lines) - n + 1)):
        matcher.set_seq1("\n".join(x.strip() for x in lines[i:i + n]))
        if matcher.real_quick_ratio() <= best or matcher.quick_ratio() <= best:
            continue
        ratio = matcher.ratio()
        if ratio > best:
            best, best_i = ratio, i
    if best < 0.3:
        return " Nothing in the file resembles them; check that you edit the parent's file."
    region = lines[best_i:best_i + n]
    quoted = "\n".join(region)
    span = f"line {best_i + 1}" if len(region) == 1 else \
        f"lines {best_i + 1}-{best_i + len(region)}"
    return (f" The closest match in the file ({span}):\n"
            f"```\n{quoted}\n```")
