"""The search space of an environment: `search_space:` in its techniques.yaml.

Each entry names a knob (a top-level constant of the editable recipe, as in the technique table)
and its range: `{type: float, low: 1e-3, high: 1e-1, log: true}`, `{type: int, low: 2, high: 8}`
or `{type: categorical, choices: [0, 1, 2]}`. The recipe's own value must lie inside, so the
baseline is a point of the space. Search strategies set whole knob vectors through it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

import yaml

from ...environment import Environment
from ...errors import EnvironmentSpecError
from ...execution.workspace import read_editable
from ..techniques import SEARCH_SPACE, TECHNIQUES_FILE, Technique, apply_technique, find_knob

KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class Knob:
    """One dimension: a float (linear or log scale), an int, or a categorical's choices."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and value != int(value):
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.name} in {list(self.choices)}"
        scale = ", log" if self.log else ""
        return f"{self.name} {self.kind} [{self.low:g}, {self.high:g}{scale}]"


def declares_search_space(env: Environment) -> bool:
    """True when the environment's techniques.yaml has a `search_space` entry."""
    path = env.root / TECHNIQUES_FILE
    return path.is_file() and SEARCH_SPACE in (yaml.safe_load(path.read_text()) or {})


def load_search_space(env: Environment) -> tuple[Knob, ...]:
    """The environment's knobs, checked against its recipe at the active profile.

    Raises:
        EnvironmentSpecError: no `search_space`, a malformed entry, or a recipe value outside it.
    """
    path = env.root / TECHNIQUES_FILE
    raw = (yaml.safe_load(path.read_text()) or {}).get(SEARCH_SPACE) if path.is_file() else None
    if not isinstance(raw, dict) or not raw:
        raise EnvironmentSpecError(
            f"{env.name} declares no {SEARCH_SPACE} in {TECHNIQUES_FILE}: a search strategy "
            f"needs each knob's type and range, e.g. `LR: {{type: float, low: 0.01, high: 1, "
            f"log: true}}` (README, \"Search strategies\")")
    knobs, problems = [], []
    for name, spec in raw.items():
        knob = _knob(str(name), spec, problems)
        if knob is not None:
            knobs.append(knob)
    if not problems:
        values = knob_values(read_editable(env, env.root), env, [k.name for k in knobs],
                             problems)
        problems += [f"{k.name} = {values[k.name]!r} in the recipe lies outside its range "
                     f"({k.describe()})" for k in knobs
                     if k.name in values and not k.contains(values[k.name])]
    if problems:
        raise EnvironmentSpecError(f"{path} {SEARCH_SPACE} has problems: " + "; ".join(problems))
    return tuple(knobs)


def _knob(name: str, spec: Any, problems: list[str]) -> Knob | None:
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in KINDS:
        problems.append(f"{name}: 'type' must be one of {list(KINDS)}, got {kind!r}")
        return None
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or len(choices) < 2:
            problems.append(f"{name}: a categorical needs at least two 'choices'")
            return None
        return Knob(name, kind, choices=tuple(choices))
    low, high, log = spec.get("low"), spec.get("high"), bool(spec.get("log", False))
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not numbers or low >= high or (log and low <= 0):
        problems.append(f"{name}: needs numbers low < high (low > 0 on a log scale), got "
                        f"low={low!r}, high={high!r}")
        return None
    if kind == "int" and (low != int(low) or high != int(high)):
        problems.append(f"{name}: an int knob needs integer bounds")
        return None
    return Knob(name, kind, float(low), float(high), log)


def knob_values(files: dict[str, str], env: Environment, names: list[str],
                problems: list[str] | None = None) -> dict[str, Any]:
    """Each named knob's value in `files` (a per-profile dict: the active profile's entry).
    A knob that is not there raises KeyError, or with `problems` is listed there."""
    values = {}
    for name in names:
        try:
            value = ast.literal_eval(find_knob(files, tuple(files), name)[1].group(1))
        except KeyError:
            if problems is None:
                raise
            problems.append(f"{name} is not a top-level constant of {', '.join(files)}")
            continue
        values[name] = value.get(env.profile) if isinstance(value, dict) else value
    return values


def set_knobs(files: dict[str, str], env: Environment,
              values: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """`files` with each knob set to its value; returns the files and `KNOB old->new` notes
    for the knobs whose value changed."""
    old = knob_values(files, env, list(values))
    changed = {k: v for k, v in values.items() if old[k] != v}
    return apply_technique(files, env.editable, Technique("knobs", changed, "", 0.0),
                           env.profile)
