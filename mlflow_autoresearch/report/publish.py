"""The report as MLflow keeps it: read a campaign's trials from the store, render them, and write
the campaign's report run (replacing the last one); and `compare` over campaigns by name."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import tags
from ..errors import AutoresearchError
from ..records import Direction
from ..store import TrialStore
from .compare import compare
from .data import Campaign, best_steps, to_rows
from .write import write_report

# Where lineage.html links a trial's run page for a SQLite store: `mlflow ui`'s own default.
LOCAL_UI = "http://127.0.0.1:5000"


@dataclass(frozen=True)
class Published:
    """The report run written, and its headline numbers."""

    run_id: str
    trials: int
    keeps: int
    best: float | None

    @property
    def best_text(self) -> str:
        return f"{self.best:.6g}" if self.best is not None else "none yet"


def publish(store: TrialStore, campaign_id: str, ui_url: str | None = None) -> Published:
    """Write the campaign's report run: report/progress.png, specialists.png, labels.png,
    report.md and lineage.html, `best_score` at each trial number, and the headline numbers
    as metrics (`trials`, `keeps`, `best_trial`, `baseline_score`)."""
    campaign = campaign_for(store, campaign_id, ui_url)
    runs = store.campaign_runs(campaign_id)
    with tempfile.TemporaryDirectory(prefix="autoresearch-report-") as tmp:
        figures = write_report(campaign, runs, Path(tmp))
        summary = figures.summary
        metrics = {"trials": float(summary.trials), "keeps": float(summary.keeps)}
        if summary.best_trial is not None:
            metrics["best_trial"] = float(summary.best_trial)
        if summary.baseline_score is not None:
            metrics["baseline_score"] = summary.baseline_score
        run_id = store.write_report(campaign_id, Path(tmp),
                                    best_steps(campaign.direction, to_rows(runs)), metrics)
    return Published(run_id, summary.trials, summary.keeps, summary.best_score)


def compare_campaigns(store: TrialStore, names: list[str], out_png: Path) -> str:
    """`compare` over campaigns given by name; the table it prints."""
    chosen = []
    for name in names:
        found = store.campaigns(name)
        if not found:
            raise AutoresearchError(f"there is no campaign {name!r} in {store.uri} "
                                    f"(`autoresearch status` lists them)")
        chosen.append((campaign_for(store, found[0][0]), store.campaign_runs(found[0][0])))
    try:
        return compare(chosen, out_png)
    except ValueError as exc:
        raise AutoresearchError(str(exc)) from None


def ui_base(tracking_uri: str) -> str:
    """Where the MLflow UI of a store is: the tracking server itself, or `mlflow ui`'s default
    address for a file store."""
    return (tracking_uri if tracking_uri.startswith("http") else LOCAL_UI).rstrip("/")


def campaign_url(tracking_uri: str, campaign_id: str) -> str:
    """The campaign's runs table in the MLflow UI: the model-training view (3.17 opens an
    experiment as a GenAI app without the query) and the campaign's saved view."""
    return (f"{ui_base(tracking_uri)}/#/experiments/{campaign_id}/runs?workflowType="
            f"machine_learning&viewStateShareKey={tags.VIEW_KEY}")


def campaign_for(store: TrialStore, campaign_id: str, ui_url: str | None = None) -> Campaign:
    """The report's view of a campaign; its runs link to `ui_url` (default: `ui_base`)."""
    name, found = store.experiment(campaign_id)
    base = (ui_url or ui_base(store.uri)).rstrip("/")
    return Campaign(name, campaign_id, Direction(found.get(tags.DIRECTION, "minimize")),
                    found.get(tags.SCORE_METRIC, "score"),
                    lambda run_id: f"{base}/#/experiments/{campaign_id}/runs/{run_id}")
