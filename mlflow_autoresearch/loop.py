"""The campaign loop: ask a specialist, run the edit, evaluate it, tell MLflow. Then again.

`run_loop` measures the unmodified recipe as trial 0, then runs trials until the campaign's trial
budget, a wall deadline, or a stretch without a keep ends it. Running the same campaign again
continues its numbering and lineage; runs a killed loop left RUNNING become `harness_abort`.
A failed trial is a record, never an exception: only harness faults raise.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import lineage, process, tags, tracking
from .agents import Agent, AgentContext, offline_roster
from .llm import ClientSettings, EndpointError
from .llm_agent import llm_roster
from .environment import Environment, load_environment
from .errors import HarnessError, ProposalError
from .evaluation import CommandEvaluator
from .records import Decision, FailureLabel, Outcome, Proposal, Trial
from .runner import run_seeds
from .workspace import PreflightError, apply_diff, diff_lines, diff_sha, materialise, syntax_check

BASELINE = Proposal("baseline", "The unmodified recipe, measured as the baseline.", "", None)
MAX_ABORTS_IN_A_ROW = 3


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


@dataclass
class Campaign:
    """The live state of one loop process: environment, store, evaluator, best so far."""

    env: Environment
    settings: Settings
    client: object                    # tracking's MlflowClient; only tracking.py touches it
    experiment_id: str
    name: str
    evaluator: CommandEvaluator
    echo: Callable[[str], None]

    def best(self) -> Trial | None:
        board = tracking.search_leaderboard(self.client, self.experiment_id, self.env.direction, 1)
        return board[0] if board else None

    def baseline(self) -> Trial | None:
        """The measured baseline: the newest baseline trial the harness could vouch for."""
        found = tracking.search_recent(self.client, self.experiment_id, 1, BASELINE.specialist)
        return found[0] if found else None

    def view(self, specialist: str) -> lineage.LineageView:
        board = tracking.search_leaderboard(self.client, self.experiment_id, self.env.direction)
        best = board[0] if board else None
        chain = tracking.search_ancestors(self.client, best.run_id) if best else []
        return lineage.LineageView(
            baseline=self.baseline(),
            leaderboard=tuple(board),
            best_chain=tuple(chain),
            best_children=tuple(tracking.search_children(self.client, self.experiment_id,
                                                         best.run_id, 50)) if best else (),
            recent=tuple(tracking.search_recent(self.client, self.experiment_id)),
            mine=tuple(tracking.search_recent(self.client, self.experiment_id,
                                              lineage.SATURATION_WINDOW, specialist)),
        )

    def run_trial(self, number: int, proposal: Proposal, context: str,
                  run_id: str | None = None) -> tuple[Trial, float]:
        """Run one proposal end to end and record it; returns the trial and harness seconds.

        `run_id` adopts an existing run (the one `mlflow run` opened) instead of creating one.
        """
        started = time.monotonic()
        parent_path = ""
        if proposal.parent_id:
            parent_path = tracking.get_lineage_path(self.client, proposal.parent_id)
        path = lineage.lineage_path(proposal.parent_id, parent_path)
        run_id, created = tracking.create_trial(
            self.client, self.experiment_id, self.env, self.name, number, proposal, path,
            diff_sha(proposal.diff), run_id)
        run_dir = self.settings.workdir.resolve() / "runs" / f"t{number:04d}-{run_id[:8]}"
        recipe_seconds = 0.0
        try:
            outcome, workspace = self._preflight(proposal, run_dir)
            tracking.log_proposal(self.client, run_id, proposal, context, workspace,
                                  self.env.editable)
            if outcome is None:
                seeds = run_seeds(self.env, workspace, run_dir, self.evaluator.public_dir, run_id,
                                  self.experiment_id,
                                  on_start=lambda pid: tracking.set_pid(self.client, run_id, pid))
                recipe_seconds = sum(s.wall_seconds for s in seeds)
                outcome = self.evaluator(run_dir)
                tampered = tracking.find_tampering(self.client, run_id, created)
                if tampered:
                    outcome = Outcome(FailureLabel.ILLEGAL, metrics=outcome.metrics,
                                      excerpt="the trial's processes wrote harness-owned keys "
                                              "into its run: " + ", ".join(tampered))
        except KeyboardInterrupt:
            tracking.abort_trial(self.client, run_id, "interrupted by the user", killed=True)
            raise
        except Exception as exc:
            tracking.abort_trial(self.client, run_id, f"harness error: {exc!r}")
            raise
        decision, delta = decide(self.env, outcome, self.best(), proposal.parent_id is None)
        harness = time.monotonic() - started - recipe_seconds
        extra = {tags.DIFF_LINES: float(diff_lines(proposal.diff)),
                 tags.HARNESS_SECONDS: round(harness, 4),
                 tags.TRIAL_SECONDS: round(time.monotonic() - started, 4)}
        tracking.finish_trial(self.client, run_id, number, proposal, outcome, decision, delta,
                              extra, run_dir if run_dir.exists() else None)
        if not self.settings.keep_run_dirs:
            shutil.rmtree(run_dir, ignore_errors=True)
        return tracking.get_trial(self.client, run_id), harness

    def _preflight(self, proposal: Proposal, run_dir: Path) -> tuple[Outcome | None, Path | None]:
        """Build the workspace from the parent's recipe and apply the edit: (failure, workspace)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        parent_files = None
        if proposal.parent_id:
            parent_files = tracking.load_recipe(self.client, proposal.parent_id, self.env.editable)
        if proposal.rejected:
            return Outcome(FailureLabel.PREFLIGHT_CRASH,
                           excerpt=f"the edit never applied: {proposal.rejected}"), None
        try:
            workspace = materialise(self.env, parent_files, run_dir / "workspace")
            if proposal.diff.strip():
                touched = apply_diff(self.env, workspace, proposal.diff)
                syntax_check(workspace, touched)
        except PreflightError as exc:
            return Outcome(FailureLabel.PREFLIGHT_CRASH, excerpt=str(exc)), None
        return None, workspace


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
    delta = outcome.score - best.score
    keep = env.direction.better(outcome.score, best.score, env.min_delta)
    return (Decision.KEEP if keep else Decision.DISCARD), delta


