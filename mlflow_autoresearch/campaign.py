"""The campaign loop: numbering, turns, the keep rule and the stop rules, on top of the store,
execution and the agents.

`run_campaign` takes the campaign's lease, writes records a gone loop left in the outbox,
recovers what it left running, measures the unmodified recipe as trial 0 (alone) if there is no
baseline, re-runs each aborted trial's proposal once, then keeps up to `--workers` trials in
flight on an executor, giving the roster's specialists turns as slots free, until the trial
budget, a wall deadline, a stretch without a keep or the LLM cost cap ends it. A trial flows one
way: the store records the proposal, an executor turns it into one `TrialResult`, the store
records the verdict against the best at record time, and the agent that proposed it is told.
This process is the only one that writes the store. A failed trial is a record; a harness fault
or an interrupt cancels what is in flight, records it all as `harness_abort`, and is raised
after.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from . import lineage, tags
from .agents import Agent, AgentContext, default_roster
from .agents.roster import control_environment
from .agents.turns import choose_turn
from .agents.strategies import load_search_space
from .agents.llm import ClientSettings, EndpointError
from .environment import Environment, Specialist, load_environment, with_confirm_seeds
from .errors import HarnessError, ProposalError, StoreError
from .diffs import diff_sha
from .execution import CommandEvaluator, run_trial
from .execution.executors import Done, Executor, Job, LocalExecutor, lost, slots
from .execution.process import reap
from .execution.sandbox import BWRAP, for_environment
from .execution.sandbox import choose as choose_sandbox
from .records import (Decision, FailureLabel, Outcome, Proposal, Trial, TrialResult,
                      WouldKeep)
from .store import Lease, MlflowStore, TrialStore, outbox

BASELINE = Proposal("baseline", "The unmodified recipe, measured as the baseline.", "", None,
                    expected_delta=0.0)
MAX_ABORTS_IN_A_ROW = 3
MAX_CHILDREN = 5000  # children read per trial: a resumed Optuna study's whole history
TURN_HISTORY = 60    # recent trials the turn allocation reads
POLL_SECONDS = 0.5   # how long the loop waits on its executor between checks


@dataclass(frozen=True)
class Settings:
    """One campaign invocation, built once by the CLI."""

    environment: str                  # name under projects/ or a path to an environment folder
    profile: str | None = None        # None: the environment's default profile
    trials: int = 8                   # run until trial number `trials` exists (0 = baseline)
    tracking_uri: str | None = None   # None: sqlite:///mlflow.db in the working directory
    experiment: str | None = None     # None: autoresearch/<environment>
    seed: int = 0                     # offline specialists' random seed
    deadline_minutes: float | None = None  # stop starting trials after this much wall time
    grace_minutes: float | None = None     # stop after this long without a keep
    workdir: Path = Path(".autoresearch")  # data cache and per-trial scratch directories
    keep_run_dirs: bool = False       # keep each trial's scratch directory after logging it
    llm: ClientSettings | None = None  # None: offline specialists only
    llm_specialists: tuple[str, ...] | None = None  # None: with `llm`, the whole roster
    max_repairs: int = 2              # edit repairs per LLM turn before a preflight_crash
    max_cost_usd: float | None = None  # stop before a turn once the campaign's LLM spend reaches it
    take_over: bool = False           # take the campaign from a loop whose heartbeat stopped
    sandbox: str = "auto"             # auto | bwrap | off: how recipe code is isolated
    lineage: str = "on"               # off: the paper's no-lineage control
    roster: str = "specialists"       # single | generic: the paper's generalist controls
    confirm_seeds: int | None = None  # None: the profile's `confirm_seeds`; 0: no confirmation
    strategy: str = "specialists"     # random | optuna: a search strategy proposes instead
    workers: int = 1                  # trials at once
    executor: str = "local"           # local | ray: where they run
    ray_address: str | None = None    # None: RAY_ADDRESS, else a Ray started for the campaign

    @property
    def controls(self) -> dict[str, str]:
        return {tags.CONTROL_LINEAGE: self.lineage, tags.CONTROL_ROSTER: self.roster,
                tags.STRATEGY: self.strategy}


@dataclass
class Summary:
    """What one invocation did, for the closing report."""

    experiment_id: str
    campaign: str
    trials: list[Trial] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)
    best: Trial | None = None
    stop_reason: str = ""
    harness_seconds: list[float] = field(default_factory=list)
    record_seconds: list[float] = field(default_factory=list)  # finished job -> recorded trial


class Watcher(Protocol):
    """A display of trials in flight (`progress.Progress`); `phase` may be called from any
    thread."""

    def started(self, key: str, number: int, specialist: str) -> None: ...

    def phase(self, key: str, text: str, budget: float) -> None: ...

    def finished(self, key: str, best: float | None) -> None: ...


class Unwatched:
    """No display."""

    def started(self, key: str, number: int, specialist: str) -> None:
        pass

    def phase(self, key: str, text: str, budget: float) -> None:
        pass

    def finished(self, key: str, best: float | None) -> None:
        pass


@dataclass(frozen=True)
class Flight:
    """A trial started and not yet recorded."""

    number: int
    proposal: Proposal
    is_baseline: bool


@dataclass
class Campaign:
    """The live state of one loop process on one campaign (or one evaluations experiment)."""

    env: Environment
    settings: Settings
    store: TrialStore
    campaign_id: str
    name: str
    evaluator: CommandEvaluator
    echo: Callable[[str], None]
    lease: Lease | None = None
    baseline: Trial | None = None
    best: Trial | None = None  # the best once the last trial was recorded
    margin_source: str = ""    # spec | measured; "" while `min_delta: auto` is not measured yet
    flights: dict[str, Flight] = field(default_factory=dict)  # run id -> a trial in flight
    watcher: Watcher = field(default_factory=Unwatched)

    def start(self, number: int, proposal: Proposal, context: str,
              run_id: str | None = None) -> Job:
        """Record trial `number`'s proposal (its run opens RUNNING) and return its job.

        Raises StoreError or LeaseError when recording fails; nothing has run then.
        """
        parent = (self.store.load_recipe(proposal.parent_id, self.env.editable)
                  if proposal.parent_id else None)
        run_id = self.store.create_trial(self.campaign_id, self.env, number, proposal, context,
                                         run_id, self.evaluator.sandbox.kind)
        is_baseline = proposal.parent_id is None
        best = self.store.best(self.campaign_id, self.env.direction) if self.lease else None
        self.flights[run_id] = Flight(number, proposal, is_baseline)
        self.watcher.started(run_id, number, proposal.specialist)
        scratch = self.settings.workdir.resolve() / "runs" / f"t{number:04d}-{run_id[:8]}"
        return Job(run_id, self.env, proposal, parent, scratch, self.settings.keep_run_dirs,
                   WouldKeep(self.env.direction, best.score if best else None, self.env.min_delta),
                   lambda group: self.store.record_processes(run_id, group.marker),
                   lambda text, budget: self.watcher.phase(run_id, text, budget))

    def record(self, done: Done) -> tuple[Trial, TrialResult]:
        """Record a finished job's verdict against the best at record time; its `error` (a
        harness fault or an interrupt) is left for the caller to raise.

        Raises StoreError or LeaseError when recording itself fails.
        """
        flight, result, run_id = self.flights.pop(done.key), done.result, done.key
        self.watcher.phase(run_id, "recording", 0.0)
        tampered = self.store.find_tampering(run_id)
        if tampered and result.outcome.label is not FailureLabel.HARNESS_ABORT:
            result = dataclasses.replace(result, outcome=Outcome(
                FailureLabel.ILLEGAL, metrics=result.outcome.metrics,
                seconds=result.outcome.seconds,
                excerpt="something other than the harness wrote into the trial's MLflow run: "
                        + ", ".join(tampered)))
        best = self.store.best(self.campaign_id, self.env.direction) if self.lease else None
        decision, delta = decide(self.env, result.outcome, best, flight.is_baseline)
        if result.confirmed and decision is Decision.DISCARD and best is not None:
            result = dataclasses.replace(result, outcome=dataclasses.replace(
                result.outcome, excerpt=unconfirmed(self.env, result.outcome, best)))
        try:
            trial = self.store.finish_trial(run_id, flight.number, flight.proposal, result,
                                            decision, delta, tampered)
        except StoreError:
            if self.lease is not None:  # a campaign's next start writes it
                path = outbox.save(self.outbox, run_id, flight.number, flight.proposal, result,
                                   decision, delta, tampered, self.store.written_tags(run_id))
                self.echo(f"t{flight.number:04d} finished, but the tracking store refused its "
                          f"record: kept in {path}, written when the campaign starts again")
            raise
        if flight.is_baseline and trial.label is not FailureLabel.HARNESS_ABORT:
            self.baseline = trial
        self.best = trial if trial.is_kept else best
        self.watcher.finished(run_id, self.best.score if self.best else None)
        return trial, result

    @property
    def outbox(self) -> Path:
        return outbox.folder(self.settings.workdir.resolve(), self.campaign_id)

    def run_one(self, number: int, proposal: Proposal, context: str,
                run_id: str | None = None) -> Trial:
        """One trial end to end on this machine, recorded at its start and at its end whatever
        happens between; raises what interrupted it once it is recorded."""
        executor = LocalExecutor(self.evaluator, slots.plan(self.env, 1))
        executor.submit(self.start(number, proposal, context, run_id))
        try:
            done = wait(executor, set(self.flights))
        except BaseException as exc:
            for done in abandon(executor, set(self.flights), exc):
                self.echo(lineage.progress_line(self.record(done)[0], self.best))
            raise
        trial, result = self.record(done[0])
        if result.error is not None:
            self.echo(lineage.progress_line(trial, self.best))
            raise result.error
        return trial

    def refusal(self, proposal: Proposal) -> str:
        """Why `proposal` must not run: its diff is one in flight or already tried on the same
        parent (a harness fault is not an idea tried); "" when it may."""
        if proposal.retry_of or proposal.parent_id is None:
            return ""
        for t in self.store.same_edit(self.campaign_id, proposal.parent_id,
                                      diff_sha(proposal.diff)):
            if t.label is not FailureLabel.HARNESS_ABORT:
                how = "is running" if t.label is None else f"ran ({t.verdict})"
                return (f"{proposal.specialist}'s edit is the one t{t.number:04d} {how} on the "
                        f"same parent")
        return ""

    def turn(self, roster: list[Specialist], number: int,
             exhausted: set[str]) -> tuple[Specialist, str]:
        """Who proposes trial `number`, and why: by payoff (`agents/turns.py`) among those not
        exhausted, trials in flight counted as turns taken that have not paid yet (so a wave of
        parallel turns spreads over the roster); in turn order with lineage off, which reads no
        outcomes."""
        able = [s for s in roster if s.name not in exhausted]
        if self.settings.lineage != "on":
            spec = roster[(number - 1) % len(roster)]
            spec = spec if spec in able else able[0]
            return spec, "turn order (lineage off: outcomes are not read)"
        recent = [*self.store.in_flight(self.campaign_id),
                  *self.store.recent(self.campaign_id, TURN_HISTORY)]
        name, why = choose_turn([s.name for s in able], recent)
        return next(s for s in able if s.name == name), f"{name} has this turn: {why}."

    def view_for(self, specialist: str) -> lineage.LineageView:
        """The specialist's lineage, or with lineage off only the current best."""
        view = self.store.view(self.campaign_id, self.env.direction, specialist, self.baseline)
        return view if self.settings.lineage == "on" else lineage.blind_view(view)

    def context_for(self, view: lineage.LineageView, specialist: str) -> str:
        """What the specialist reads of its lineage (trial/context.md)."""
        env = self.env
        if self.settings.lineage == "off":
            return lineage.render_blind(view, specialist, env.score_metric, env.direction.value)
        return lineage.render_context(view, specialist, env.min_delta, env.score_metric,
                                      env.direction.value, self.margin_source)

    def settle_margin(self) -> None:
        """With `min_delta: auto`, once the baseline is ok: run the unmodified recipe
        `noise_repeats - 1` more times and keep `noise_z` x the std of all its scores.

        Raises:
            HarnessError: a repeat did not end ok, so the noise cannot be measured.
        """
        env, baseline = self.env, self.baseline
        if self.margin_source or baseline is None or baseline.label is not FailureLabel.OK:
            return
        # The repeats run the search seeds alone: compare like with like.
        scores = [self.store.raw(baseline.run_id).metrics.get(tags.SCORE_SEARCH, baseline.score)]
        for i in range(1, env.noise_repeats):
            self.echo(f"      measuring the noise: run {i + 1} of {env.noise_repeats} of the "
                      f"baseline")
            scratch = self.settings.workdir.resolve() / "runs" / f"noise-{baseline.run_id[:8]}-{i}"
            result = run_trial(env, BASELINE, None, self.evaluator, scratch,
                               self.evaluator.sandbox)
            if result.error is not None:
                raise result.error
            if result.outcome.label is not FailureLabel.OK:
                raise HarnessError(
                    f"run {i + 1} of the baseline ended {result.outcome.label.tag} "
                    f"({result.outcome.excerpt[:200]}): the noise cannot be measured; set "
                    f"min_delta to a number in {env.root.name}/autoresearch.yaml")
            scores.append(result.outcome.score)
        std = statistics.stdev(scores)
        margin = float(f"{env.noise_z * std:.6g}")  # in force exactly as recorded
        self.store.record_margin(self.campaign_id, margin, "measured", baseline.run_id,
                                 tuple(scores))
        self.env = dataclasses.replace(env, min_delta=margin)
        self.margin_source = "measured"
        self.echo(f"      keep margin {self.env.min_delta:.4g} = {env.noise_z:g} x std "
                  f"{std:.4g} of {len(scores)} runs of the baseline")

    def children_for(self, run_id: str) -> list[Trial]:
        """A trial's children, failures included (a search strategy's whole history: they are
        all the baseline's); none with lineage off."""
        if self.settings.lineage != "on":
            return []
        return self.store.children(self.campaign_id, run_id, limit=MAX_CHILDREN)


