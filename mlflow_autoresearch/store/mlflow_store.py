"""`MlflowStore`: the system of record on MLflow tracking, and the only code that talks to it.

One experiment per campaign, one run per trial whatever happened to it (the README's trial
contract). A trial is written twice: `create_trial` when it starts (the proposal: tags, the diff,
the context) and `finish_trial` when it ends (the verdict: artifacts, one batch of metrics and
tags with the label, then the run's final status). The final status is the marker: a RUNNING run
is a trial in flight, or one a dead loop left half-written, which `recover` turns into
`harness_abort`; queries never count it as a result. Every MLflow or connection fault surfaces as
one `StoreError` line.

Transient faults (the store down or restarting, HTTP 429 or 5xx, SQLite's "database is locked")
are retried with backoff for up to `_retry.RETRY_SECONDS` per store call
(`AUTORESEARCH_STORE_RETRY_SECONDS`; 0 turns retries off), saying so once on stderr; any other
fault (a missing run, a bad value, another 4xx) fails at once.

Not thread-safe beyond the lease's heartbeat thread: one loop process writes a campaign, and the
campaign lease (`acquire_lease`) makes sure of it.
"""

from __future__ import annotations

import functools
import math
import os
import sqlite3
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .. import tags
from ..audit import knob_values
from ..diffs import diff_lines, diff_sha
from ..environment import Environment
from ..errors import AutoresearchError, StoreError
from ..lineage import SATURATION_WINDOW, LineageView, lineage_path
from ..records import (KEPT, Decision, Direction, FailureLabel, Outcome, Proposal, Trial,
                       TrialResult)
from . import _search
from ._lease import Lease, acquire
from ._retry import BUDGET, Budget, RetryingClient, attempt, retry_seconds
from ._records import cap, cap_path, quote, tag_is, trial_from_run
from ._render import (campaign_view, render_banner, render_evaluation, render_note,
                      render_replay_note, run_name)
from ._traces import record_calls
from .base import StoredRun

# Specialists read recipes back every turn: MLflow's per-download progress bar would print
# several bars per trial line in the terminal. A user who wants it sets the variable.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
PROBE_SECONDS = 5.0
PARAMS_PER_BATCH = 100  # MLflow's cap on params in one log_batch
MAX_PARAM_CHARS = 6000  # and on a param's value
MAX_AGENT_KEYS = 40  # a proposal's own tags and metrics, each (the final batch must stay one)
_OURS = (tags.MLFLOW_PARENT, tags.MLFLOW_NOTE, tags.MLFLOW_RUN_NAME)
_MASKED = (tags.SCORE, tags.DELTA_VS_BEST)  # only a verdict may carry these


def _faults_as_store_errors(cls):
    """Wrap every public method so MLflow and connection faults become one-line StoreErrors, and
    give each outermost call its retry budget (see `_attempt`)."""
    def wrap(method):
        @functools.wraps(method)
        def wrapped(self, *args, **kwargs):
            fresh = BUDGET.get() is None
            token = BUDGET.set(Budget(self.uri, retry_seconds())) if fresh else None
            try:
                return method(self, *args, **kwargs)
            except AutoresearchError:
                raise
            except (MlflowException, OSError, sqlite3.Error) as exc:
                detail = " ".join(str(exc).split()) or type(exc).__name__
                raise StoreError(f"the tracking store at {self.uri} failed: {detail}") from exc
            finally:
                if token is not None:
                    BUDGET.reset(token)
        return wrapped
    for name, value in list(vars(cls).items()):
        if callable(value) and not name.startswith("_"):
            setattr(cls, name, wrap(value))
    return cls


