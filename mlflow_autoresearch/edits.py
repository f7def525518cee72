"""Model answers: the proposal's fields, and the edit applied to the parent's files in memory.

An answer carries `Hypothesis:`, `Expected delta:` and `Parent:` lines (markdown decoration,
headings and JSON-style quoting tolerated) and an edit in one of the formats models actually
write, tried in this order until one applies:

1. search/replace blocks (`<<<<<<< SEARCH` / `=======` / `>>>>>>> REPLACE`, the file's path on
   the line before); trailing whitespace and a uniform indentation shift are forgiven;
2. a unified diff, fenced (```diff) or bare; hunks are placed by their content, so wrong line
   numbers and counts in `@@` headers do not matter;
3. the whole file in a fenced block, for files of at most WHOLE_FILE_MAX_LINES lines.

Nothing here touches disk or knows about MLflow: `apply_answer` maps {path: text} to new
{path: text}. Every refusal is an `EditError` whose message is written for the model, so the
repair turn can quote it: which block, which file, and the lines the file really has.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass

WHOLE_FILE_MAX_LINES = 300
_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\b.*$")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\b.*$")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*(.*?)\s*$")
_HUNK = re.compile(r"^@@\s*(?:-(\d+)(?:,\d+)?\s+\+(\d+)(?:,\d+)?)?\s*@@")
_FIELD = re.compile(
    r"""^[\s>*_#"'`-]*(hypothesis|expected[\s_-]*delta|parent(?:[\s_-]*trial)?|notes?)\b"""
    r"""["'*_`\s]*"""
    r"""(?:[:=](.*))?$""", re.I)
