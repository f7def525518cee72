"""The only module that talks to MLflow's tracking API: trials in, `Trial` records out.

One experiment per campaign; one run per trial, whatever happened to it (trial contract in
`tags.py` and the README). Every query filters and passes `max_results`, so the loop's cost per
trial stays flat as the store grows to 10,000 runs. Not thread-safe: one loop process per campaign
(trial numbers come from it; MLflow is not a lock service).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from mlflow.entities import Metric, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException as TrackingError  # noqa: F401 (for the CLI)
from mlflow.tracking import MlflowClient

from . import tags
from .environment import Environment
from .records import Decision, Direction, FailureLabel, Outcome, Proposal, Trial

log = logging.getLogger(__name__)
LOG_TAIL_BYTES = 64_000
RECENT = 30


def connect(tracking_uri: str | None) -> MlflowClient:
    """A client on `tracking_uri` (None: MLflow's default, a SQLite file in the working directory)."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uri = tracking_uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def analyze(client: MlflowClient) -> None:
    """Refresh SQLite's planner statistics: MLflow never does, and un-analyzed stores pick
    nested loops that make best-score queries 70x slower at 10,000 runs."""
    uri = client.tracking_uri
    if uri.startswith("sqlite:///"):
        with sqlite3.connect(uri[len("sqlite:///"):], timeout=20) as db:
            db.execute("ANALYZE")


def ensure_experiment(client: MlflowClient, name: str, env: Environment) -> str:
    """The campaign's experiment id, created with a banner on first use."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    banner = (f"Auto-research campaign on **{env.name}** ({env.profile}): "
              f"{env.direction.value} `{env.score_metric}`, keep margin {env.min_delta:g}. "
              f"Each run is one trial; the run tree is the lineage tree.")
    return client.create_experiment(name, tags={
        tags.ENVIRONMENT: env.name, tags.PROFILE: env.profile,
        tags.DIRECTION: env.direction.value, tags.MLFLOW_NOTE: banner})


def search_campaigns(client: MlflowClient, name: str | None = None) -> list[tuple[str, str]]:
    """(experiment id, name) of every campaign, or of the one named."""
    query = f"tags.`{tags.ENVIRONMENT}` LIKE '%'"
    if name:
        query += f" and name = '{name}'"
    return [(e.experiment_id, e.name)
            for e in client.search_experiments(filter_string=query, max_results=1000)]


def campaign_direction(client: MlflowClient, experiment_id: str) -> Direction:
    raw = client.get_experiment(experiment_id).tags.get(tags.DIRECTION, "minimize")
    return Direction(raw)


def create_trial(client: MlflowClient, experiment_id: str, env: Environment, campaign: str,
                 number: int, proposal: Proposal, lineage_path: str, diff_sha: str,
                 run_id: str | None = None) -> tuple[str, set[str]]:
    """Open the trial's run (RUNNING) with every tag known before it runs.

    `run_id` adopts an existing run instead (the one `mlflow run` opened). Returns the run id and
    the tag keys the harness set, so `find_tampering` can tell them from the trial's own.
    """
    run_tags = {
        tags.SCHEMA_VERSION: tags.SCHEMA, tags.ENVIRONMENT: env.name, tags.CAMPAIGN: campaign,
        tags.PROFILE: env.profile, tags.TRIAL: str(number), tags.SPECIALIST: proposal.specialist,
        tags.HYPOTHESIS: _cap(proposal.hypothesis), tags.NOTES: _cap(proposal.notes),
        tags.DIFF_SHA: diff_sha, tags.LINEAGE_PATH: _cap_path(lineage_path),
    }
    if proposal.expected_delta is not None:
        run_tags[tags.EXPECTED_DELTA] = f"{proposal.expected_delta:g}"
    if proposal.parent_id:
        run_tags[tags.PARENT] = proposal.parent_id
        run_tags[tags.MLFLOW_PARENT] = proposal.parent_id
    run_tags.update({f"{tags.PREFIX}{k}": _cap(v) for k, v in proposal.tags.items()})
    if run_id is None:
        run_id = client.create_run(experiment_id, run_name=f"t{number:04d}-{proposal.specialist}",
                                   tags=run_tags).info.run_id
    else:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in run_tags.items()])
    return run_id, set(run_tags)


def run_experiment(client: MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).info.experiment_id


def get_lineage_path(client: MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).data.tags.get(tags.LINEAGE_PATH, "")


def abort_trial(client: MlflowClient, run_id: str, why: str, killed: bool = False) -> None:
    """Close a trial the harness cannot vouch for: `harness_abort`, FAILED (KILLED by the user)."""
    client.log_batch(run_id,
                     metrics=[_metric(tags.FAILURE_CODE, float(FailureLabel.HARNESS_ABORT))],
                     tags=[RunTag(tags.LABEL, FailureLabel.HARNESS_ABORT.tag),
                           RunTag(tags.EXCERPT, _cap(why))])
    status = RunStatus.KILLED if killed else RunStatus.FAILED
    client.set_terminated(run_id, RunStatus.to_string(status))


def set_pid(client: MlflowClient, run_id: str, pid: int) -> None:
    """Record the running seed's process group, so a restarted loop can reap an orphan."""
    client.set_tag(run_id, tags.PID, str(pid))


def log_proposal(client: MlflowClient, run_id: str, proposal: Proposal, context: str,
                 recipe_dir: Path | None, editable: Iterable[str]) -> None:
    """Artifacts known before the run: the diff (plus a copy the UI previews), the context the
    specialist saw, and the whole editable surface after the edit."""
    client.log_text(run_id, proposal.diff, tags.PATCH)
    client.log_text(run_id, proposal.diff, tags.PATCH_PREVIEW)
    client.log_text(run_id, context, tags.CONTEXT)
    for name, text in proposal.artifacts.items():
        client.log_text(run_id, text, f"{tags.ARTIFACT_DIR}/{name}")
    if recipe_dir is not None:
        for rel in editable:
            parent = str(Path(tags.RECIPE_DIR) / Path(rel).parent).rstrip("/.")
            client.log_artifact(run_id, str(recipe_dir / rel), parent)


def find_tampering(client: MlflowClient, run_id: str, created_tags: Iterable[str]) -> list[str]:
    """Harness-owned keys the trial's own processes wrote into its run (then removed where MLflow
    allows). A recipe can reach the tracking store; it may not write its own verdict."""
    found = []
    for key in tags.HARNESS_METRICS:
        if client.get_metric_history(run_id, key):
            found.append(f"metric {key!r}")
    known = set(created_tags) | {tags.PID}
    run = client.get_run(run_id)
    for key in run.data.tags:
        if key.startswith(tags.PREFIX) and key not in known:
            found.append(f"tag {key!r}")
            client.delete_tag(run_id, key)
    return found


def finish_trial(client: MlflowClient, run_id: str, number: int, proposal: Proposal,
                 outcome: Outcome, decision: Decision | None, delta: float | None,
                 extra_metrics: dict[str, float], run_dir: Path | None) -> None:
    """Record the verdict: label and decision tags, metrics, evaluation and logs, run note,
    then FINISHED (or FAILED for harness_abort: the harness cannot vouch for the trial)."""
    metrics = {**outcome.metrics, **proposal.metrics, **extra_metrics,
               tags.FAILURE_CODE: float(outcome.label)}
    if outcome.label is FailureLabel.OK:
        metrics[tags.SCORE] = float(outcome.score)
    if delta is not None:
        metrics[tags.DELTA_VS_BEST] = delta
    run_tags = {tags.LABEL: outcome.label.tag, tags.EXCERPT: _cap(outcome.excerpt),
                tags.MLFLOW_NOTE: render_note(number, proposal, outcome, decision, delta)}
    if decision is not None:
        run_tags[tags.DECISION] = decision.value
    client.log_batch(run_id, metrics=[_metric(k, float(v)) for k, v in metrics.items()],
                     tags=[RunTag(k, v) for k, v in run_tags.items()])
    evaluation = {"label": outcome.label.tag, "failure_code": int(outcome.label),
                  "score": outcome.score, "metrics": outcome.metrics, "excerpt": outcome.excerpt,
                  "evaluator_seconds": outcome.seconds,
                  "decision": decision.value if decision else None, "delta_vs_best": delta}
    client.log_text(run_id, json.dumps(evaluation, indent=1), tags.EVALUATION)
    if run_dir is not None:
        _log_logs(client, run_id, run_dir)
    status = RunStatus.FAILED if outcome.label is FailureLabel.HARNESS_ABORT else RunStatus.FINISHED
    client.set_terminated(run_id, RunStatus.to_string(status))


def render_note(number: int, proposal: Proposal, outcome: Outcome, decision: Decision | None,
                delta: float | None) -> str:
    """The run page's Markdown description: the trial's story without opening artifacts."""
    lines = [f"**Trial {number}** by `{proposal.specialist}`: {proposal.hypothesis}", ""]
    verdict = f"Label **{outcome.label.tag}**"
    if outcome.score is not None:
        verdict += f", score {outcome.score:.6g}"
    if decision is not None:
        verdict += f", decision **{decision.value}**"
    if delta is not None:
        verdict += f" (delta vs best {delta:+.4g})"
    lines.append(verdict + ".")
    if outcome.excerpt:
        lines += ["", "```", outcome.excerpt[-600:], "```"]
    lines += ["", "Diff: `trial/patch.diff.txt`; recipe: `trial/recipe/`; "
                  "what the specialist saw: `trial/context.md`."]
    return "\n".join(lines)


def recover_orphans(client: MlflowClient, experiment_id: str) -> list[tuple[Trial, int | None]]:
    """Relabel runs a dead loop left RUNNING as `harness_abort` (hidden from specialists).

    Returns each orphan with the process group it recorded, for the caller to reap.
    """
    runs = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=100)
    orphans = []
    for run in runs:
        pid = run.data.tags.get(tags.PID, "")
        abort_trial(client, run.info.run_id,
                    "the loop died while this trial ran; relabelled at the next start")
        orphans.append((trial_from_run(client.get_run(run.info.run_id)),
                        int(pid) if pid.isdigit() else None))
    return orphans


