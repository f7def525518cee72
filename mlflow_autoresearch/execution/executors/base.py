"""The executor interface: where and how many trials run at once.

The campaign loop is the only coordinator: it numbers trials, records them and decides. An
executor only runs what it is given (`submit`), hands back what happened (`poll`) and stops what
it is told to (`cancel`); it never touches the tracking store. `local` runs each trial in a slot
of this machine (`local.py`), `ray` as a task on a Ray cluster (`ray.py`);
both run the same engine (`run_trial`) and pass the same conformance class
(`testing/executor_contract.py`). Another backend (a Kubernetes Job per trial, a Slurm array)
implements these four methods the same way: docs/architecture.md says how.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ...diffs import diff_lines
from ...environment import Environment
from ...records import FailureLabel, Outcome, Proposal, TrialResult
from ..process import Group


def _never(outcome: Outcome) -> bool:
    return False


def unrecorded(group: Group) -> None:
    """The `on_start` of a job whose process groups nobody here can reap."""


def unwatched(text: str, budget: float) -> None:
    """The `on_phase` of a job nobody displays."""


@dataclass(frozen=True)
class Job:
    """One trial to run: what `run_trial` needs, keyed by the trial's run id.

    `confirm_if` must be picklable (e.g. `records.WouldKeep`) for executors that ship jobs to
    other machines. `on_start` records each process group before it starts;
    executors call it on the thread that polls them, and only where the group runs on this
    machine (elsewhere the executor itself reaps what a dead coordinator leaves). `on_phase`
    is told each phase of the trial as it starts, from whatever thread runs it, where the job
    runs on this machine; it only updates a display.
    """

    key: str
    env: Environment
    proposal: Proposal
    parent_recipe: dict[str, str] | None
    run_dir: Path                      # the trial's scratch folder on the machine that runs it
    keep_run_dir: bool = False
    confirm_if: Callable[[Outcome], bool] = _never
    on_start: Callable[[Group], None] = field(default=unrecorded, compare=False)
    on_phase: Callable[[str, float], None] = field(default=unwatched, compare=False)


@dataclass(frozen=True)
class Done:
    """A finished job: its result, with `TrialResult.where` saying where it ran."""

    key: str
    result: TrialResult


def lost(job: Job, why: str, error: BaseException | None = None) -> TrialResult:
    """The result of a job that never returned one (refused, cancelled, its node gone):
    `harness_abort` with the reason, nothing measured."""
    return TrialResult(Outcome(FailureLabel.HARNESS_ABORT, excerpt=why), {},
                       {"harness.txt": why + "\n"}, diff_lines(job.proposal.diff), 0.0, 0.0,
                       error)


class Executor(Protocol):
    """Runs up to `slots` jobs at once.

    `submit` starts a job (raises HarnessError when every slot is taken); `poll` waits up to
    `timeout` seconds for at least one job to finish and returns every finished one, each
    exactly once; `cancel` stops a job, which `poll` then returns as `harness_abort` with the
    reason; `close` cancels what still runs and frees the executor's resources.
    """

    name: str
    slots: int

    def submit(self, job: Job) -> None: ...

    def poll(self, timeout: float) -> list[Done]: ...

    def cancel(self, key: str, why: str) -> None: ...

    def close(self) -> None: ...
