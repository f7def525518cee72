"""One trial from proposal to `TrialResult`: preflight, the seeds, the evaluator, the logs.

The engine never talks to the store: the campaign gives it the parent's recipe, a callback
that records each process group and a test of whether an ok outcome deserves confirmation, and
gets back one result to record. A trial that passes that test is re-run on the environment's
confirmation seeds in the same workspace, and its outcome pools both seed sets. A failed trial
is a result, never an exception. A harness fault or an interrupt (Ctrl-C, SIGTERM) is a result
too: its processes are already dead, its outcome is `harness_abort`, and `error` holds the
exception for the campaign to re-raise once the trial is recorded. The scratch folder goes in
every case unless asked to keep it.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .. import tags
from ..audit import audit, not_applied
from ..diffs import diff_lines, files_named
from ..environment import Environment
from ..errors import HarnessError
from ..records import Audit, FailureLabel, Outcome, Proposal, TrialResult
from .evaluator import Evaluator, disagreement
from .preflight import PreflightError, prepare_workspace
from .process import Group
from .projects import SeedResult, run_seeds
from .sandbox import Sandbox
from .workspace import collect_logs, read_editable

PREFLIGHT_LOG = "preflight.txt"
CONFIRM_DIR = "confirm"  # the confirmation seeds' run folder, inside the trial's


def run_trial(env: Environment, proposal: Proposal, parent_recipe: dict[str, str] | None,
              evaluator: Evaluator, run_dir: Path, sandbox: Sandbox,
              on_start: Callable[[Group], None] = lambda group: None,
              keep_run_dir: bool = False,
              confirm_if: Callable[[Outcome], bool] = lambda outcome: False,
              on_phase: Callable[[str, float], None] = lambda text, budget: None) -> TrialResult:
    """Run `proposal` on `parent_recipe` (None: the recipe as the environment ships it), its
    seeds in `sandbox` (the evaluator runs its recipe-importing children in its own).

    `run_dir` is the trial's scratch folder (created here, removed after unless
    `keep_run_dir`); `on_start` records each process group before it starts. An ok outcome
    for which `confirm_if` holds is confirmed on `env.confirm_seeds` (see `pool`).
    `on_phase(text, budget seconds)` is told each phase as it starts, for progress displays; it
    is called on this thread and must only note it.
    """
    started = time.monotonic()
    recipe = dict(parent_recipe) if parent_recipe is not None else read_editable(env, env.root)
    seeds: list[SeedResult] = []
    error: BaseException | None = None
    confirmed = False
    audited: Audit | None = None
    try:
        run_dir.mkdir(parents=True)
        on_phase("preflight", 0.0)
        workspace, outcome, audited = _preflight(env, proposal, recipe, run_dir)
        if outcome is None:
            recipe = read_editable(env, workspace)
            seeds = run_seeds(env, workspace, run_dir, evaluator.public_dir, sandbox, on_start,
                              on_phase=on_phase)
            on_phase("evaluating", env.eval_seconds)
            outcome, error = _score(env, evaluator, run_dir, on_start)
            if (error is None and outcome.label is FailureLabel.OK and env.confirm_seeds
                    and confirm_if(outcome)):
                more = dataclasses.replace(env, seeds=env.confirm_seeds)
                seeds += run_seeds(more, workspace, run_dir / CONFIRM_DIR, evaluator.public_dir,
                                   sandbox, on_start,
                                   on_phase=lambda text, budget: on_phase(f"confirm {text}",
                                                                          budget))
                on_phase("evaluating the confirmation", env.eval_seconds)
                second, error = _score(more, evaluator, run_dir / CONFIRM_DIR, on_start)
                outcome = pool(outcome, second, len(env.seeds), len(more.seeds),
                               env.score_metric)
                confirmed = True
    except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised by the campaign
        error = exc
        why = ("interrupted by the user" if isinstance(exc, KeyboardInterrupt)
               else f"harness error: {exc!r}")
        outcome = Outcome(FailureLabel.HARNESS_ABORT, excerpt=why)
    finally:
        logs = collect_logs(run_dir)
        if not keep_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
    return TrialResult(outcome, recipe, logs, diff_lines(proposal.diff),
                       time.monotonic() - started, sum(s.wall_seconds for s in seeds), error,
                       confirmed, audit=audited)


def pool(search: Outcome, confirm: Outcome, n_search: int, n_confirm: int,
         score_metric: str) -> Outcome:
    """One outcome from the search seeds' and the confirmation seeds'.

    Both ok: the score, and the evaluator's metric `score_metric`, is their mean weighted by seed
    count, which is the mean over all seeds because every evaluator's score is a mean over seeds
    (evaluators/README.md); the other metrics keep the search seeds' values, and `score_search`,
    `score_confirm` and the confirmation's own metrics (under `confirm.`) are added. Otherwise
    the confirmation's failure is the trial's.
    """
    metrics = {**search.metrics, tags.SCORE_SEARCH: search.score,
               **{tags.CONFIRM_METRIC_PREFIX + k: v for k, v in confirm.metrics.items()}}
    seconds = search.seconds + confirm.seconds
    if confirm.label is not FailureLabel.OK:
        return Outcome(confirm.label, metrics=metrics, seconds=seconds, gates=confirm.gates,
                       excerpt=f"on the confirmation seeds: {confirm.excerpt}")
    metrics[tags.SCORE_CONFIRM] = confirm.score
    pooled = (n_search * search.score + n_confirm * confirm.score) / (n_search + n_confirm)
    metrics[score_metric] = pooled
    return dataclasses.replace(search, score=pooled, metrics=metrics, seconds=seconds)


def _score(env: Environment, evaluator: Evaluator, run_dir: Path,
           on_start: Callable[[Group], None]) -> tuple[Outcome, HarnessError | None]:
    """The evaluator's outcome for `run_dir`; a `harness_abort` and its error when the
    evaluator and the spec disagree."""
    outcome = evaluator.score(run_dir, on_start)
    problem = disagreement(env, outcome)
    if not problem:
        return outcome, None
    return (Outcome(FailureLabel.HARNESS_ABORT, metrics=outcome.metrics, excerpt=problem,
                    seconds=outcome.seconds), HarnessError(problem))


def _preflight(env: Environment, proposal: Proposal, recipe: dict[str, str],
               run_dir: Path) -> tuple[Path | None, Outcome | None, Audit]:
    """(workspace, None, audit) when the edit applies (and, under `audit: enforce`, stays in
    its specialist's domain), else (None, the preflight_crash outcome, audit)."""
    audited = not_applied(files_named(proposal.diff))
    if proposal.rejected:
        reason = f"the edit never applied: {proposal.rejected}"
    else:
        try:
            workspace = prepare_workspace(env, recipe, proposal.diff, run_dir / "workspace")
            audited = audit(env, proposal.specialist, recipe, read_editable(env, workspace))
            if env.audit == "enforce" and audited.in_domain == "false":
                raise PreflightError(
                    f"out of domain: {proposal.specialist} may change only its own surface "
                    f"(`audit: enforce` in {env.root.name}/autoresearch.yaml), and this edit "
                    f"touched {audited.describe()}")
            (run_dir / PREFLIGHT_LOG).write_text("the edit applied and compiles\n")
            return workspace, None, audited
        except PreflightError as exc:
            reason = str(exc)
    (run_dir / PREFLIGHT_LOG).write_text(reason + "\n")
    return None, Outcome(FailureLabel.PREFLIGHT_CRASH, excerpt=reason), audited
