"""One trial from proposal to `TrialResult`: preflight, the seeds, the evaluator, the logs.

The engine never talks to the store: the campaign gives it the parent's recipe and a callback
that records each process group, and gets back one result to record. A failed trial is a result,
never an exception. A harness fault or an interrupt (Ctrl-C, SIGTERM) is a result too: its
processes are already dead, its outcome is `harness_abort`, and `error` holds the exception for
the campaign to re-raise once the trial is recorded. The scratch folder goes in every case unless
asked to keep it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from ..diffs import diff_lines
from ..environment import Environment
from ..errors import HarnessError
from ..records import FailureLabel, Outcome, Proposal, TrialResult
from .evaluator import Evaluator, disagreement
from .preflight import PreflightError, prepare_workspace
from .process import Group
from .projects import SeedResult, run_seeds
from .sandbox import Sandbox
from .workspace import collect_logs, read_editable

PREFLIGHT_LOG = "preflight.txt"


def run_trial(env: Environment, proposal: Proposal, parent_recipe: dict[str, str] | None,
              evaluator: Evaluator, run_dir: Path, sandbox: Sandbox,
              on_start: Callable[[Group], None] = lambda group: None,
              keep_run_dir: bool = False) -> TrialResult:
    """Run `proposal` on `parent_recipe` (None: the recipe as the environment ships it), its
    seeds in `sandbox` (the evaluator runs its recipe-importing children in its own).

    `run_dir` is the trial's scratch folder (created here, removed after unless
    `keep_run_dir`); `on_start` records each process group before it starts.
    """
    started = time.monotonic()
    recipe = dict(parent_recipe) if parent_recipe is not None else read_editable(env, env.root)
    seeds: list[SeedResult] = []
    error: BaseException | None = None
    try:
        run_dir.mkdir(parents=True)
        workspace, outcome = _preflight(env, proposal, recipe, run_dir)
        if outcome is None:
            recipe = read_editable(env, workspace)
            seeds = run_seeds(env, workspace, run_dir, evaluator.public_dir, sandbox, on_start)
            outcome = evaluator.score(run_dir, on_start)
            problem = disagreement(env, outcome)
            if problem:
                outcome = Outcome(FailureLabel.HARNESS_ABORT, metrics=outcome.metrics,
                                  excerpt=problem, seconds=outcome.seconds)
                error = HarnessError(problem)
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
                       time.monotonic() - started, sum(s.wall_seconds for s in seeds), error)


def _preflight(env: Environment, proposal: Proposal, recipe: dict[str, str],
               run_dir: Path) -> tuple[Path, None] | tuple[None, Outcome]:
    """(workspace, None) when the edit applies, else (None, the preflight_crash outcome)."""
    if proposal.rejected:
        reason = f"the edit never applied: {proposal.rejected}"
    else:
        try:
            workspace = prepare_workspace(env, recipe, proposal.diff, run_dir / "workspace")
            (run_dir / PREFLIGHT_LOG).write_text("the edit applied and compiles\n")
            return workspace, None
        except PreflightError as exc:
            reason = str(exc)
    (run_dir / PREFLIGHT_LOG).write_text(reason + "\n")
    return None, Outcome(FailureLabel.PREFLIGHT_CRASH, excerpt=reason)