_NUMBER = re.compile(r"[-+]?\s*(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_PATHLIKE = re.compile(r"^[\w.\-/\\]+\.[A-Za-z]\w*$")
_ELISION = re.compile(r"^\s*(?:#|//)?\s*(?:\.\.\.|…)|^\s*(?:#|//).*\b(?:rest of (?:the )?"
                      r"(?:file|code)|unchanged|remains the same|same as before)\b", re.I)


class EditError(ValueError):
    """An edit that cannot be applied; the message is written to be sent back to the model."""


@dataclass(frozen=True)
class Answer:
    """The fields of a model's answer; None where the model gave none."""

    hypothesis: str | None
    expected_delta: float | None
    parent: str | None
    notes: str | None = None


@dataclass(frozen=True)
class Applied:
    """The parent's files after the edit, and the format that produced them."""

    files: dict[str, str]
    format: str


# ----------------------------------------------------------------------------------------------
# Fields
# ----------------------------------------------------------------------------------------------

def parse_answer(text: str) -> Answer:
    """Hypothesis, expected delta, parent and notes, read outside code blocks (first one wins)."""
    fields = _fields(_prose_lines(text))
    if "hypothesis" not in fields:  # some models fence their whole answer
        fields = {**_fields(_prose_lines(text, fences=False), colon_only=True), **fields}
    hypothesis, notes = fields.get("hypothesis"), fields.get("notes")
    return Answer(hypothesis[:1000] if hypothesis else None, _number(fields.get("delta", "")),
                  fields.get("parent"), notes[:1000] if notes else None)


def _fields(lines: list[str], colon_only: bool = False) -> dict[str, str]:
    fields: dict[str, str] = {}
    for i, line in enumerate(lines):
        match = _FIELD.match(line)
        if not match or colon_only and (match.group(2) is None
                                        or line[match.start(2) - 1] != ":"):
            continue
        key = match.group(1).lower()
        key = {"h": "hypothesis", "e": "delta", "p": "parent", "n": "notes"}[key[0]]
        value = _clean(match.group(2) or "")
        if not value:  # heading style: the value is the next non-empty line
            value = next((_clean(x) for x in lines[i + 1:i + 4] if _clean(x)), "")
            if _FIELD.match(value or "-"):
                value = ""
        if value and key not in fields:
            fields[key] = value
    return fields


def _prose_lines(text: str, fences: bool = True) -> list[str]:
    """The answer's lines outside search/replace blocks and (if `fences`) fenced blocks."""
    out, fence, in_block = [], None, False
    for line in text.splitlines():
        opener = _FENCE.match(line)
        if not fences and opener:
            continue
        if fence is None and opener:
            fence = opener.group(1)
            continue
        if fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                fence = None
            continue
        if _SEARCH.match(line):
            in_block = True
        elif _REPLACE.match(line):
            in_block = False
        elif not in_block:
            out.append(line)
    return out


def _clean(value: str) -> str:
    value = re.sub(r"^[*_`]+(?:\s+|$)", "", value.strip())  # the closing ** of **Key:**
    for mark in ("**", "__", "`", "*", "_"):
        if len(value) > 2 * len(mark) and value.startswith(mark) and value.endswith(mark):
            value = value[len(mark):-len(mark)].strip()
    if value.endswith(","):
        value = value[:-1].rstrip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        try:
            value = json.loads(value) if value[0] == '"' else value[1:-1]
        except ValueError:
            value = value[1:-1]
    return str(value).strip()


def _number(value: str) -> float | None:
    value = value.replace("\u2212", "-").replace("\u2013", "-")
    match = _NUMBER.search(value)
    if not match:
        return None
    number = float(match.group(0).replace(" ", ""))
    return number if number == number and abs(number) != float("inf") else None


# ----------------------------------------------------------------------------------------------
# Edits
# ----------------------------------------------------------------------------------------------

def apply_answer(text: str, files: dict[str, str], default: str | None = None) -> Applied:
    """Apply the first edit format found in `text` that applies cleanly to `files`.

    Args:
        text: the model's answer.
        files: the parent's editable files, path -> text; no other path may change.
        default: the file an edit naming no file applies to (None: every edit must name one).

    Returns:
        The edited files and the format used ("search/replace", "unified diff", "whole file").

    Raises:
        EditError: no edit found, or none applies; the message says what to fix.
    """
    attempts = [("search/replace", _search_replace), ("unified diff", _unified_diff),
                ("whole file", _whole_file)]
    errors = []
    for name, parse in attempts:
        try:
            result = parse(text, files, default)
        except EditError as exc:
            errors.append(str(exc))
            continue
        if result is not None:
            return Applied(result, name)
    if errors:
        raise EditError(errors[0] if len(errors) == 1 else
                        "\n\n".join(f"({i}) {e}" for i, e in enumerate(errors, 1)))
    raise EditError("the answer holds no edit. Give SEARCH/REPLACE blocks as described under "
                    "'Output' (the file's path on the line before each `<<<<<<< SEARCH`), or a "
                    "unified diff in a ```diff block.")


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


def _search_replace(text: str, files: dict[str, str], default: str | None
                    ) -> dict[str, str] | None:
    lines = text.splitlines()
    blocks: list[tuple[str, list[str], list[str]]] = []
    path = None
    i = 0
    while i < len(lines):
        if not _SEARCH.match(lines[i]):
            i += 1
            continue
        number = len(blocks) + 1
        path = _path_before(lines, i, files) or path or default
        if path is None:
            raise EditError(f"SEARCH/REPLACE block {number} names no file: put the file's path "
                            f"({', '.join(sorted(files))}) alone on the line before "
                            f"`<<<<<<< SEARCH`.")
        divider = next((j for j in range(i + 1, len(lines)) if _DIVIDER.match(lines[j])), None)
        end = next((j for j in range(divider + 1, len(lines)) if _REPLACE.match(lines[j])),
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
        start, shift = _locate(lines, search, where)
        out[path] = _splice(out[path], start, len(search), replace, shift)
    return out


def _path_before(lines: list[str], i: int, files: dict[str, str]) -> str | None:
    """The path named on the lines just above a SEARCH marker (fence openers skipped)."""
    for j in range(i - 1, max(-1, i - 4), -1):
        line = lines[j].strip()
        if not line:
            continue
        opener = _FENCE.match(line)
        if opener:
            info = opener.group(2).split()
            found = [resolve_path(t, files, strict=False) for t in info]
            if any(found):
                return next(f for f in found if f)
            continue
        if _REPLACE.match(line):
            return None
        return resolve_path(line, files)
    return None


def _splice(text: str, start: int, n: int, replace: list[str], shift: tuple[str, str]) -> str:
    """`text` with its lines start..start+n replaced by `replace` (re-indented by `shift`)."""
    lines = text.splitlines()
    ending = "\n" if text.endswith("\n") or not text else ""
    if shift != ("", ""):
        replace = [_reindent(r, shift) for r in replace]
    return "\n".join(lines[:start] + replace + lines[start + n:]) + ending


def _locate(lines: list[str], search: list[str], where: str, near: int | None = None,
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


# ----------------------------------------------------------------------------------------------
# Unified diffs
# ----------------------------------------------------------------------------------------------

@dataclass
class _Hunk:
    old_start: int | None
    lines: list[str]


def _unified_diff(text: str, files: dict[str, str], default: str | None
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
            start, shift = _locate(out[path].splitlines(), before, where, near, after)
            out[path] = _splice(out[path], start, len(before), new, shift)
            after, offset = start + len(new), offset + len(new) - len(before)
    return out


def _diff_sections(text: str, files: dict[str, str], default: str | None
                   ) -> list[tuple[str, list[_Hunk]]]:
    """(path, hunks) from the diff-looking fenced blocks of `text`, else from the bare text."""
    candidates = [body for info, body in _fences(text)
                  if info.split()[:1] in (["diff"], ["patch"], ["udiff"])
                  or any(_HUNK.match(b) for b in body)]
    if not candidates and any(_HUNK.match(line) for line in text.splitlines()):
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
        match = _HUNK.match(line)
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

def _whole_file(text: str, files: dict[str, str], default: str | None
                ) -> dict[str, str] | None:
    lines = text.splitlines()
    out = dict(files)
    found = False
    for info, body, start in _fences(text, with_start=True):
        if any(_SEARCH.match(b) or _HUNK.match(b) for b in body):
            continue
        path = next((p for p in (resolve_path(t, files, strict=False) for t in info.split()[1:]
                                 + info.split()[:1]) if p), None)
        if path is None and start > 0:
            prev = next((lines[j] for j in range(start - 1, max(-1, start - 3), -1)
                         if lines[j].strip()), "")
            path = resolve_path(prev, files, strict=False)
        original = files.get(path or default or "", "")
        if path is None:
            # An unnamed block is the whole file only if it is about as long as the file.
            if default is None or len(body) < 0.5 * len(original.splitlines()):
                continue
            path = default
        found = True
        n_lines = len(original.splitlines())
        if n_lines > WHOLE_FILE_MAX_LINES:
            raise EditError(f"{path} has {n_lines} lines; whole-file rewrites are accepted only "
                            f"for files of at most {WHOLE_FILE_MAX_LINES} lines. Use SEARCH/"
                            f"REPLACE blocks instead.")
        known = {x.strip() for x in original.splitlines()}
        elided = [b for b in body if _ELISION.search(b) and b.strip() not in known]
        if elided or len(body) < 0.5 * n_lines:
            raise EditError(f"the code block for {path} is not the whole file (it is "
                            f"{len(body)} lines for a {n_lines}-line file"
                            + (f", and elides code: {elided[0].strip()!r}" if elided else "")
                            + "). Give SEARCH/REPLACE blocks for the lines you change instead.")
        new = "\n".join(body)
        out[path] = new + ("\n" if original.endswith("\n") or not original else "")
    return out if found else None


def _fences(text: str, with_start: bool = False) -> list:
    """Fenced blocks as (info string, body lines) or (info, body, index of the opening line)."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opener = _FENCE.match(lines[i])
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
        body = lines[i + 1:j]
        blocks.append((opener.group(2), body, i) if with_start else (opener.group(2), body))
        i = j + 1
    return blocks