def run_loop(settings: Settings, agents: dict[str, Agent] | None = None,
             echo: Callable[[str], None] = print) -> Summary:
    """Run (or continue) a campaign. Returns what this invocation did.

    Raises:
        EnvironmentSpecError: the environment folder is broken.
        HarnessError: data could not be prepared, or the evaluator failed repeatedly.
    """
    campaign = open_campaign(settings, echo)
    env = campaign.env
    agents = agents if agents is not None else default_roster(env, settings)
    roster = [s for s in env.specialists if s.name in agents]
    if not roster:
        raise HarnessError(f"no agent for any specialist of {env.name}")
    summary = Summary(campaign.experiment_id, campaign.name)
    number = tracking.next_trial_number(campaign.client, campaign.experiment_id)
    started = last_keep = time.monotonic()
    aborts = 0
    exhausted: set[str] = set()
    earlier_spend = tracking.search_llm_cost(campaign.client, campaign.experiment_id)
    while True:
        spent = earlier_spend + sum(getattr(a, "spent_usd", 0.0) for a in agents.values())
        reason = _stop_reason(settings, number, started, last_keep, exhausted, roster, spent)
        if reason:
            summary.stop_reason = reason
            break
        if campaign.baseline() is None:  # first start, or the baseline's run was aborted
            proposal, context = BASELINE, "The baseline runs the recipe as the environment ships it."
        else:
            spec = roster[(number - 1) % len(roster)]
            if spec.name in exhausted:
                spec = next(s for s in roster if s.name not in exhausted)
            view = campaign.view(spec.name)
            context = lineage.render_context(view, spec.name, env.min_delta, env.score_metric,
                                             env.direction.value)
            ctx = AgentContext(env, spec, number, view, context,
                               lambda rid: tracking.load_recipe(campaign.client, rid, env.editable),
                               lambda rid: tracking.search_children(campaign.client,
                                                                    campaign.experiment_id, rid))
            try:
                proposal = agents[spec.name].propose(ctx)
            except EndpointError as exc:  # nothing was recorded for this turn: safe to resume
                summary.stop_reason = f"paused: {exc}"
                break
            except ProposalError as exc:
                echo(f"      {spec.name}: no proposal this turn ({exc})")
                exhausted.add(spec.name)
                continue
        trial, harness = campaign.run_trial(number, proposal, context)
        summary.trials.append(trial)
        summary.labels[trial.label.tag] += 1
        summary.harness_seconds.append(harness)
        if trial.decision in (Decision.KEEP, Decision.BASELINE):
            last_keep = time.monotonic()
        aborts = aborts + 1 if trial.label is FailureLabel.HARNESS_ABORT else 0
        echo(progress_line(trial, campaign.best()))
        if trial.decision is Decision.KEEP:
            exhausted.clear()  # a new kept trial is a new parent to build on
        if (proposal is BASELINE and aborts) or aborts >= MAX_ABORTS_IN_A_ROW:
            raise HarnessError(f"the evaluator failed {aborts} time(s) in a row; last: "
                               f"{trial.excerpt[:300]}")
        number += 1
    summary.best = campaign.best()
    return summary


