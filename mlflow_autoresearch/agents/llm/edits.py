"""Model answers: the proposal's fields, and the edit applied to the parent's files in memory.

An answer carries `Hypothesis:`, `Expected delta:` and `Parent:` lines (markdown decoration,
headings and JSON-style quoting tolerated) and an edit in one of the formats models actually
write, tried in this order until one applies:

1. search/replace blocks (`<<<<<<< SEARCH` / `=======` / `>>>>>>> REPLACE`, the file's path on
   the line before); trailing whitespace and a uniform indentation shift are forgiven;
2. a unified diff, fenced (```diff) or bare; hunks are placed by their content, so wrong line
   numbers and counts in `@@` headers do not matter;
3. the whole file in a fenced block, for files of at most WHOLE_FILE_MAX_LINES lines.

An answer may instead be a JSON object (in a fenced block, or bare): its `hypothesis`,
`expected_delta`, `parent` and `notes` keys are the fields, and the unified diff or
search/replace blocks in its `diff`, `patch` or `edit` string are tried first.

Nothing here touches disk or knows about MLflow: `apply_answer` maps {path: text} to new
{path: text}. Every refusal is an `EditError` whose message is written for the model, so the
repair turn can quote it: which block, which file, and the lines the file really has. A part of
the answer that is not used (a second edit, a block that is no rewrite, an unreadable field) is
named with the reason, one "ignored: ..." line each, in the refusal or in `Applied.ignored` and
`Answer.ignored`.

This module owns the fields and the order in which formats are tried; the formats are in
`_formats.py`, the JSON object in `_json_answer.py`, and the shared markers, fences and paths
(with `EditError` and `resolve_path`, re-exported here) in `_text.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from ._formats import WHOLE_FILE_MAX_LINES, search_replace, unified_diff, whole_file
from ._json_answer import json_answer, json_edits, json_fields
from ._text import FENCE, REPLACE, SEARCH, EditError, resolve_path

__all__ = ["NO_EDIT", "WHOLE_FILE_MAX_LINES", "Answer", "Applied", "EditError", "apply_answer",
           "parse_answer", "resolve_path"]

_FIELD = re.compile(
    r"""^[\s>*_#"'`-]*(hypothesis|expected[\s_-]*delta|parent(?:[\s_-]*trial)?|notes?)\b"""
    r"""["'*_`\s]*"""
    r"""(?:[:=](.*))?$""", re.I)
_NUMBER = re.compile(r"[-+]?\s*(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_FORMAT_PARTS = {"search/replace": "the SEARCH/REPLACE blocks", "unified diff": "the unified diff",
                 "whole file": "the whole-file block"}
NO_EDIT = ("the answer holds no edit. Give SEARCH/REPLACE blocks as described under 'Output' (the "
           "file's path on the line before each `<<<<<<< SEARCH`), or a unified diff in a "
           "```diff block.")


@dataclass(frozen=True)
class Answer:
    """The fields of a model's answer; None where the model gave none.

    `ignored` holds one line per field that could not be read, and why.
    """

    hypothesis: str | None
    expected_delta: float | None
    parent: str | None
    notes: str | None = None
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True)
class Applied:
    """The parent's files after the edit, the format that produced them, and one line per part
    of the answer that was not used, and why."""

    files: dict[str, str]
    format: str
    ignored: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------
# Fields
# ----------------------------------------------------------------------------------------------

def parse_answer(text: str) -> Answer:
    """Hypothesis, expected delta, parent and notes: from a JSON object answer, else (and for
    the fields it lacks) read outside code blocks, first one wins."""
    found = json_answer(text)
    prose = found.rest if found else text
    fields = _fields(_prose_lines(prose))
    if "hypothesis" not in fields:  # some models fence their whole answer
        fields = {**_fields(_prose_lines(prose, fences=False), colon_only=True), **fields}
    ignored: list[str] = []
    if found:
        fields = {**fields, **json_fields(found, ignored)}
    delta = _number(fields.get("delta", ""))
    if delta is None and fields.get("delta"):
        ignored.append(f"ignored: Expected delta {fields['delta'][:40]!r}: not a number; write "
                       f"a signed number in score units, e.g. -0.01")
    hypothesis, notes = fields.get("hypothesis"), fields.get("notes")
    return Answer(hypothesis[:1000] if hypothesis else None, delta, fields.get("parent"),
                  notes[:1000] if notes else None, tuple(ignored))


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
        opener = FENCE.match(line)
        if not fences and opener:
            continue
        if fence is None and opener:
            fence = opener.group(1)
            continue
        if fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                fence = None
            continue
        if SEARCH.match(line):
            in_block = True
        elif REPLACE.match(line):
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
    """Apply the first edit found in `text` that applies cleanly to `files`.

    The edits of a JSON object answer are tried first, then the formats of the module docstring
    in the rest of the answer. Every other part is tried too, on the parent's files, so that the
    result can say which parts were not used and why.

    Args:
        text: the model's answer.
        files: the parent's editable files, path -> text; no other path may change.
        default: the file an edit naming no file applies to (None: every edit must name one).

    Returns:
        The edited files, the format used ("search/replace", "unified diff", "whole file") and
        one "ignored: <part>: <why>" line per part not used.

    Raises:
        EditError: no edit found, or none applies; the message lists each part tried and why it
            was not used, and says what to fix.
    """
    notes: list[str] = []
    used, errors, unused = None, [], []
    for part, name, parse, body in _attempts(text, notes):
        try:
            result = parse(body, files, default)
        except EditError as exc:
            errors.append(f"{part}: {exc}" if part else str(exc))
            continue
        if result is None:
            continue
        if used is None:
            used = Applied(result, name)
        else:
            what = _FORMAT_PARTS[name] + (f" in {part}" if part else "")
            unused.append(f"ignored: {what}: not used, the {used.format} edit came first "
                          f"(one edit per answer)")
    if used is None:
        raise EditError(_refusal(errors, notes))
    ignored = [f"ignored: {_summary(e)}" for e in errors] + unused + notes
    return Applied(used.files, used.format, tuple(ignored))


def _refusal(errors: list[str], notes: list[str]) -> str:
    """Why nothing applied: each error (numbered if several), then one line per ignored part."""
    if len(errors) > 1:
        head = "\n\n".join(f"({i}) {e}" for i, e in enumerate(errors, 1))
    else:
        head = errors[0] if errors else NO_EDIT
    return "\n\n".join([head, "\n".join(notes)]) if notes else head


_Parser = Callable[[str, dict[str, str], str | None], dict[str, str] | None]


def _attempts(text: str, notes: list[str]) -> list[tuple[str, str, _Parser, str]]:
    """(part, format, parser, text) in the order tried: the JSON object's edits (`part` names
    them), then the rest of the answer (`part` empty). Unusable parts are noted in `notes`."""
    found = json_answer(text)
    edits = [("search/replace", search_replace), ("unified diff", unified_diff)]
    attempts = [(part, name, parse, value) for part, value in
                (json_edits(found, notes) if found else []) for name, parse in edits]
    rest = found.rest if found else text
    return attempts + [("", name, parse, rest) for name, parse in
                       [*edits, ("whole file", partial(whole_file, notes=notes))]]


def _summary(error: str) -> str:
    """An error's first sentence: it names the part and the reason, on one line."""
    line = (error.strip().splitlines() or [""])[0]
    return re.split(r"(?<=[^.]\.)\s", line, maxsplit=1)[0]
