"""write_report: every report file for one campaign into one folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import plots
from .data import Campaign, Summary, in_flight, summarize, to_rows
from .html import lineage_html
from .markdown import report_md

if TYPE_CHECKING:
    from ..store.base import StoredRun


@dataclass(frozen=True)
class ReportFigures:
    """The files `write_report` wrote and the campaign's headline numbers."""

    progress: Path
    specialists: Path
    labels: Path
    markdown: Path
    lineage: Path
    summary: Summary

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.progress, self.specialists, self.labels, self.markdown, self.lineage)


def write_report(campaign: Campaign, runs: Sequence[StoredRun], folder: Path) -> ReportFigures:
    """Write progress.png, specialists.png, labels.png, report.md and lineage.html into
    `folder` (created if missing) from a campaign's trial runs; running trials are skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = to_rows(runs)
    summary = summarize(campaign.direction, rows, in_flight(runs))
    markdown = folder / "report.md"
    markdown.write_text(report_md(campaign, rows, summary), encoding="utf-8")
    lineage = folder / "lineage.html"
    lineage.write_text(lineage_html(campaign, rows, summary), encoding="utf-8")
    return ReportFigures(
        progress=plots.progress(campaign, rows, folder / "progress.png"),
        specialists=plots.specialists(campaign, rows, folder / "specialists.png"),
        labels=plots.labels(campaign, rows, folder / "labels.png"),
        markdown=markdown, lineage=lineage, summary=summary)