def evaluate_recipe(settings: Settings, run_id: str | None,
                    echo: Callable[[str], None] = print) -> Trial:
    """Measure the environment's recipe as it is on disk, as one trial (`autoresearch evaluate`).

    With `run_id` (set by `mlflow run`), the measurement is recorded in that run.
    """
    campaign = open_campaign(settings, echo, run_id)
    proposal = Proposal("baseline", "The recipe as it is on disk, measured on its own.", "", None)
    trial, _ = campaign.run_trial(0, proposal, "Standalone evaluation: no specialist.", run_id)
    echo(progress_line(trial, trial if trial.score is not None else None))
    return trial


def open_campaign(settings: Settings, echo: Callable[[str], None],
                  run_id: str | None = None) -> Campaign:
    """Load the environment, connect to the store, recover orphans, prepare data.

    With `run_id`, the campaign is that run's experiment and nothing is recovered.
    """
    env = load_environment(settings.environment, settings.profile)
    client = tracking.connect(settings.tracking_uri)
    if run_id:
        experiment_id, name = tracking.run_experiment(client, run_id), "standalone"
        orphans = []
    else:
        name = settings.experiment or f"autoresearch/{env.name}"
        experiment_id = tracking.ensure_experiment(client, name, env)
        tracking.analyze(client)
        orphans = tracking.recover_orphans(client, experiment_id)
    for orphan, pid in orphans:
        if pid is not None:
            process.reap_orphan(pid, orphan.run_id)
        echo(f"t{orphan.number:04d} was left running by a dead loop: relabelled harness_abort")
    evaluator = CommandEvaluator(env, settings.workdir.resolve() / "data")
    evaluator.prepare(settings.workdir.resolve() / "logs")
    return Campaign(env, settings, client, experiment_id, name, evaluator, echo)


def default_roster(env: Environment, settings: Settings) -> dict[str, Agent]:
    """Offline specialists, with the LLM ones `settings` asks for in their place."""
    roster = offline_roster(env, settings.seed)
    if settings.llm is not None:
        roster.update(llm_roster(env, settings.llm, settings.llm_specialists,
                                 settings.max_repairs))
    return roster


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


def progress_line(trial: Trial, best: Trial | None) -> str:
    """`t0003 opt        ok                    4.1200 keep     best 4.1200  hypothesis`"""
    score = f"{trial.score:.4f}" if trial.score is not None else "-"
    decision = trial.decision.value if trial.decision else ""
    best_s = f"{best.score:.4f}" if best and best.score is not None else "-"
    return (f"t{trial.number:04d} {trial.specialist:<9} {trial.label.tag:<21} {score:>9} "
            f"{decision:<8} best {best_s:>9}  {lineage.clip(trial.hypothesis, 70)}")