@_faults_as_store_errors
class MlflowStore:
    """The campaign's runs in an MLflow tracking store (SQLite file, server, database).

    Args:
        tracking_uri: None means `sqlite:///mlflow.db` in the working directory.
        must_exist: for read-only commands: a SQLite file that does not exist is an error,
            never created empty.

    Raises:
        StoreError: no server answers at an http(s) URI within PROBE_SECONDS, or `must_exist`
            and there is no store.
    """

    def __init__(self, tracking_uri: str | None = None, must_exist: bool = False):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.uri = default_uri(tracking_uri)
        _probe(self.uri, must_exist)
        self.client = RetryingClient(MlflowClient(self.uri))
        self._leases: dict[str, Lease] = {}
        self._controls: dict[str, dict[str, str]] = {}  # campaign id -> control tags of trials
        self._names: dict[str, str] = {}
        # run id -> what the harness wrote at the start, to find what else wrote into the run
        self._written: dict[str, tuple[dict[str, str], dict[str, float]]] = {}

    # ---- campaigns ------------------------------------------------------------------------

    def open_campaign(self, name: str, env: Environment, kind: str = tags.CAMPAIGN_KIND,
                      controls: dict[str, str] | None = None) -> str:
        """The experiment id of campaign (or evaluations experiment) `name`, created on first use.
        `controls` (tags.CONTROL_*) go on the experiment and on every trial this store opens in
        it; a campaign keeps the controls it started with.

        Raises:
            AutoresearchError: `name` holds the other kind (a campaign is never a place for
                standalone evaluations, nor the reverse), or ran under other controls.
        """
        controls = controls or {}
        found = self.client.get_experiment_by_name(name)
        if found is None:
            banner = render_banner(env, kind)
            experiment_id = self.client.create_experiment(name, tags={
                tags.KIND: kind, tags.ENVIRONMENT: env.name, tags.PROFILE: env.profile,
                tags.DIRECTION: env.direction.value, tags.SCORE_METRIC: env.score_metric,
                tags.MLFLOW_NOTE: banner, **_ui_tags(), **controls})
        else:
            _check_kind(found.name, found.tags, kind)
            for key, value in _ui_tags().items():  # campaigns opened before these existed
                if key not in found.tags:
                    self.client.set_experiment_tag(found.experiment_id, key, value)
            for key, value in controls.items():
                ran = found.tags.get(key, tags.CONTROL_DEFAULTS.get(key))
                if ran != value:
                    raise AutoresearchError(
                        f"campaign {found.name!r} ran with {_as_flag(key, ran)}, not "
                        f"{_as_flag(key, value)}: continue it with {_as_flag(key, ran)}, or name "
                        f"another --experiment")
            experiment_id = found.experiment_id
        self._controls[experiment_id] = controls
        return experiment_id

    def check_kind(self, experiment_id: str, kind: str) -> None:
        """Raise AutoresearchError when `experiment_id` holds the other kind of runs."""
        experiment = self.client.get_experiment(experiment_id)
        _check_kind(experiment.name, experiment.tags, kind)

    def campaigns(self, name: str | None = None) -> list[tuple[str, str]]:
        """(experiment id, name) of every campaign in the store, or of the one named."""
        query = f"tags.`{tags.ENVIRONMENT}` LIKE '%'"
        if name:
            query += f" and name = {quote(name)}"
        found = self.client.search_experiments(filter_string=query, max_results=1000)
        return [(e.experiment_id, e.name) for e in found if _kind(e.tags) == tags.CAMPAIGN_KIND]

    def campaign_of(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.experiment_id

    def direction(self, campaign_id: str) -> Direction:
        raw = self.client.get_experiment(campaign_id).tags.get(tags.DIRECTION, "minimize")
        return Direction(raw)

    def keep_margin(self, campaign_id: str) -> tuple[float, str] | None:
        """The keep margin in force on the campaign and its source (`spec`, `measured`)."""
        found = self.client.get_experiment(campaign_id).tags
        if tags.MIN_DELTA not in found:
            return None
        return float(found[tags.MIN_DELTA]), found.get(tags.MIN_DELTA_SOURCE, "spec")

    def record_margin(self, campaign_id: str, margin: float, source: str,
                      baseline_id: str | None = None, scores: tuple[float, ...] = ()) -> None:
        """Put the margin in force on the campaign; a measured one also puts the repeats'
        scores, their std and their count on the baseline run."""
        if scores and baseline_id:
            std = statistics.stdev(scores)
            now = int(time.time() * 1000)
            self.client.log_batch(baseline_id, metrics=[
                Metric(tags.SCORE_STD, std, now, 0),
                Metric(tags.NOISE_REPEATS, float(len(scores)), now, 0),
                *(Metric(tags.NOISE_SCORE, s, now, i) for i, s in enumerate(scores))])
        self.client.set_experiment_tag(campaign_id, tags.MIN_DELTA, f"{margin:.6g}")
        self.client.set_experiment_tag(campaign_id, tags.MIN_DELTA_SOURCE, source)

    def analyze(self) -> None:
        """Refresh SQLite's planner statistics: MLflow never does, and un-analyzed stores pick
        nested loops that make best-score queries 70x slower at 10,000 runs."""
        if self.uri.startswith("sqlite:///"):
            attempt(_analyze, self.uri[len("sqlite:///"):])

    def check_writable(self) -> None:
        """Write a tag on the default experiment and remove it again; StoreError if refused."""
        key = f"{tags.PREFIX}doctor"
        try:
            self.client.set_experiment_tag("0", key, str(time.time()))
            self.client.delete_experiment_tag("0", key)
        except MlflowException as exc:
            raise StoreError(f"the tracking store at {self.uri} refused a write: "
                             f"{exc.message.splitlines()[0]}") from None

    def acquire_lease(self, campaign_id: str, take_over: bool = False) -> Lease:
        """Hold the campaign for this loop until `Lease.release` (see `_lease`)."""
        name = self._name(campaign_id)
        lease = acquire(self.client, campaign_id, name, take_over)
        self._leases[campaign_id] = lease
        return lease

    def recover(self, campaign_id: str) -> list[tuple[Trial, str]]:
        """Close the trials a gone loop left RUNNING; returns each with the process group it
        recorded ("" if none), for the caller to reap.

        Call while holding the lease: any RUNNING trial another loop opened is then stale (its
        heartbeat stopped, or its holder died here). It becomes `harness_abort`, whatever was
        half-written into it (a score, a decision, even a label) removed or masked: a trial is a
        result only once its status is final. A finished run is never touched.
        """
        lease = self._leases[campaign_id]
        ended = lease.previous.heartbeat if lease.previous else time.time()
        recovered = []
        for run in _search.running(self.client, campaign_id):
            if run.data.tags.get(tags.LEASE_TOKEN) == lease.token:
                continue
            self._abort_orphan(run, ended)
            recovered.append((self.get_trial(run.info.run_id), run.data.tags.get(tags.PID, "")))
        return recovered

    def _abort_orphan(self, run, ended: float) -> None:
        why = "the loop died while this trial ran; relabelled when a loop took the campaign over"
        seconds = max(0.0, ended - (run.info.start_time or 0) / 1000)
        result = TrialResult(Outcome(FailureLabel.HARNESS_ABORT, excerpt=why), {},
                             {"harness.txt": why + "\n"},
                             int(run.data.metrics.get(tags.DIFF_LINES, 0)), seconds, 0.0)
        drop = [tags.DECISION] if tags.DECISION in run.data.tags else []
        self._write_verdict(run, int(run.data.tags.get(tags.TRIAL, "-1")),
                            _stub_proposal(run.data.tags), result, None, None, {}, drop)

    # ---- one trial ------------------------------------------------------------------------

    def next_number(self, campaign_id: str) -> int:
        return _search.next_number(self.client, campaign_id)

    def create_trial(self, campaign_id: str, env: Environment, number: int, proposal: Proposal,
                     context: str, run_id: str | None = None, sandbox: str = "none") -> str:
        """Open the trial's run (RUNNING) with the proposal: tags, the diff and the context the
        specialist saw, and the sandbox its recipe code runs in (`bwrap` or `none`). `run_id`
        adopts a run someone else opened (`mlflow run`)."""
        lease = self._leases.get(campaign_id)
        if lease is not None:
            lease.verify()
        parent_path = ""
        if proposal.parent_id:
            parent_path = self.client.get_run(proposal.parent_id).data.tags.get(tags.LINEAGE_PATH, "")
        run_tags = {
            tags.SCHEMA_VERSION: tags.SCHEMA, tags.ENVIRONMENT: env.name,
            tags.CAMPAIGN: self._name(campaign_id), tags.PROFILE: env.profile,
            tags.TRIAL: str(number), tags.SPECIALIST: proposal.specialist,
            tags.HYPOTHESIS: cap(proposal.hypothesis), tags.NOTES: cap(proposal.notes),
            tags.EXPECTED_DELTA: f"{proposal.expected_delta:g}"
            if proposal.expected_delta is not None else "unknown",
            tags.DIFF_SHA: diff_sha(proposal.diff),
            tags.LINEAGE_PATH: cap_path(lineage_path(proposal.parent_id, parent_path)),
            tags.MLFLOW_RUN_NAME: f"t{number:04d}-{proposal.specialist}",
            tags.SANDBOX: sandbox, tags.TIME_BASIS: env.time_basis,
            **self._controls.get(campaign_id, {}),
        }
        if run_id is None:  # an adopted `mlflow run` keeps the entry point it was started with
            run_tags[tags.MLFLOW_ENTRY_POINT] = env.entry_point
        if lease is not None:
            run_tags[tags.LEASE_TOKEN] = lease.token
        if proposal.parent_id:
            run_tags[tags.PARENT] = run_tags[tags.MLFLOW_PARENT] = proposal.parent_id
        if proposal.retry_of:
            run_tags[tags.RETRY_OF] = proposal.retry_of
        if len(proposal.tags) > MAX_AGENT_KEYS or len(proposal.metrics) > MAX_AGENT_KEYS:
            raise AutoresearchError(f"a proposal may carry at most {MAX_AGENT_KEYS} tags and "
                                    f"{MAX_AGENT_KEYS} metrics of its own")
        run_tags.update({f"{tags.AGENT_TAG_PREFIX}{k}": cap(v) for k, v in proposal.tags.items()})
        metrics = {tags.TRIAL_NUMBER: float(number), tags.DIFF_LINES: float(diff_lines(proposal.diff))}
        if run_id is None:
            run_id = self.client.create_run(campaign_id, run_name=run_tags[tags.MLFLOW_RUN_NAME],
                                            tags=run_tags).info.run_id
        else:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in run_tags.items()])
        self.client.log_batch(run_id, metrics=[_metric(k, v) for k, v in metrics.items()])
        self._written[run_id] = (run_tags, metrics)
        self.client.log_text(run_id, proposal.diff, tags.PATCH)
        self.client.log_text(run_id, proposal.diff, tags.PATCH_PREVIEW)
        self.client.log_text(run_id, context, tags.CONTEXT)
        for name, text in proposal.artifacts.items():
            self.client.log_text(run_id, text, f"{tags.ARTIFACT_DIR}/{name}")
        record_calls(self.client, campaign_id, run_id,
                     f"propose t{number:04d} ({proposal.specialist})", proposal.calls)
        return run_id

    def record_processes(self, run_id: str, marker: str) -> None:
        """Record the process group running now, so a loop that takes over can reap it."""
        self.client.set_tag(run_id, tags.PID, marker)
        self._written[run_id][0][tags.PID] = marker

    def written_tags(self, run_id: str) -> dict[str, str] | None:
        """The harness tags this store wrote into the trial's run (`create_trial`,
        `record_processes`), None if it wrote none: what `finish_trial(written=...)` restores
        when another process finishes the trial (the outbox keeps them with its record)."""
        found = self._written.get(run_id)
        return dict(found[0]) if found else None

    def find_tampering(self, run_id: str) -> list[str]:
        """Keys that something other than the harness wrote into the trial's run: harness tags
        with another value (or removed), new `autoresearch.*` tags, any metric, any param named
        like a knob (upper case: the store logs knobs only with the verdict). Checked by
        value: a recipe must not write its own verdict, number or lineage."""
        written_tags, written_metrics = self._written[run_id]
        run = self.client.get_run(run_id)
        found = [f"tag {k!r}" for k, v in run.data.tags.items()
                 if (k.startswith(tags.PREFIX) or k in _OURS) and written_tags.get(k) != v]
        found += [f"tag {k!r} (removed)" for k in written_tags if k not in run.data.tags]
        found += [f"metric {k!r}" for k, v in run.data.metrics.items()
                  if written_metrics.get(k) != v]
        found += [f"param {k!r}" for k in run.data.params if k.isupper()]  # knobs: ours, later
        return sorted(found)

    def finish_trial(self, run_id: str, number: int, proposal: Proposal, result: TrialResult,
                     decision: Decision | None, delta: float | None,
                     tampered: list[str] = (), written: dict[str, str] | None = None) -> Trial:
        """Record the verdict: the recipe as it ran, the evaluation, the logs, then one final
        batch (metrics, then every harness tag rewritten with its value and the label), then the
        run's status: FINISHED, or FAILED for harness_abort, KILLED when the user interrupted.

        `written` are the harness tags of the run (`written_tags`), for a trial another process
        created; by default this store's own. With neither (no process knows them any more) the
        run's tags stay as they are, `tampered` or not: none can be told to be ours.

        Raises:
            StoreError: the run is no longer RUNNING (a finished run is never rewritten).
            LeaseError: another loop took the campaign over.
        """
        run = self.client.get_run(run_id)
        lease = self._leases.get(run.info.experiment_id)
        if lease is not None:
            lease.verify()
        if run.info.status != "RUNNING":
            raise StoreError(f"t{number:04d} ({run_id}) is already {run.info.status}: a finished "
                             f"run is never rewritten")
        if written is None:
            written = self.written_tags(run_id)
        verdict = {tags.LABEL, tags.EXCERPT, tags.MLFLOW_NOTE, tags.MLFLOW_RUN_NAME,
                   tags.AUDIT_TOUCHED, tags.AUDIT_IN_DOMAIN,
                   *([tags.DECISION] if decision else []),
                   *([tags.CONFIRM] if result.confirmed else [])}
        stray = [k for k in run.data.tags if tampered and written is not None
                 and (k.startswith(tags.PREFIX) or k in _OURS) and k not in written
                 and k not in verdict]
        self._write_verdict(run, number, proposal, result, decision, delta, written or {},
                            stray, tampered)
        self._written.pop(run_id, None)  # only now: a failed write leaves it for the outbox
        return self.get_trial(run_id)

    def _write_verdict(self, run, number: int, proposal: Proposal, result: TrialResult,
                       decision: Decision | None, delta: float | None,
                       rewrite: dict[str, str], drop: list[str], tampered: list[str] = ()) -> None:
        """The verdict's writes, in order: the recipe as it ran, the evaluation, the logs, the
        `drop` keys deleted, one batch (metrics, then `rewrite` and the verdict's tags), and last
        the final status. Where something else wrote metrics first (a tampering recipe, a
        half-finished record), ours go at a later step so they are the latest, and a score or
        delta this outcome does not carry is masked with NaN."""
        run_id, outcome = run.info.run_id, result.outcome
        metrics = {**outcome.metrics,
                   **{f"{tags.AGENT_METRIC_PREFIX}{k}": v for k, v in proposal.metrics.items()},
                   tags.TRIAL_NUMBER: float(number), tags.DIFF_LINES: float(result.diff_lines),
                   tags.TRIAL_SECONDS: round(result.trial_seconds, 4),
                   tags.HARNESS_SECONDS: round(result.harness_seconds, 4),
                   tags.FAILURE_CODE: float(outcome.label),
                   tags.KEPT_METRIC: 1.0 if decision in KEPT else 0.0}
        if outcome.label is FailureLabel.OK:
            metrics[tags.SCORE] = float(outcome.score)
        if delta is not None:
            metrics[tags.DELTA_VS_BEST] = delta
        step = 0
        if tampered or any(k in run.data.metrics for k in _MASKED):
            step = self._next_step(run_id, [k for k in run.data.metrics
                                            if k in metrics or k in _MASKED])
        metrics.update({k: math.nan for k in _MASKED if k in run.data.metrics and k not in metrics})
        self._log_files(run_id, result, decision, delta,
                        {"harness.txt": _harness_log(outcome, result, tampered), **result.logs})
        for key in drop:
            self.client.delete_tag(run_id, key)
        parent = self._parent_number(proposal.parent_id)
        note = render_note(number, proposal, outcome, decision, delta,
                           (parent, proposal.parent_id, run.info.experiment_id))
        final = {**rewrite, tags.LABEL: outcome.label.tag, tags.EXCERPT: cap(outcome.excerpt),
                 tags.MLFLOW_NOTE: note,
                 tags.MLFLOW_RUN_NAME: run_name(number, proposal.specialist, outcome, decision)}
        if decision is not None:
            final[tags.DECISION] = decision.value
        if result.confirmed:
            final[tags.CONFIRM] = "passed" if decision in KEPT else "failed"
        if result.audit is not None:
            final[tags.AUDIT_TOUCHED] = cap(result.audit.describe())
            final[tags.AUDIT_IN_DOMAIN] = result.audit.in_domain
        final.update({tags.WHERE[k]: v for k, v in result.where.items()})
        self._log_knobs(run, result.recipe)
        self._final_batch(run_id, metrics, final, step)
        self.client.set_terminated(run_id, _status(outcome.label, result.killed))

    def _log_files(self, run_id: str, result: TrialResult, decision: Decision | None,
                   delta: float | None, logs: dict[str, str]) -> None:
        """A measured recipe's files: the recipe as it ran, the evaluation, the logs."""
        for rel, text in result.recipe.items():
            self.client.log_text(run_id, text, f"{tags.RECIPE_DIR}/{rel}")
        self.client.log_text(run_id, render_evaluation(result.outcome, decision, delta, result),
                             tags.EVALUATION)
        for name, text in logs.items():
            self.client.log_text(run_id, text, f"{tags.LOGS_DIR}/{name}")

    def _log_knobs(self, run, recipe: dict[str, str]) -> None:
        """The knob values the trial's recipe ran with, as params (logged once: MLflow never
        changes a param; one something else logged first is left, and flagged as tampering)."""
        values = knob_values(recipe, run.data.tags.get(tags.PROFILE, ""))
        params = [Param(k, v[:MAX_PARAM_CHARS]) for k, v in values.items()
                  if k not in run.data.params]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            self.client.log_batch(run.info.run_id, params=params[i:i + PARAMS_PER_BATCH])

    def _parent_number(self, parent_id: str | None) -> int | None:
        if not parent_id:
            return None
        return int(self.client.get_run(parent_id).data.tags.get(tags.TRIAL, "-1"))

    def _final_batch(self, run_id: str, metrics: dict[str, float], final_tags: dict[str, str],
                     step: int) -> None:
        """One log_batch (MLflow commits its metrics, then its tags); the status follows it."""
        self.client.log_batch(run_id, metrics=[_metric(k, v, step) for k, v in metrics.items()],
                              tags=[RunTag(k, v) for k, v in final_tags.items()])

    def _next_step(self, run_id: str, keys: list[str]) -> int:
        steps = [m.step for k in keys for m in self.client.get_metric_history(run_id, k)]
        return max(steps, default=-1) + 1

    # ---- reading back ---------------------------------------------------------------------

    def get_trial(self, run_id: str) -> Trial:
        return trial_from_run(self.client.get_run(run_id))

    def load_recipe(self, run_id: str, editable: tuple[str, ...]) -> dict[str, str]:
        """The editable surface a trial ran, read back from its `trial/recipe/` artifacts."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(self.client.download_artifacts(run_id, tags.RECIPE_DIR, tmp))
            return {rel: (local / rel).read_text() for rel in editable}

    def read_text(self, run_id: str, path: str) -> str:
        """One text artifact of a run, e.g. `trial/evaluation.json`."""
        with tempfile.TemporaryDirectory() as tmp:
            return Path(self.client.download_artifacts(run_id, path, tmp)).read_text()

    def load_proposal(self, run_id: str) -> Proposal:
        """A trial's proposal as it was recorded, marked as a retry of that trial."""
        t = self.client.get_run(run_id).data.tags
        diff = self.read_text(run_id, tags.PATCH)
        expected = t.get(tags.EXPECTED_DELTA, "")
        agent_tags = {k[len(tags.AGENT_TAG_PREFIX):]: v for k, v in t.items()
                      if k.startswith(tags.AGENT_TAG_PREFIX)}
        return Proposal(t[tags.SPECIALIST], t[tags.HYPOTHESIS], diff, t.get(tags.PARENT),
                        _float_or_none(expected), t.get(tags.NOTES, ""), tags=agent_tags,
                        retry_of=run_id)

    def raw(self, run_id: str) -> StoredRun:
        """Everything MLflow holds for a run, for audits and contract checks."""
        run = self.client.get_run(run_id)
        paths, folders = [], [""]
        while folders:
            for item in self.client.list_artifacts(run_id, folders.pop() or None):
                (folders if item.is_dir else paths).append(item.path)
        return StoredRun(run_id, run.info.run_name, run.info.status, dict(run.data.tags),
                         dict(run.data.metrics), tuple(sorted(paths)), dict(run.data.params))

    # ---- runs that are not trials: the report, replays ------------------------------------

    def campaign_runs(self, campaign_id: str) -> list[StoredRun]:
        """Every trial run of a campaign, oldest first, with its tags, metrics and params (no
        artifact listing): what a report is drawn from."""
        runs = self.client.search_runs([campaign_id], f"tags.`{tags.TRIAL}` LIKE '%'",
                                       order_by=["attributes.start_time ASC"],
                                       max_results=50_000)
        return [StoredRun(r.info.run_id, r.info.run_name, r.info.status, dict(r.data.tags),
                          dict(r.data.metrics), (), dict(r.data.params)) for r in runs]

    def write_report(self, campaign_id: str, folder: Path, steps: list[tuple[int, float]],
                     metrics: dict[str, float]) -> str:
        """The campaign's report run, replacing the last one: `folder`'s files under
        `report/`, `best_score` at each step (trial number), and `metrics`. Returns its id."""
        old = self._reports(campaign_id)
        run_id = self.client.create_run(campaign_id, run_name="report", tags={
            tags.KIND: tags.REPORT_KIND,
            tags.MLFLOW_NOTE: "The campaign's report: `report/report.md`, the figures, and the "
                              "lineage tree in `report/lineage.html`. Replaced by the next "
                              "`autoresearch report`; never a trial."}).info.run_id
        self.client.log_artifacts(run_id, str(folder), tags.REPORT_DIR)
        now = int(time.time() * 1000)
        batch = [Metric(tags.BEST_SCORE, v, now, step) for step, v in steps]
        batch += [Metric(k, v, now, 0) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):  # MLflow's cap on metrics in one log_batch
            self.client.log_batch(run_id, metrics=batch[i:i + 1000])
        self.client.set_terminated(run_id)
        for run in old:  # only once the new one is whole
            self.client.delete_run(run.info.run_id)
        return run_id

    def report_run(self, campaign_id: str) -> str | None:
        """The campaign's report run, None before the first report."""
        found = self._reports(campaign_id)
        return found[0].info.run_id if found else None

    def _reports(self, campaign_id: str) -> list:
        return self.client.search_runs([campaign_id], tag_is(tags.KIND, tags.REPORT_KIND),
                                       order_by=["attributes.start_time DESC"], max_results=100)

    def record_replay(self, campaign_id: str, of: str, result: TrialResult,
                      seeds: tuple[int, ...], profile: str) -> str:
        """A run measuring trial `of`'s recipe again: tagged `replay_of`, never a trial (no
        trial tag, label or decision), so no lineage query counts it. Returns its id."""
        trial = self.get_trial(of)
        outcome = result.outcome
        run_id = self.client.create_run(campaign_id, run_name=f"replay-t{trial.number:04d}",
                                        tags={
            tags.KIND: tags.REPLAY_KIND, tags.REPLAY_OF: of, tags.REPLAY_LABEL: outcome.label.tag,
            tags.PROFILE: profile, tags.EXCERPT: cap(outcome.excerpt),
            tags.MLFLOW_NOTE: render_replay_note(trial, outcome, seeds, profile),
        }).info.run_id
        self._log_files(run_id, result, None, None, result.logs)
        metrics = {**outcome.metrics, tags.TRIAL_SECONDS: round(result.trial_seconds, 4),
                   tags.FAILURE_CODE: float(outcome.label)}
        if outcome.score is not None:
            metrics[tags.SCORE] = float(outcome.score)
        self.client.log_batch(run_id, metrics=[_metric(k, v) for k, v in metrics.items()])
        self._log_knobs(self.client.get_run(run_id), result.recipe)
        self.client.set_terminated(run_id, _status(outcome.label, result.killed))
        return run_id

    def experiment(self, campaign_id: str) -> tuple[str, dict[str, str]]:
        """A campaign's name and tags."""
        found = self.client.get_experiment(campaign_id)
        return found.name, dict(found.tags)

    # ---- queries --------------------------------------------------------------------------

    def best(self, campaign_id: str, direction: Direction) -> Trial | None:
        board = _search.leaderboard_runs(self.client, campaign_id, direction, 1)
        return trial_from_run(board[0]) if board else None

    def baseline(self, campaign_id: str) -> Trial | None:
        """The measured baseline: the newest baseline trial the harness could vouch for."""
        found = _search.recent(self.client, campaign_id, 1, "baseline")
        return found[0] if found else None

    def view(self, campaign_id: str, direction: Direction, specialist: str,
             baseline: Trial | None) -> LineageView:
        """Everything a specialist sees in one turn, from bounded queries (4 of them, mostly)."""
        board = _search.leaderboard_runs(self.client, campaign_id, direction)
        best = board[0] if board else None
        recent, mine = _search.recent_and_mine(self.client, campaign_id, specialist,
                                               SATURATION_WINDOW)
        return LineageView(
            baseline=baseline,
            leaderboard=tuple(trial_from_run(r) for r in board),
            best_chain=tuple(_search.chain(self.client, best, board)) if best else (),
            best_children=tuple(_search.children(self.client, campaign_id,
                                                 best.info.run_id, 50)) if best else (),
            recent=tuple(recent),
            mine=tuple(mine),
            in_flight=tuple(self.in_flight(campaign_id)),
        )

    def leaderboard(self, campaign_id: str, direction: Direction, limit: int = 20) -> list[Trial]:
        return _search.leaderboard(self.client, campaign_id, direction, limit)

    def ancestors(self, run_id: str) -> list[Trial]:
        return _search.ancestors(self.client, run_id)

    def children(self, campaign_id: str, run_id: str, limit: int = 100) -> list[Trial]:
        return _search.children(self.client, campaign_id, run_id, limit)

    def recent(self, campaign_id: str, limit: int = _search.RECENT,
               specialist: str | None = None) -> list[Trial]:
        return _search.recent(self.client, campaign_id, limit, specialist)

    def trials(self, campaign_id: str) -> list[Trial]:
        return _search.all_trials(self.client, campaign_id)

    def pending_retries(self, campaign_id: str) -> list[Trial]:
        return _search.pending_retries(self.client, campaign_id)

    def same_edit(self, campaign_id: str, parent_id: str, sha: str) -> list[Trial]:
        """Trials that ran (or run now) the edit with digest `sha` on `parent_id`."""
        return _search.same_edit(self.client, campaign_id, parent_id, sha)

    def in_flight(self, campaign_id: str) -> list[Trial]:
        """Trials running now (RUNNING runs), newest first."""
        runs = _search.running(self.client, campaign_id)
        return sorted((trial_from_run(r) for r in runs), key=lambda t: -t.start_time)

    def llm_spend(self, campaign_id: str) -> float:
        return _search.llm_spend(self.client, campaign_id)

    def _name(self, experiment_id: str) -> str:
        if experiment_id not in self._names:
            self._names[experiment_id] = self.client.get_experiment(experiment_id).name
        return self._names[experiment_id]