def decide(env: Environment, outcome: Outcome, best: Trial | None,
           is_baseline: bool) -> tuple[Decision | None, float | None]:
    """Keep iff ok and better than the best at record time by more than `min_delta`.

    The first valid score of a campaign is the reference: `baseline` for the unmodified recipe,
    `keep` for a trial that succeeded where the baseline did not.
    """
    if outcome.label is not FailureLabel.OK:
        return None, None
    if best is None:
        return (Decision.BASELINE if is_baseline else Decision.KEEP), None
    delta = float(f"{outcome.score - best.score:.6g}")  # not 0.030600000000000183 in the UI
    keep = env.direction.better(outcome.score, best.score, env.min_delta)
    return (Decision.KEEP if keep else Decision.DISCARD), delta


def unconfirmed(env: Environment, outcome: Outcome, best: Trial) -> str:
    """Why a trial that beat the best on its search seeds was discarded after confirmation."""
    search = outcome.metrics[tags.SCORE_SEARCH]
    confirm = outcome.metrics[tags.SCORE_CONFIRM]
    seeds = list(env.confirm_seeds)
    return (f"confirmation failed: {search:.6g} on the search seeds beat the best "
            f"{best.score:.6g}, but {confirm:.6g} on the confirmation seeds {seeds} pools to "
            f"{outcome.score:.6g}, which does not beat it by more than {env.min_delta:.4g}")


