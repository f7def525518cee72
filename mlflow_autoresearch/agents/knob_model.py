"""A specialist's model of its own knobs: TPE over the search-space knobs its techniques move.

Once a specialist has tried its promising techniques on the best, fixed steps stop paying: a
kept change should be followed further, an overrun or gate miss stepped back from, and values
between and beyond the table's reached. So the specialist fits Optuna's TPE over the knobs it
owns (the `search_space` knobs its table entries set), from the campaign's measured trials it
can see, and sets the sampled values on the best's recipe; the other knobs stay as the best has
them. Every visible trial is a point (its knob values read from the recipe it ran); a trial that
failed a budget or gate counts as the worst score seen, so the model steps back from it.
Deterministic per campaign seed and trial number.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna

from ..environment import Environment
from ..records import Direction, FailureLabel, Trial
from .strategies.search import distribution, fitted
from .strategies.space import Knob, declares_search_space, knob_values, load_search_space
from .techniques import Technique

STARTUP = 3  # measured points before TPE's model replaces uniform draws
DRAWS = 8    # samples per turn before the model gives up finding an untried vector


def declared_space(env: Environment) -> tuple[Knob, ...]:
    """The environment's search space, or () when it declares none (then no specialist has a
    knob model)."""
    return load_search_space(env) if declares_search_space(env) else ()


def owned_knobs(space: tuple[Knob, ...], techniques: list[Technique]) -> tuple[Knob, ...]:
    """The knobs of `space` that a specialist's techniques set."""
    names = {knob for t in techniques for knob in t.changes}
    return tuple(k for k in space if k.name in names)


@dataclass
class KnobModel:
    """TPE over `knobs`, refitted each turn from the trials a specialist can see."""

    knobs: tuple[Knob, ...]
    direction: Direction
    seed: int = 0
    points: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> knob values

    def propose(self, trials: list[Trial], load_recipe: Callable[[str], dict[str, str]],
                env: Environment, number: int,
                accept: Callable[[dict[str, Any]], bool]) -> tuple[dict[str, Any], int] | None:
        """(knob values `accept` takes, measured points used), or None after `DRAWS` refusals."""
        study = self._fitted(trials, load_recipe, env, number)
        n = len(study.trials)
        for _ in range(DRAWS):
            asked = study.ask(self.distributions)
            values = {k.name: fitted(k, asked.params[k.name]) for k in self.knobs}
            if accept(values):
                return values, n
            study.tell(asked, state=optuna.trial.TrialState.FAIL)
        return None

    def _fitted(self, trials: list[Trial], load_recipe: Callable[[str], dict[str, str]],
                env: Environment, number: int) -> optuna.Study:
        seed = zlib.crc32(f"{self.seed}:{number}:{[k.name for k in self.knobs]}".encode())
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP)
        minimize = self.direction is Direction.MINIMIZE
        study = optuna.create_study(direction="minimize" if minimize else "maximize",
                                    sampler=sampler)
        measured = [t for t in trials if t.label is FailureLabel.OK and t.score is not None]
        if not measured:
            return study
        worst = max(t.score for t in measured) if minimize else min(t.score for t in measured)
        for t in trials:
            if t.label in (None, FailureLabel.HARNESS_ABORT):
                continue
            values = self._values(t, load_recipe, env)
            if values is None:
                continue
            value = t.score if t.label is FailureLabel.OK and t.score is not None else worst
            study.add_trial(optuna.trial.create_trial(params=values, value=value,
                                                      distributions=self.distributions))
        return study

    @property
    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {k.name: distribution(k) for k in self.knobs}

    def _values(self, t: Trial, load_recipe: Callable[[str], dict[str, str]],
                env: Environment) -> dict[str, Any] | None:
        """The trial's knob values (read once per run: a recipe never changes), or None when
        they are not all inside the space (a preflight failure records no recipe of its own)."""
        if t.run_id not in self.points:
            try:
                self.points[t.run_id] = knob_values(load_recipe(t.run_id), env,
                                                    [k.name for k in self.knobs])
            except Exception:  # no recipe artifact: nothing to learn from this trial
                self.points[t.run_id] = {}
        values = self.points[t.run_id]
        return values if all(k.contains(values.get(k.name)) for k in self.knobs) else None