def default_uri(tracking_uri: str | None) -> str:
    """The tracking URI in force: the one given, else MLflow's own default, ./mlflow.db."""
    return tracking_uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _analyze(path: str) -> None:
    with sqlite3.connect(path, timeout=20) as db:
        db.execute("ANALYZE")


def _probe(uri: str, must_exist: bool) -> None:
    """Fail in seconds, with one line, when the store is not there at start (a campaign's later
    faults are retried, see `_attempt`)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
        try:
            urllib.request.urlopen(url, timeout=PROBE_SECONDS).close()
        except urllib.error.HTTPError:
            return  # it answered: auth and the rest are MLflow's business
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreError(f"no MLflow tracking server answers at {uri} ({reason}); start one "
                             f"(mlflow server --workers 1) or fix --tracking-uri") from None
    elif parsed.scheme == "sqlite" and must_exist:
        path = Path(uri[len("sqlite:///"):])
        if not path.is_file():
            raise StoreError(f"there is no tracking store at {uri}: nothing was recorded there "
                             f"yet; run a campaign first (autoresearch run ENV) or pass "
                             f"--tracking-uri")


def _ui_tags() -> dict[str, str]:
    """Experiment tags for the MLflow UI: the model-training kind, and the campaign's view (a
    flat table in trial order with the story's columns, and its charts)."""
    return {tags.MLFLOW_EXPERIMENT_KIND: tags.MODEL_TRAINING,
            tags.MLFLOW_VIEW_PREFIX + tags.VIEW_KEY: campaign_view(int(time.time() * 1000))}


