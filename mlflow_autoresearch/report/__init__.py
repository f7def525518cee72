"""The campaign report: figures, report.md and lineage.html from a campaign's trial runs.

Pure rendering over plain `StoredRun` values (no MLflow); `report.publish` reads the runs through
the store and writes the report run. `best_score_steps` gives the `best_score` metric's history,
step = trial number.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..records import Direction
from .compare import compare
from .data import Campaign, Summary, best_steps, to_rows
from .write import ReportFigures, write_report

if TYPE_CHECKING:
    from ..store.base import StoredRun


def best_score_steps(direction: Direction, runs: Iterable[StoredRun]) -> list[tuple[int, float]]:
    """(trial number, best kept score so far) for every recorded trial from the first scored
    keep (normally the baseline) on; running trials are skipped."""
    return best_steps(direction, to_rows(runs))


__all__ = ["Campaign", "ReportFigures", "Summary", "best_score_steps", "compare",
           "write_report"]