def wait(executor: Executor, keys: set[str]) -> list[Done]:
    """Poll until at least one of `keys` (jobs in flight) has finished."""
    while True:
        finished = executor.poll(POLL_SECONDS)
        if finished or not keys:
            return finished


def abandon(executor: Executor, keys: set[str], cause: BaseException) -> list[Done]:
    """Cancel every job in flight because of `cause` and wait for each to come back, so each is
    recorded: `harness_abort`, killed (not failed) when the user interrupted."""
    why = ("interrupted by the user" if isinstance(cause, KeyboardInterrupt)
           else f"the campaign stopped: {cause}")
    for key in keys:
        executor.cancel(key, why)
    finished: list[Done] = []
    while len(finished) < len(keys):
        finished += executor.poll(POLL_SECONDS)
    if isinstance(cause, KeyboardInterrupt):
        finished = [Done(d.key, dataclasses.replace(d.result, error=KeyboardInterrupt()))
                    for d in finished]
    return finished


def run_campaign(settings: Settings, agents: dict[str, Agent] | None = None,
                 echo: Callable[[str], None] = print,
                 watcher: Watcher | None = None) -> Summary:
    """Run (or continue) a campaign. Returns what this invocation did.

    Raises:
        EnvironmentSpecError: the environment folder is broken.
        LeaseError: another loop holds the campaign.
        StoreError: the tracking store is unreachable or failed while recording.
        HarnessError: data could not be prepared, the evaluator failed repeatedly, the evaluator
            and the spec disagree, or the executor cannot hold `--workers` trials.
    """
    campaign = open_campaign(settings, echo)
    campaign.watcher = watcher or Unwatched()
    executor = None
    try:
        agents = agents if agents is not None else default_roster(
            campaign.env, settings.seed, settings.llm, settings.llm_specialists,
            settings.max_repairs, settings.strategy)
        executor = make_executor(settings, campaign)
        return _Loop(campaign, agents, executor).run()
    finally:
        if executor is not None:
            executor.close()
        campaign.lease.release()


