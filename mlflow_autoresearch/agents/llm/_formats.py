"""The edit formats, each a parser (text, files, default) -> new files, or None when the text
holds no edit of its kind: search/replace blocks, unified diffs (hunks placed by content), and
whole-file rewrites of small files. A malformed or misplaced edit raises `EditError`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._text import (DIVIDER, FENCE, HUNK, REPLACE, SEARCH, EditError, fence_label, fenced_blocks,
                    locate, resolve_path, splice)

WHOLE_FILE_MAX_LINES = 300
_ELISION = re.compile(r"^\s*(?:#|//)?\s*(?:\.\.\.|…)|^\s*(?:#|//).*\b(?:rest of (?:the )?"
                      r"(?:file|code)|unchanged|remains the same|same as before)\b", re.I)


# ----------------------------------------------------------------------------------------------
# Search/replace blocks
# ----------------------------------------------------------------------------------------------

def search_replace(text: str, files: dict[str, str], default: str | None
                    ) -> dict[str, str] | None:
    lines = text.splitlines()
    blocks: list[tuple[str, list[str], list[str]]] = []
    path = None
    i = 0
    while i < len(lines):
        if not SEARCH.match(lines[i]):
            i += 1
            continue
        number = len(blocks) + 1
        path = _path_before(lines, i, files) or path or default
        if path is None:
            raise EditError(f"SEARCH/REPLACE block {number} names no file: put the file's path "
                            f"({', '.join(sorted(files))}) alone on the line before "
                            f"`<<<<<<< SEARCH`.")
        divider = next((j for j in range(i + 1, len(lines)) if DIVIDER.match(lines[j])), None)
        end = next((j for j in range(divider + 1, len(lines)) if REPLACE.match(lines[j])),
                   None) if divider is not None else None
        if divider is None or end is None:
            raise EditError(f"SEARCH/REPLACE block {number} is not closed: it needs a "
                            f"`=======` line and then a `>>>>>>> REPLACE` line.")
        blocks.append((path, lines[i + 1:divider], lines[divider + 1:end]))
        i = end + 1
    if not blocks:
        return None
    out = dict(files)
    for number, (path, search, replace) in enumerate(blocks, 1):
        where = f"SEARCH/REPLACE block {number} ({path})"
        if not any(s.strip() for s in search):
            raise EditError(f"{where} has an empty SEARCH part. Copy the exact lines to change "
                            f"from the parent's file into SEARCH; new files cannot be created.")
        lines = out[path].splitlines()
        start, shift = locate(lines, search, where)
        out[path] = splice(out[path], start, len(search), replace, shift)
    return out


def _path_before(lines: list[str], i: int, files: dict[str, str]) -> str | None:
    """The path named on the lines just above a SEARCH marker (fence openers skipped)."""
    for j in range(i - 1, max(-1, i - 4), -1):
        line = lines[j].strip()
        if not line:
            continue
        opener = FENCE.match(line)
        if opener:
            info = opener.group(2).split()
            found = [resolve_path(t, files, strict=False) for t in info]
            if any(found):
                return next(f for f in found if f)
            continue
        if REPLACE.match(line):
            return None
        return resolve_path(line, files)
    return None


# ----------------------------------------------------------------------------------------------
# Unified diffs
# ----------------------------------------------------------------------------------------------

@dataclass
class _Hunk:
    old_start: int | None
    lines: list[str]


def unified_diff(text: str, files: dict[str, str], default: str | None
                  ) -> dict[str, str] | None:
    sections = _diff_sections(text, files, default)
    if not sections:
        return None
    out = dict(files)
    for path, hunks in sections:
        after, offset = 0, 0
        for number, hunk in enumerate(hunks, 1):
            where = f"hunk {number} of the diff for {path}"
            before = [line[1:] for line in hunk.lines if line[:1] in (" ", "-")]
            new = [line[1:] for line in hunk.lines if line[:1] in (" ", "+")]
            if not before:
                raise EditError(f"{where} has no context or removed lines, so there is no way "
                                f"to tell where it goes; include a few unchanged lines around it.")
            # Context found twice: take the place nearest the hunk's line number, else the first
            # after the previous hunk.
            near = hunk.old_start - 1 + offset if hunk.old_start else \
                (after if number > 1 else None)
            start, shift = locate(out[path].splitlines(), before, where, near, after)
            out[path] = splice(out[path], start, len(before), new, shift)
            after, offset = start + len(new), offset + len(new) - len(before)
    return out


def _diff_sections(text: str, files: dict[str, str], default: str | None
                   ) -> list[tuple[str, list[_Hunk]]]:
    """(path, hunks) from the diff-looking fenced blocks of `text`, else from the bare text."""
    candidates = [body for info, body, _ in fenced_blocks(text)
                  if info.split()[:1] in (["diff"], ["patch"], ["udiff"])
                  or any(HUNK.match(b) for b in body)]
    if not candidates and any(HUNK.match(line) for line in text.splitlines()):
        candidates = [text.splitlines()]
    sections: list[tuple[str, list[_Hunk]]] = []
    for body in candidates:
        sections += _parse_diff(body, files, default)
    return sections


def _parse_diff(body: list[str], files: dict[str, str], default: str | None
                ) -> list[tuple[str, list[_Hunk]]]:
    sections: list[tuple[str, list[_Hunk]]] = []
    path, hunks, hunk = None, [], None

    def close_hunk():
        nonlocal hunk
        if hunk is not None:
            while hunk.lines and hunk.lines[-1] == " ":  # blank trailing context is harmless
                hunk.lines.pop()
            if any(line[:1] in "+-" for line in hunk.lines):
                hunks.append(hunk)
        hunk = None

    def close_file():
        nonlocal hunks
        close_hunk()
        if hunks:
            target = path or default
            if target is None:
                raise EditError(f"the diff names no file: start it with `--- a/PATH` and "
                                f"`+++ b/PATH` lines ({', '.join(sorted(files))}).")
            sections.append((target, hunks))
        hunks = []

    i = 0
    while i < len(body):
        line = body[i]
        if line.startswith("--- ") and i + 1 < len(body) and body[i + 1].startswith("+++ "):
            close_file()
            old, new = line[4:], body[i + 1][4:]
            raw = old if new.strip().split("\t")[0] == "/dev/null" else new
            if "/dev/null" in (old.split("\t")[0].strip(), new.split("\t")[0].strip()):
                raise EditError("the diff creates or deletes a file; only editing the existing "
                                f"editable files ({', '.join(sorted(files))}) is allowed.")
            path = resolve_path(raw, files)
            i += 2
            continue
        match = HUNK.match(line)
        if match:
            close_hunk()
            hunk = _Hunk(int(match.group(1)) if match.group(1) else None, [])
        elif hunk is not None:
            if line[:1] in (" ", "+", "-"):
                hunk.lines.append(line)
            elif line == "":
                hunk.lines.append(" ")  # models drop the space of blank context lines
            elif not line.startswith("\\"):  # "\ No newline at end of file" is skipped
                close_hunk()  # prose, `diff --git`, `index`: the hunk has ended
        i += 1
    close_file()
    return sections


# ----------------------------------------------------------------------------------------------
# Whole files
# ----------------------------------------------------------------------------------------------

def whole_file(text: str, files: dict[str, str], default: str | None, notes: list[str]
                ) -> dict[str, str] | None:
    """The files that fenced blocks rewrite whole; a block not read as one is noted in `notes`.

    Raises EditError for a block that names a file but is not all of it (too short, elided).
    """
    lines = text.splitlines()
    fences = fenced_blocks(text)
    out = dict(files)
    found = False
    for k, (info, body, start) in enumerate(fences):
        if any(SEARCH.match(b) or HUNK.match(b) for b in body):
            continue
        label, path = fence_label(fences, k), _block_path(info, lines, start, files)
        if path is None and default is None:
            notes.append(f"ignored: {label}: not a whole-file rewrite (it names no file)")
            continue
        original = files.get(path or default or "", "")
        n_lines = len(original.splitlines())
        if path is None and len(body) < 0.5 * n_lines:
            # An unnamed block is the whole file only if it is about as long as the file.
            notes.append(f"ignored: {label}: not a whole-file rewrite ({_lines(len(body))} "
                         f"for the {n_lines}-line {default})")
            continue
        path = path or default
        if n_lines > WHOLE_FILE_MAX_LINES:
            notes.append(f"ignored: {label}: not a whole-file rewrite ({path} has {n_lines} "
                         f"lines; whole-file answers are only read for files of at most "
                         f"{WHOLE_FILE_MAX_LINES} lines)")
            continue
        known = {x.strip() for x in original.splitlines()}
        elided = [b for b in body if _ELISION.search(b) and b.strip() not in known]
        if elided or len(body) < 0.5 * n_lines:
            raise EditError(f"{label} is not the whole file {path} (it is {_lines(len(body))} "
                            f"for a {n_lines}-line file"
                            + (f", and elides code: {elided[0].strip()!r}" if elided else "")
                            + "). Give SEARCH/REPLACE blocks for the lines you change instead.")
        found = True
        new = "\n".join(body)
        out[path] = new + ("\n" if original.endswith("\n") or not original else "")
    return out if found else None


def _lines(n: int) -> str:
    return f"{n} line" if n == 1 else f"{n} lines"


def _block_path(info: str, lines: list[str], start: int, files: dict[str, str]) -> str | None:
    """The editable file a fenced block names: in its info string, else on a line above it."""
    words = info.split()
    path = next((p for p in (resolve_path(t, files, strict=False) for t in words[1:] + words[:1])
                 if p), None)
    if path is None and start > 0:
        prev = next((lines[j] for j in range(start - 1, max(-1, start - 3), -1)
                     if lines[j].strip()), "")
        path = resolve_path(prev, files, strict=False)
    return path
