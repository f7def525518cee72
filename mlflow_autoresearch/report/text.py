"""Number and count formatting shared by report.md, lineage.html and the comparison table."""

from __future__ import annotations

from collections import Counter

from ..records import Direction

NONE = "-"


def score(value: float | None) -> str:
    return NONE if value is None else f"{value:.6g}"


def delta(value: float | None) -> str:
    return NONE if value is None else f"{value:+.4g}"


def percent(value: float | None) -> str:
    return NONE if value is None else f"{100 * value:.0f}%"


def counts(counter: Counter[str]) -> str:
    """`ok 3, crash 1`: most frequent first, ties by name."""
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{name} {n}" for name, n in items if n) or NONE


def better(direction: Direction) -> str:
    return "lower is better" if direction is Direction.MINIMIZE else "higher is better"