def make_executor(settings: Settings, campaign: Campaign) -> Executor:
    """The executor `settings` name, with `settings.workers` slots."""
    if settings.executor == "ray":
        try:  # the `ray` extra: imported only when asked for
            from .execution.executors.ray import RayExecutor
        except ImportError as exc:
            raise HarnessError(f"--executor ray needs Ray ({exc}): pip install "
                               f"'mlflow-autoresearch[ray]', or use --executor local") from None
        return RayExecutor(campaign.env, settings.workers, campaign.evaluator.sandbox.kind,
                           settings.ray_address)
    return LocalExecutor(campaign.evaluator, slots.plan(campaign.env, settings.workers))


class _Loop:
    """One invocation's loop: fills free slots with proposals, records trials as they finish."""

    def __init__(self, campaign: Campaign, agents: dict[str, Agent], executor: Executor):
        self.campaign, self.agents, self.executor = campaign, agents, executor
        store, env = campaign.store, campaign.env
        names = {s.name for s in env.specialists}
        self.roster = [env.specialist(name) for name in agents if name in names]  # agents' order
        if not self.roster:
            raise HarnessError(f"no agent for any specialist of {env.name}")
        self.summary = Summary(campaign.campaign_id, campaign.name)
        self.number = store.next_number(campaign.campaign_id)
        self.retries = [store.load_proposal(t.run_id)
                        for t in store.pending_retries(campaign.campaign_id)]
        self.started = self.last_keep = time.monotonic()
        self.aborts = 0
        self.exhausted: set[str] = set()  # nothing left to propose until a new keep
        self.idle: set[str] = set()       # a proposal refused: no turn until a trial is recorded
        self.earlier_spend = store.llm_spend(campaign.campaign_id)

    def run(self) -> Summary:
        campaign = self.campaign
        campaign.settle_margin()  # a campaign whose baseline ran before the margin was measured
        try:
            while True:
                self._fill()
                if not campaign.flights:
                    break
                for done in wait(self.executor, set(campaign.flights)):
                    self._finished(done)
        except BaseException as exc:
            for done in abandon(self.executor, set(campaign.flights), exc):
                trial, _ = campaign.record(done)
                self._count(trial)
                campaign.echo(lineage.progress_line(trial, campaign.best))
            raise
        self.summary.best = campaign.store.best(campaign.campaign_id, campaign.env.direction)
        return self.summary

    def _fill(self) -> None:
        """Start trials until every slot is busy, a stop rule holds or nobody can propose now.
        The baseline runs alone: every other trial builds on it."""
        campaign = self.campaign
        while len(campaign.flights) < self.executor.slots and not self._stopping():
            if campaign.baseline is None and campaign.flights:
                return
            proposal, context = self._next()
            if proposal is None:
                return
            job = campaign.start(self.number, proposal, context)
            self.number += 1
            try:
                self.executor.submit(job)
            except BaseException as exc:  # recorded, then raised like any harness fault
                self._finished(Done(job.key, lost(job, f"the executor refused it: {exc}", exc)))

    def _stopping(self) -> bool:
        if self.summary.stop_reason.startswith("paused"):
            return True
        spent = self.earlier_spend + sum(getattr(a, "spent_usd", 0.0)
                                         for a in self.agents.values())
        self.summary.stop_reason = _stop_reason(self.campaign.settings, self.number,
                                                self.started, self.last_keep, self.exhausted,
                                                self.roster, spent)
        return bool(self.summary.stop_reason)

    def _next(self) -> tuple[Proposal | None, str]:
        """The next proposal and the context it was made in; None when nobody can propose now
        (all refused or exhausted while trials run, or the LLM endpoint is down)."""
        campaign, store, env = self.campaign, self.campaign.store, self.campaign.env
        if campaign.baseline is None:  # first start, or the baseline's run was aborted
            return BASELINE, "The baseline runs the recipe as the environment ships it."
        if self.retries:
            proposal = self.retries.pop(0)
            return proposal, f"A re-run of {proposal.retry_of}, which the harness aborted."
        while True:
            unable = self.exhausted | self.idle
            if all(s.name in unable for s in self.roster):
                return None, ""
            spec, why = campaign.turn(self.roster, self.number, unable)
            view = campaign.view_for(spec.name)
            context = campaign.context_for(view, spec.name) + f"\n\n## Your turn\n\n{why}\n"
            ctx = AgentContext(env, spec, self.number, view, context,
                               lambda rid: store.load_recipe(rid, env.editable),
                               campaign.children_for)
            try:
                proposal = self.agents[spec.name].ask(ctx)
            except EndpointError as exc:  # nothing was recorded for this turn: safe to resume
                self.summary.stop_reason = f"paused: {exc}"
                return None, ""
            except ProposalError as exc:
                campaign.echo(f"      {spec.name}: no proposal this turn ({exc})")
                self.exhausted.add(spec.name)
                continue
            refused = campaign.refusal(proposal)
            if not refused:
                return proposal, context
            campaign.echo(f"      refused before it ran: {refused}")
            # Nothing changes what it sees until a trial is recorded: with none in flight, it
            # has nothing new to propose.
            (self.idle if campaign.flights else self.exhausted).add(spec.name)

    def _finished(self, done: Done) -> None:
        campaign = self.campaign
        proposal = campaign.flights[done.key].proposal
        started = time.monotonic()
        trial, result = campaign.record(done)
        self.summary.record_seconds.append(time.monotonic() - started)
        if proposal.specialist in self.agents:
            self.agents[proposal.specialist].tell(trial)
        self._count(trial)
        self.summary.harness_seconds.append(result.harness_seconds)
        self.idle.clear()
        campaign.echo(lineage.progress_line(trial, campaign.best))
        if result.error is not None:
            raise result.error
        if trial.is_kept:
            self.last_keep = time.monotonic()
        if proposal is BASELINE:
            campaign.settle_margin()
        if trial.decision is Decision.KEEP:
            self.exhausted.clear()  # a new kept trial is a new parent to build on
        aborted = trial.label is FailureLabel.HARNESS_ABORT
        self.aborts = self.aborts + 1 if aborted else 0
        if (proposal is BASELINE and self.aborts) or self.aborts >= MAX_ABORTS_IN_A_ROW:
            raise HarnessError(f"the evaluator failed {self.aborts} time(s) in a row; last: "
                               f"{trial.excerpt[:300]}")
        if aborted and proposal.parent_id and not proposal.retry_of:
            self.retries.append(campaign.store.load_proposal(trial.run_id))  # e.g. a lost node

    def _count(self, trial: Trial) -> None:
        self.summary.trials.append(trial)
        self.summary.labels[trial.verdict] += 1


