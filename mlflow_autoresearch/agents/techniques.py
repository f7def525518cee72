"""Technique tables: an environment's known edits, as knob changes to the recipe's constants.

`techniques.yaml` maps each specialist to entries like
`{name, set: {KNOB: "+k" | "-k" | "*k" | literal}, hypothesis, expected_delta, cost, quality}`
(format in the README). A knob is a top-level line `NAME = <literal>  # comment`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

import yaml

from ..environment import Environment
from ..errors import EnvironmentSpecError

TECHNIQUES_FILE = "techniques.yaml"
SEARCH_SPACE = "search_space"  # the knobs' types and ranges, for search strategies
_EFFECTS = {"down", "same", "up"}
_RELATIVE = re.compile(r"^\s*([+\-*])\s*([0-9.eE+\-]+)\s*$")


@dataclass(frozen=True)
class Technique:
    """A known edit: knob -> new value ("+k", "-k", "*k" relative, or a literal)."""

    name: str
    changes: dict[str, Any]
    hypothesis: str
    expected_delta: float
    cost: str = "same"
    quality: str = "same"


def load_techniques(env: Environment) -> dict[str, list[Technique]]:
    """The environment's technique table, keyed by specialist. Raises EnvironmentSpecError."""
    path = env.root / TECHNIQUES_FILE
    if not path.is_file():
        raise EnvironmentSpecError(f"{env.name} has no {TECHNIQUES_FILE}; offline specialists "
                                   f"need one (format in the README)")
    raw = yaml.safe_load(path.read_text()) or {}
    table: dict[str, list[Technique]] = {}
    problems = []
    for specialist, entries in raw.items():
        if specialist == SEARCH_SPACE:
            continue  # strategies/space.py reads it
        for i, e in enumerate(entries or []):
            where = f"{specialist}[{i}]"
            if not isinstance(e, dict) or not isinstance(e.get("set"), dict) or not e.get("name"):
                problems.append(f"{where} needs a name and a 'set' mapping of knob -> value")
                continue
            if e.get("cost", "same") not in _EFFECTS or e.get("quality", "same") not in _EFFECTS:
                problems.append(f"{where}: cost and quality must be one of {sorted(_EFFECTS)}")
                continue
            table.setdefault(str(specialist), []).append(Technique(
                str(e["name"]), dict(e["set"]), str(e.get("hypothesis", e["name"])),
                float(e.get("expected_delta", 0.0)), e.get("cost", "same"),
                e.get("quality", "same")))
    unknown = set(table) - {n for s in env.specialists for n in (s.name, *s.techniques_of)}
    if unknown:
        problems.append(f"techniques for specialists not in the roster: {sorted(unknown)}")
    if problems:
        raise EnvironmentSpecError(f"{path} has problems: " + "; ".join(problems))
    return table


def find_knob(files: dict[str, str], paths: tuple[str, ...], knob: str) -> tuple[str, re.Match]:
    """(the file, the match) of knob line `NAME = <literal>  # comment` in one of `paths`:
    group 1 is the literal. Raises KeyError for a missing knob."""
    for rel in paths:
        match = re.search(rf"^{re.escape(knob)}\s*=\s*(.*?)(\s*#.*)?$", files[rel], re.M)
        if match:
            return rel, match
    raise KeyError(f"knob {knob} not found in {', '.join(paths)}")


def apply_technique(files: dict[str, str], paths: tuple[str, ...], technique: Technique,
                    profile: str) -> tuple[dict[str, str], list[str]]:
    """Apply a technique's knob changes; returns the new files and `KNOB old->new` notes.

    A knob is a top-level line `NAME = <literal>  # comment` in one of `paths`; a dict literal
    keyed by profile changes only the active profile's entry. Raises KeyError for a missing knob.
    """
    out = dict(files)
    notes = []
    for knob, change in technique.changes.items():
        rel, match = find_knob(out, paths, knob)
        literal = match.group(1)
        value = ast.literal_eval(literal)
        if isinstance(value, dict):
            if profile not in value:
                raise KeyError(f"knob {knob} has no entry for profile {profile!r}")
            old = value[profile]
            entry = re.compile(rf"(['\"]{re.escape(profile)}['\"]\s*:\s*)([^,}}]+)")
            new_literal = entry.sub(lambda m: m.group(1) + repr(_change(old, change)), literal, 1)
        else:
            old = value
            new_literal = repr(_change(old, change))
        new = _change(old, change)
        notes.append(f"{knob} {repr(old)}->{repr(new)}")
        start, end = match.span(1)
        out[rel] = out[rel][:start] + new_literal + out[rel][end:]
    return out, notes


def _change(old: Any, change: Any) -> Any:
    relative = _RELATIVE.match(change) if isinstance(change, str) else None
    if not relative:
        return change
    op, amount = relative.group(1), float(relative.group(2))
    if isinstance(old, bool) or not isinstance(old, (int, float)):
        raise KeyError(f"cannot apply {change!r} to non-numeric value {old!r}")
    new = old + amount if op == "+" else old - amount if op == "-" else old * amount
    if isinstance(old, int):
        return max(0, int(round(new)))
    return float(f"{new:.6g}")
