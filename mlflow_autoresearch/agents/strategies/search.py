"""Baseline search strategies over an environment's `search_space`: random search and Optuna's
TPE. Each proposal sets a whole knob vector on the baseline's recipe, so every trial is an
ordinary trial (same contract, evaluator, seeds and keep rule as the specialists').

Optuna keeps no database: its study lives in memory and is rebuilt, on the first turn of every
loop process, from the campaign's own trials in MLflow (each trial's knob values are read from
the recipe it ran, its value from its score; failed trials are told as failed).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

import optuna

from ...diffs import diff_sha, make_diff
from ...errors import ProposalError
from ...records import FailureLabel, Proposal, Trial
from ...environment import Environment
from ..base import Agent, AgentContext
from .space import Knob, knob_values, load_search_space, set_knobs

STRATEGIES = ("specialists", "random", "optuna")
MAX_DRAWS = 32  # draws that land on the baseline's own values before a turn gives up
optuna.logging.set_verbosity(logging.WARNING)


def knob_proposal(ctx: AgentContext, name: str, values: dict[str, Any],
                  why: str) -> Proposal | None:
    """A proposal setting `values` on the baseline's recipe; None when it changes nothing."""
    baseline = ctx.view.baseline
    if baseline is None:
        raise ProposalError(f"{name} needs a measured baseline to build on")
    before = ctx.load_recipe(baseline.run_id)
    after, notes = set_knobs(before, ctx.env, values)
    diff = make_diff(before, after)
    if not diff:
        return None
    return Proposal(name, f"{why}: {', '.join(notes)}", diff, baseline.run_id, None,
                    f"{name} search over {len(values)} knobs")


def tried_as(ctx: AgentContext, proposal: Proposal) -> Trial | None:
    """The trial that ran (or runs now) this very edit on the baseline, if any: a harness
    fault is not a point measured."""
    sha = diff_sha(proposal.diff)
    return next((t for t in ctx.children(proposal.parent_id) if t.diff_sha == sha
                 and t.label is not FailureLabel.HARNESS_ABORT), None)


@dataclass
class RandomSearch:
    """Draws every knob independently and uniformly (log-uniformly on a log scale)."""

    knobs: tuple[Knob, ...]
    seed: int = 0
    name: str = "random"

    def ask(self, ctx: AgentContext) -> Proposal:
        rng = random.Random(f"{self.seed}:{ctx.number}:{self.name}")
        for _ in range(MAX_DRAWS):
            values = {k.name: fitted(k, draw(k, rng)) for k in self.knobs}
            proposal = knob_proposal(ctx, self.name, values, "random draw")
            if proposal is not None and tried_as(ctx, proposal) is None:
                return proposal
        raise ProposalError(f"{self.name}: {MAX_DRAWS} draws all matched the baseline or a "
                            f"point already tried")

    def tell(self, trial: Trial) -> None:
        """Random search learns nothing."""


def draw(knob: Knob, rng: random.Random) -> Any:
    if knob.kind == "categorical":
        return rng.choice(knob.choices)
    if knob.kind == "int":
        return rng.randint(int(knob.low), int(knob.high))
    if knob.log:
        return knob.low * (knob.high / knob.low) ** rng.random()
    return rng.uniform(knob.low, knob.high)


def fitted(knob: Knob, value: Any) -> Any:
    """A float to four significant digits (a readable diff that reads back exactly), kept
    inside its range; other kinds as they are."""
    if knob.kind != "float":
        return value
    return min(max(float(f"{value:.4g}"), knob.low), knob.high)


@dataclass
class OptunaSearch:
    """Optuna's TPE sampler through ask and tell, seeded by the campaign seed."""

    knobs: tuple[Knob, ...]
    direction: str
    seed: int = 0
    name: str = "optuna"
    study: optuna.Study | None = None
    pending: dict[str, optuna.trial.Trial] = field(default_factory=dict)  # diff sha -> asked

    def ask(self, ctx: AgentContext) -> Proposal:
        if self.study is None:
            self.study = self._rebuilt(ctx)
        for _ in range(MAX_DRAWS):
            asked = self.study.ask(self.distributions)
            values = {k.name: fitted(k, asked.params[k.name]) for k in self.knobs}
            proposal = knob_proposal(ctx, self.name, values, "TPE proposal")
            if proposal is None:
                self.study.tell(asked, ctx.view.baseline.score)  # the baseline's own point
                continue
            seen = tried_as(ctx, proposal)
            if seen is None:
                self.pending[diff_sha(proposal.diff)] = asked
                return proposal
            if seen.label is FailureLabel.OK:  # a point measured already: its score again
                self.study.tell(asked, seen.score)
            else:  # failed, or running now (its score unknown yet)
                self.study.tell(asked, state=optuna.trial.TrialState.FAIL)
        raise ProposalError(f"{self.name}: {MAX_DRAWS} proposals all matched the baseline or "
                            f"a point already tried")

    def tell(self, trial: Trial) -> None:
        """Tell Optuna how the trial ended: its score, or failed. A harness fault is not the
        recipe's doing and is not told: the retry of the same diff is."""
        if trial.label is FailureLabel.HARNESS_ABORT or trial.diff_sha not in self.pending:
            return  # a retry of the same diff will be told
        asked = self.pending.pop(trial.diff_sha)
        if trial.label is FailureLabel.OK:
            self.study.tell(asked, trial.score)
        else:
            self.study.tell(asked, state=optuna.trial.TrialState.FAIL)

    @property
    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {k.name: distribution(k) for k in self.knobs}

    def _rebuilt(self, ctx: AgentContext) -> optuna.Study:
        """A fresh study holding every finished trial this strategy ran in the campaign."""
        direction = "minimize" if self.direction == "minimize" else "maximize"
        study = optuna.create_study(direction=direction,
                                    sampler=optuna.samplers.TPESampler(seed=self.seed))
        baseline = ctx.view.baseline
        history = ctx.children(baseline.run_id) if baseline is not None else []
        for past in sorted(history, key=lambda t: t.number):
            if past.specialist != self.name or past.label in (None, FailureLabel.HARNESS_ABORT):
                continue
            values = knob_values(ctx.load_recipe(past.run_id), ctx.env,
                                 [k.name for k in self.knobs])
            if not all(k.contains(values[k.name]) for k in self.knobs):
                continue  # a preflight failure records its parent's recipe: nothing to learn
            ok = past.label is FailureLabel.OK
            study.add_trial(optuna.trial.create_trial(
                params=values, distributions=self.distributions,
                value=past.score if ok else None,
                state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL))
        return study


def distribution(knob: Knob) -> optuna.distributions.BaseDistribution:
    """The knob's range as an Optuna distribution."""
    if knob.kind == "categorical":
        return optuna.distributions.CategoricalDistribution(knob.choices)
    if knob.kind == "int":
        return optuna.distributions.IntDistribution(int(knob.low), int(knob.high))
    return optuna.distributions.FloatDistribution(knob.low, knob.high, log=knob.log)


def strategy_roster(env: Environment, strategy: str, seed: int) -> dict[str, Agent]:
    """The one agent of a search strategy (`random` or `optuna`) over `env`'s search space.

    Raises:
        EnvironmentSpecError: the environment declares no usable `search_space`.
    """
    knobs = load_search_space(env)
    if strategy == "random":
        return {strategy: RandomSearch(knobs, seed)}
    return {strategy: OptunaSearch(knobs, env.direction.value, seed)}