def evaluate_recipe(settings: Settings, run_id: str | None = None,
                    echo: Callable[[str], None] = print) -> Trial:
    """Measure the environment's recipe as it is on disk, as one standalone trial.

    It goes to its own experiment (default `autoresearch/<env>/evaluations`, never a campaign),
    or into `run_id`, the run `mlflow run` opened for it; it takes no lease and recovers nothing.
    """
    env = _load(settings)
    store = MlflowStore(settings.tracking_uri)
    if run_id:
        experiment_id = store.campaign_of(run_id)
        store.check_kind(experiment_id, tags.EVALUATIONS_KIND)
    else:
        experiment_id = store.open_campaign(
            settings.experiment or f"autoresearch/{env.name}/evaluations", env,
            tags.EVALUATIONS_KIND)
    campaign = Campaign(env, settings, store, experiment_id, "standalone",
                        prepared_evaluator(env, settings, echo), echo)
    proposal = Proposal("baseline", "The recipe as it is on disk, measured on its own.", "", None,
                        expected_delta=0.0)
    trial = campaign.run_one(0, proposal, "Standalone evaluation: no specialist.", run_id)
    echo(lineage.progress_line(trial, campaign.best))
    return trial


def open_campaign(settings: Settings, echo: Callable[[str], None]) -> Campaign:
    """Load the environment, connect, take the lease, recover a gone loop's trials, prepare data.

    The returned campaign holds the lease; release it with `campaign.lease.release()`.
    """
    env = control_environment(_load(settings), settings.roster, settings.strategy)
    if settings.strategy != "specialists":
        load_search_space(env)  # a missing or broken search space: one line, before any write
    store = MlflowStore(settings.tracking_uri)
    name = settings.experiment or f"autoresearch/{env.name}"
    campaign_id = store.open_campaign(name, env, controls={
        **settings.controls, tags.CONFIRM_SEEDS: ",".join(map(str, env.confirm_seeds))})
    lease = store.acquire_lease(campaign_id, settings.take_over)
    try:
        waiting = outbox.folder(settings.workdir.resolve(), campaign_id)
        for pending, written in outbox.flush(waiting, store):
            echo(f"t{pending.number:04d} was recorded from the outbox, where the last loop left "
                 f"it" if isinstance(written, Trial) else written)
        for trial, marker in store.recover(campaign_id):
            if marker:
                reap(marker)
            echo(f"t{trial.number:04d} was left running by a loop that is gone: recorded as "
                 f"{trial.verdict}")
        store.analyze()
        evaluator = prepared_evaluator(env, settings, echo)
        baseline = store.baseline(campaign_id)
        env, source = _margin(env, store, campaign_id)
    except BaseException:
        lease.release()
        raise
    return Campaign(env, settings, store, campaign_id, name, evaluator, echo, lease, baseline,
                    margin_source=source)