def get_trial(client: MlflowClient, run_id: str) -> Trial:
    return trial_from_run(client.get_run(run_id))


def next_trial_number(client: MlflowClient, experiment_id: str) -> int:
    """One past the newest trial's number (0 for an empty campaign): trials run in sequence."""
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"],
                              max_results=1)
    return trial_from_run(runs[0]).number + 1 if runs else 0


def search_leaderboard(client: MlflowClient, experiment_id: str, direction: Direction,
                       limit: int = 20) -> list[Trial]:
    """Kept trials and the baseline, best first."""
    order = "ASC" if direction is Direction.MINIMIZE else "DESC"
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{tags.LABEL}` = 'ok' and tags.`{tags.DECISION}` != '{Decision.DISCARD.value}'",
        order_by=[f"metrics.{tags.SCORE} {order}"], max_results=limit)
    return [trial_from_run(r) for r in runs]


def search_ancestors(client: MlflowClient, trial_id: str) -> list[Trial]:
    """The chain from the root to `trial_id` (inclusive), root first: one `IN` query."""
    run = client.get_run(trial_id)
    path = [p for p in run.data.tags.get(tags.LINEAGE_PATH, "").split("/") if p]
    if not path:
        return [trial_from_run(run)]
    quoted = ", ".join(f"'{p}'" for p in path)
    runs = client.search_runs([run.info.experiment_id], f"attributes.run_id IN ({quoted})",
                              max_results=len(path))
    by_id = {r.info.run_id: trial_from_run(r) for r in runs}
    return [by_id[p] for p in path if p in by_id] + [trial_from_run(run)]


def search_children(client: MlflowClient, experiment_id: str, parent_id: str,
                    limit: int = 100) -> list[Trial]:
    """Direct children of a trial, failures included, newest first."""
    runs = client.search_runs([experiment_id], f"tags.`{tags.MLFLOW_PARENT}` = '{parent_id}'",
                              order_by=["attributes.start_time DESC"], max_results=limit)
    return [trial_from_run(r) for r in runs]


def search_recent(client: MlflowClient, experiment_id: str, limit: int = RECENT,
                  specialist: str | None = None) -> list[Trial]:
    """The newest finished trials (harness_abort hidden), optionally of one specialist."""
    query = f"tags.`{tags.LABEL}` != '{FailureLabel.HARNESS_ABORT.tag}'"
    if specialist:
        query += f" and tags.`{tags.SPECIALIST}` = '{specialist}'"
    runs = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"],
                              max_results=limit)
    return [trial_from_run(r) for r in runs]


def search_campaign_trials(client: MlflowClient, experiment_id: str,
                           limit: int = 10_000) -> list[Trial]:
    """Every trial of a campaign, oldest first (status and summaries, not the loop's hot path)."""
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time ASC"],
                              max_results=limit)
    return [trial_from_run(r) for r in runs]


def search_llm_cost(client: MlflowClient, experiment_id: str) -> float:
    """Dollars the campaign's LLM specialists spent in earlier invocations (for the cost cap)."""
    runs = client.search_runs([experiment_id], f"metrics.{tags.LLM_COST_USD} > 0",
                              max_results=50_000)
    return sum(r.data.metrics[tags.LLM_COST_USD] for r in runs)


def load_recipe(client: MlflowClient, run_id: str, editable: Iterable[str]) -> dict[str, str]:
    """The editable surface a trial ran, read back from its `trial/recipe/` artifacts."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(client.download_artifacts(run_id, tags.RECIPE_DIR, tmp))
        return {rel: (local / rel).read_text() for rel in editable}


def trial_from_run(run: Run) -> Trial:
    """A `Trial` from an MLflow run. Runs of a future schema are read as far as they match."""
    t, m = run.data.tags, run.data.metrics
    label = t.get(tags.LABEL)
    decision = t.get(tags.DECISION)
    return Trial(
        run_id=run.info.run_id,
        number=int(t.get(tags.TRIAL, "-1")),
        specialist=t.get(tags.SPECIALIST, ""),
        hypothesis=t.get(tags.HYPOTHESIS, ""),
        parent_id=t.get(tags.PARENT),
        status=run.info.status,
        label=FailureLabel.from_tag(label) if label else None,
        score=m.get(tags.SCORE) if label == FailureLabel.OK.tag else None,
        decision=Decision(decision) if decision else None,
        delta_vs_best=m.get(tags.DELTA_VS_BEST),
        notes=t.get(tags.NOTES, ""),
        excerpt=t.get(tags.EXCERPT, ""),
        diff_sha=t.get(tags.DIFF_SHA, ""),
        start_time=run.info.start_time or 0,
    )


def _log_logs(client: MlflowClient, run_id: str, run_dir: Path) -> None:
    for path in sorted(run_dir.rglob("*.txt")):
        if "workspace" in path.relative_to(run_dir).parts:
            continue
        data = path.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace")
        rel = str(path.relative_to(run_dir)).replace(os.sep, "__")
        client.log_text(run_id, data, f"{tags.LOGS_DIR}/{rel}")


def _metric(key: str, value: float) -> Metric:
    return Metric(key, value, int(time.time() * 1000), 0)


def _cap(text: str) -> str:
    return text if len(text) <= tags.MAX_TAG_CHARS else text[: tags.MAX_TAG_CHARS - 1] + "…"


def _cap_path(path: str) -> str:
    """Keep the newest ancestors when a lineage path would overflow a tag."""
    if len(path) <= tags.MAX_TAG_CHARS:
        return path
    ids = [p for p in path.split("/") if p]
    while len("/" + "/".join(ids) + "/") > tags.MAX_TAG_CHARS:
        ids.pop(0)
    return "/" + "/".join(ids) + "/"
