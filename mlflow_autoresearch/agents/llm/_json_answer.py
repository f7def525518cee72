"""A JSON-object answer: finding the object in the text, its field values, and the edit strings
under its `diff`, `patch` or `edit` keys."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ._text import FENCE, HUNK, SEARCH, fence_label, fenced_blocks

_JSON_FIELDS = {"hypothesis": "hypothesis", "expecteddelta": "delta", "parent": "parent",
                "notes": "notes"}  # normalised key -> field
_JSON_EDITS = ("diff", "patch", "edit")
_JSON = json.JSONDecoder(strict=False)  # strict=False: models put raw newlines in strings


@dataclass(frozen=True)
class JsonAnswer:
    """An answer given as a JSON object: how messages name it, its values, and the other text."""

    label: str  # "the ```json block", "the JSON object"
    values: dict[str, tuple[str, object]]  # normalised key -> (the key as written, value)
    rest: str  # the answer without the object

    def part(self, key: str) -> str:
        """How messages name the value under normalised `key`: the ```json block's "diff"."""
        return f'{self.label}\'s "{self.values[key][0]}"'


def json_answer(text: str) -> JsonAnswer | None:
    """The answer's JSON object: a fenced block that is one, else the outermost `{...}` from the
    answer's first `{`, if that opens a line before any code.

    Only an object with at least one known key counts, so code and configuration in JSON are
    left to the other formats.
    """
    lines = text.splitlines()
    fences = fenced_blocks(text)
    for k, (_, body, start) in enumerate(fences):
        block = "\n".join(body).strip()
        found = _json_values(block)
        if found is not None and found[1] == len(block):
            rest = "\n".join(lines[:start] + lines[start + len(body) + 2:])
            return JsonAnswer(fence_label(fences, k), found[0], rest)
    first = text.find("{")
    before = text[:max(first, 0)].split("\n")
    if first < 0 or before[-1].strip() or any(
            FENCE.match(x) or SEARCH.match(x) or HUNK.match(x) for x in before):
        return None  # a `{` of code or prose: a dict literal in an edit is no answer
    found = _json_values(text, first)
    if found is None:
        return None
    return JsonAnswer("the JSON object", found[0], text[:first] + text[found[1]:])


def _json_values(text: str, start: int = 0
                 ) -> tuple[dict[str, tuple[str, object]], int] | None:
    """The JSON object at `start` of `text` as {normalised key: (key, value)}, and the index
    where it ends; None unless it is an object with a known key."""
    try:
        value, end = _JSON.raw_decode(text, start)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    values = {re.sub(r"[\s_-]", "", str(k)).lower(): (str(k), v) for k, v in value.items()}
    return (values, end) if values.keys() & {*_JSON_FIELDS, *_JSON_EDITS} else None


def json_edits(found: JsonAnswer, notes: list[str]) -> list[tuple[str, str]]:
    """(part, text) for each edit in the JSON object; a value that cannot be one is noted."""
    edits = []
    for key in _JSON_EDITS:
        if key not in found.values:
            continue
        part, value = found.part(key), found.values[key][1]
        if not isinstance(value, str):
            notes.append(f"ignored: {part} is not a string; give the edit as one string, its "
                         f"lines separated by \\n")
        elif not value.strip():
            notes.append(f"ignored: {part} is empty")
        elif not any(SEARCH.match(x) or HUNK.match(x) for x in value.splitlines()):
            notes.append(f"ignored: {part} holds no unified diff or SEARCH/REPLACE blocks")
        else:
            edits.append((part, value))
    return edits


def json_fields(found: JsonAnswer, ignored: list[str]) -> dict[str, str]:
    """The JSON object's fields as one-line text; a value that is not text or a number is
    noted in `ignored`."""
    fields = {}
    for key, field in _JSON_FIELDS.items():
        if key not in found.values:
            continue
        value = found.values[key][1]
        if isinstance(value, str) or isinstance(value, (int, float)) and \
                not isinstance(value, bool):
            if str(value).strip():
                fields[field] = " ".join(str(value).split())
        elif value is not None:
            ignored.append(f"ignored: {found.part(key)} is not a string")
    return fields