def _load(settings: Settings) -> Environment:
    """The environment at the profile `settings` name, with the confirmation seeds it asks for."""
    env = load_environment(settings.environment, settings.profile)
    if settings.confirm_seeds is None:
        return env
    return with_confirm_seeds(env, settings.confirm_seeds)


def _margin(env: Environment, store: TrialStore, campaign_id: str) -> tuple[Environment, str]:
    """The environment with the keep margin in force and its source: the spec's number (put
    on the campaign), or `min_delta: auto`'s once measured ("" until then)."""
    found = store.keep_margin(campaign_id)
    if env.min_delta_auto:
        if found is not None and found[1] == "measured":
            return dataclasses.replace(env, min_delta=found[0]), "measured"
        return env, ""
    if found != (env.min_delta, "spec"):
        store.record_margin(campaign_id, env.min_delta, "spec")
    return env, "spec"


def prepared_evaluator(env: Environment, settings: Settings,
                       echo: Callable[[str], None]) -> CommandEvaluator:
    """The environment's evaluator, its data prepared, with the sandbox `settings` asks for."""
    kind, problem = choose_sandbox(settings.sandbox)
    if problem and settings.sandbox == BWRAP:
        raise HarnessError(f"--sandbox bwrap: {problem}; or pass --sandbox off to run recipes "
                           f"unsandboxed")
    if problem and settings.sandbox == "auto":
        echo(f"WARNING: recipes run WITHOUT a sandbox: {problem}. They can read private data, "
             f"the evaluators and the store; see `autoresearch doctor`.")
    evaluator = CommandEvaluator(env, settings.workdir.resolve() / "data",
                                 for_environment(kind, env))
    evaluator.prepare(settings.workdir.resolve() / "logs")
    return evaluator


def _stop_reason(settings: Settings, number: int, started: float, last_keep: float,
                 exhausted: set[str], roster: list, spent_usd: float) -> str:
    now = time.monotonic()
    if settings.max_cost_usd is not None and spent_usd >= settings.max_cost_usd:
        return f"LLM cost cap ${settings.max_cost_usd:g} reached (${spent_usd:.4f} spent)"
    if number > settings.trials:
        return f"reached trial {settings.trials}"
    if settings.deadline_minutes is not None and now - started > settings.deadline_minutes * 60:
        return f"wall deadline of {settings.deadline_minutes:g} min"
    if settings.grace_minutes is not None and now - last_keep > settings.grace_minutes * 60:
        return f"no keep for {settings.grace_minutes:g} min"
    if len(exhausted) == len(roster):
        return "every specialist has exhausted its techniques"
    return ""
