"""compare: several campaigns of one direction side by side, as a text table and one PNG."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import plots, text
from .data import Campaign, Row, best_steps, summarize, to_rows

if TYPE_CHECKING:
    from ..store.base import StoredRun

CHECKPOINTS = (8, 16, 24)  # trial numbers the table reports the best so far at


def _best_at(campaign: Campaign, rows: list[Row], number: int) -> float | None:
    """The best kept score after trial `number`, None if the campaign never got that far."""
    if not rows or rows[-1].number < number:
        return None
    scores = [best for n, best in best_steps(campaign.direction, rows) if n <= number]
    return scores[-1] if scores else None


def _table(entries: list[tuple[Campaign, list[Row]]]) -> str:
    head = ["campaign", "trials", "keeps", "best", *(f"best@t{n}" for n in CHECKPOINTS),
            "labels"]
    body = []
    for campaign, rows in entries:
        s = summarize(campaign.direction, rows)
        body.append([campaign.name, str(s.trials), str(s.keeps), text.score(s.best_score),
                     *(text.score(_best_at(campaign, rows, n)) for n in CHECKPOINTS),
                     text.counts(Counter(r.label for r in rows))])
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    last = len(head) - 1

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in (0, last) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join(line(cells) for cells in [head, *body])


def compare(campaigns: Sequence[tuple[Campaign, Sequence[StoredRun]]], out_png: Path) -> str:
    """A table with one row per campaign (trials, keeps, best score, best so far at trials
    8/16/24, label counts), and `out_png` with their best-so-far lines and outcome bars.
    Raises ValueError when there is no campaign or their directions differ."""
    if not campaigns:
        raise ValueError("compare needs at least one campaign")
    if len({c.direction for c, _ in campaigns}) > 1:
        which = ", ".join(f"{c.name} ({c.direction.value})" for c, _ in campaigns)
        raise ValueError(f"cannot compare campaigns with different directions: {which}")
    entries = [(c, to_rows(runs)) for c, runs in campaigns]
    plots.comparison(entries, out_png)
    return _table(entries)