def _check_kind(name: str, experiment_tags: dict[str, str], kind: str) -> None:
    found = _kind(experiment_tags)
    if kind == tags.EVALUATIONS_KIND and found == tags.CAMPAIGN_KIND:
        raise AutoresearchError(
            f"experiment {name!r} is a campaign: standalone evaluations never go into one; "
            f"leave out --experiment (default autoresearch/<env>/evaluations)")
    if kind == tags.CAMPAIGN_KIND and found == tags.EVALUATIONS_KIND:
        raise AutoresearchError(f"experiment {name!r} holds standalone evaluations, not a "
                                f"campaign; name another --experiment")


def _as_flag(control: str, value: str) -> str:
    """A control's value as the `autoresearch run` option that sets it."""
    if control == tags.CONFIRM_SEEDS:
        return f"--confirm-seeds {len(value.split(',')) if value else 0}"
    return f"--{control.rsplit('.', 1)[1]} {value}"


def _kind(experiment_tags: dict[str, str]) -> str | None:
    """An experiment's kind; campaigns of schema 1 carry only the environment tag."""
    if tags.KIND in experiment_tags:
        return experiment_tags[tags.KIND]
    return tags.CAMPAIGN_KIND if tags.ENVIRONMENT in experiment_tags else None


def _status(label: FailureLabel, killed: bool) -> str:
    if killed:
        return RunStatus.to_string(RunStatus.KILLED)
    failed = label is FailureLabel.HARNESS_ABORT
    return RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)


def _stub_proposal(t: dict[str, str]) -> Proposal:
    """Enough of a recorded proposal to describe its trial (no artifacts read)."""
    return Proposal(t.get(tags.SPECIALIST) or "unknown", t.get(tags.HYPOTHESIS) or "(unknown)",
                    "", None, retry_of=t.get(tags.RETRY_OF))


def _harness_log(outcome: Outcome, result: TrialResult, tampered: list[str]) -> str:
    lines = [f"label {outcome.label.tag}; trial {result.trial_seconds:.2f} s, recipe "
             f"{result.recipe_seconds:.2f} s, harness {result.harness_seconds:.2f} s"]
    if tampered:
        lines.append("written into the run by something else, rewritten: " + ", ".join(tampered))
    if result.error is not None:
        lines.append(f"stopped by {result.error!r}")
    return "\n".join(lines) + "\n"


def _metric(key: str, value: float, step: int = 0) -> Metric:
    return Metric(key, value, int(time.time() * 1000), step)


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
