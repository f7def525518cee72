"""The offline specialist, the embedded default: real code edits with no API key.

An offline specialist owns a surface of the recipe and draws from the environment's technique
table (`techniques.py`). Each turn it builds on the best (sometimes another kept trial within the
keep margin of it; never one further behind, which could not win) and takes the first of these
rules that yields an edit not yet tried on that parent; the hypothesis starts with the rule:
- `react`: its own last trial, a technique that raises cost (`cost: up`), overran a budget, or a
  technique missed the gate: stack a cost cut or a compensation on that edit;
- `measured` / `prior`: the next technique expected to gain at least the keep margin, ordered by
  the delta the campaign measured for it, else by the table's `expected_delta`; so a technique
  kept on one branch is retried first on the new best;
- `stack`: its near-misses (measured gains inside the keep margin) applied together;
- `model`: knob values from a TPE model of the search-space knobs it owns (`knob_model.py`);
- `measured` / `prior` again: techniques expected to gain less than the margin (near-misses of
  the old best are retried on the new best here);
- `last resort`: the techniques its table expects to lose, failures last.
When none yields an edit it says it is exhausted. Deterministic per seed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from ..diffs import diff_sha, make_diff
from ..environment import Environment
from ..errors import ProposalError
from ..records import Direction, FailureLabel, Proposal, Trial
from .base import Agent, AgentContext
from .knob_model import KnobModel, declared_space, owned_knobs
from .strategies.space import set_knobs
from .techniques import TECHNIQUES_FILE, Technique, apply_technique, load_techniques

OTHER_PARENT_ODDS = 0.2
_TECHNIQUE = re.compile(r"offline technique '([^']+)'")  # in the notes of every offline trial


@dataclass
class OfflineAgent:
    """A specialist that needs no LLM: a technique table, lineage-driven rules, and a TPE model
    of the knobs it owns. Each hypothesis starts with the rule that picked it (listed above)."""

    name: str
    techniques: list[Technique]
    seed: int = 0
    model: KnobModel | None = None  # None: it owns no search-space knob

    def ask(self, ctx: AgentContext) -> Proposal:
        rng = random.Random(f"{self.seed}:{ctx.number}:{self.name}")
        reaction = self._reaction(ctx)
        if reaction is not None:
            proposal = self._compensate(ctx, rng, *reaction)
            if proposal is not None:
                return proposal
        deltas = measured(ctx, self.name)
        order = ranked(self.techniques, deltas, ctx.env.direction, rng)
        gain = {t.name: _expected_gain(t, deltas, ctx.env.direction) for t in order}
        strong = [t for t in order if gain[t.name] > 0 and gain[t.name] >= ctx.env.min_delta]
        small = [t for t in order if 0 < gain[t.name] < ctx.env.min_delta]
        rest = [t for t in order if gain[t.name] <= 0]
        for parent in self._parents(ctx, rng):
            at = _Parent.read(ctx, parent)
            proposal = (self._fresh(ctx, at, strong, deltas)
                        or self._stack(ctx, at, deltas)
                        or self._modelled(ctx, at)
                        or self._fresh(ctx, at, small, deltas)
                        or self._fresh(ctx, at, rest, deltas, rule="last resort"))
            if proposal is not None:
                return proposal
        raise ProposalError(f"{self.name} is exhausted: every technique in its table, every "
                            f"stack and its knob model were tried on every kept trial that "
                            f"could still win; add techniques to {TECHNIQUES_FILE} or an LLM "
                            f"specialist")

    def tell(self, trial: Trial) -> None:
        """Nothing to update: the next turn reads this trial back from the lineage."""

    def _parents(self, ctx: AgentContext, rng: random.Random) -> list[Trial]:
        """The best, and the kept trials that could still win (within the keep margin of it):
        the best first, or with some odds one of the others. A kept trial further behind is
        never a parent: an edit on it would have to gain its whole gap before it counted."""
        kept = list(ctx.view.leaderboard) or ([ctx.view.baseline] if ctx.view.baseline else [])
        if kept and kept[0].score is not None:
            env = ctx.env
            kept = [kept[0]] + [t for t in kept[1:] if t.score is not None and not
                                env.direction.better(kept[0].score, t.score, env.min_delta)]
        if len(kept) > 1 and rng.random() < OTHER_PARENT_ODDS:
            kept.insert(0, kept.pop(rng.randrange(1, len(kept))))
        return kept

    def _reaction(self, ctx: AgentContext) -> tuple[Trial, Technique, str, str] | None:
        """(failed trial, its technique, effect wanted, reason) after this specialist's last
        trial, a technique of its table, failed a budget its table says it raises (`cost: up`),
        or the gate, provided its parent is still a kept trial to build on. An edit that adds
        no cost and still overran says the parent sits at the budget's edge: a cut would only
        undo it."""
        last = next(iter(ctx.view.mine), None)
        kept = {t.run_id for t in ctx.view.leaderboard}
        if last is None or last.parent_id not in kept:
            return None
        match = _TECHNIQUE.match(last.notes)
        table = {t.name: t for t in self.techniques}
        technique = table.get(match.group(1)) if match else None
        if technique is None:
            return None  # a stack or a model proposal: the model steps back on its own
        if last.label in (FailureLabel.TRAIN_BUDGET_OVERRUN, FailureLabel.EVAL_BUDGET_OVERRUN,
                          FailureLabel.SIZE_BLOCKED) and technique.cost == "up":
            return last, technique, "cost", f"t{last.number:04d} hit {last.label.tag}; cut cost"
        if last.label is FailureLabel.DISQUALIFIED:
            return last, technique, "quality", f"t{last.number:04d} missed the gate; compensate"
        return None

    def _compensate(self, ctx: AgentContext, rng: random.Random, failed: Trial,
                    technique: Technique, effect: str, reason: str) -> Proposal | None:
        """Stack a cost cut or a quality boost on the failed edit, diffed against its parent;
        never one that moves the failed edit's own knobs, which would only undo it."""
        wanted = "down" if effect == "cost" else "up"
        fixes = [t for t in self.techniques if getattr(t, effect) == wanted
                 and not set(t.changes) & set(technique.changes)]
        if not fixes:
            return None
        parent = next(t for t in ctx.view.leaderboard if t.run_id == failed.parent_id)
        try:
            base = ctx.load_recipe(failed.run_id)
        except Exception:  # a preflight failure logs no recipe: nothing to stack on
            return None
        deltas = measured(ctx, self.name)
        at = _Parent.read(ctx, parent)
        return self._fresh(ctx, at, ranked(fixes, deltas, ctx.env.direction, rng), deltas,
                           rule="react", base=base, prefix=f"{reason}: ",
                           note=f"builds on failed trial t{failed.number:04d}")

    def _fresh(self, ctx: AgentContext, at: _Parent, techniques: list[Technique],
               deltas: dict[str, float | None], rule: str | None = None,
               base: dict[str, str] | None = None, prefix: str = "",
               note: str = "") -> Proposal | None:
        """The first of `techniques` (already in order) that makes a new edit of the parent.
        With `rule` None the rule is `measured` or `prior`, whichever ordered the technique."""
        for technique in techniques:
            try:
                files, changes = apply_technique(base or at.files, ctx.specialist.edits,
                                                 technique, ctx.env.profile)
            except (KeyError, ValueError, SyntaxError):
                continue
            diff = make_diff(at.files, files)
            if not diff or diff_sha(diff) in at.tried:
                continue
            why = rule or ("measured" if technique.name in deltas else "prior")
            hypothesis = f"[{why}] {prefix}{technique.hypothesis} ({', '.join(changes)})"
            notes = f"offline technique {technique.name!r}" + (f"; {note}" if note else "")
            return Proposal(self.name, hypothesis, diff, at.trial.run_id,
                            technique.expected_delta, notes)
        return None

    def _stack(self, ctx: AgentContext, at: _Parent,
               deltas: dict[str, float | None]) -> Proposal | None:
        """This specialist's near-misses (measured gains inside the keep margin) applied
        together on the parent: all of them, else the best two."""
        margin = ctx.env.min_delta
        near = sorted((g, name) for name, d in deltas.items()
                      if d is not None and 0 < (g := ctx.env.direction.gain(d)) <= margin)
        names = [name for _, name in reversed(near)]
        if len(names) < 2:
            return None
        table = {t.name: t for t in self.techniques}
        for group in (names, names[:2]):
            files, changes, used = at.files, [], []
            for name in group:
                try:
                    files, notes = apply_technique(files, ctx.specialist.edits, table[name],
                                                   ctx.env.profile)
                except (KeyError, ValueError, SyntaxError):
                    continue
                changes += notes
                used.append(name)
            diff = make_diff(at.files, files)
            if len(used) < 2 or not diff or diff_sha(diff) in at.tried:
                continue
            hypothesis = (f"[stack] near-misses {', '.join(used)} each gained less than the "
                          f"margin {margin:g}; together they may clear it ({', '.join(changes)})")
            return Proposal(self.name, hypothesis, diff, at.trial.run_id, None,
                            "offline stack " + " + ".join(repr(n) for n in used))
        return None

    def _modelled(self, ctx: AgentContext, at: _Parent) -> Proposal | None:
        """Knob values for the parent from the TPE model of this specialist's own knobs."""
        if self.model is None:
            return None
        made: dict[str, tuple[str, list[str]]] = {}

        def accept(values: dict[str, Any]) -> bool:
            files, notes = set_knobs(at.files, ctx.env, values)
            diff = make_diff(at.files, files)
            if diff and diff_sha(diff) not in at.tried:
                made["edit"] = diff, notes
            return "edit" in made

        seen = {t.run_id: t for t in (ctx.view.baseline, *ctx.view.best_chain,
                                      *ctx.view.best_children, *ctx.view.recent,
                                      *ctx.view.mine) if t is not None}
        found = self.model.propose(list(seen.values()), ctx.load_recipe, ctx.env, ctx.number,
                                   accept)
        if found is None:
            return None
        diff, notes = made["edit"]
        names = ", ".join(k.name for k in self.model.knobs)
        hypothesis = (f"[model] TPE over {self.name}'s knobs ({names}), fitted to {found[1]} "
                      f"measured trials, proposes {', '.join(notes)}")
        return Proposal(self.name, hypothesis, diff, at.trial.run_id, None,
                        f"offline knob model over {names}")


@dataclass(frozen=True)
class _Parent:
    """A parent as the rules of one turn see it: read from MLflow once per turn."""

    trial: Trial
    files: dict[str, str]  # its recipe
    tried: set[str]        # diff shas already run on it; a harness fault is not an idea tried

    @classmethod
    def read(cls, ctx: AgentContext, parent: Trial) -> _Parent:
        return cls(parent, ctx.load_recipe(parent.run_id),
                   {c.diff_sha for c in ctx.children(parent.run_id)
                    if c.label is not FailureLabel.HARNESS_ABORT})


def _expected_gain(t: Technique, deltas: dict[str, float | None],
                   direction: Direction) -> float:
    """What a technique is expected to gain (positive is better): its measured delta, else its
    prior; 0 for one that failed."""
    delta = deltas.get(t.name, t.expected_delta)
    return 0.0 if delta is None else direction.gain(delta)


def measured(ctx: AgentContext, name: str) -> dict[str, float | None]:
    """What the campaign measured of each of `name`'s techniques, from the trials it can see
    (newest wins): its delta against the best at record time, or None when it failed."""
    found: dict[str, float | None] = {}
    seen = (*ctx.view.best_children, *ctx.view.mine, *ctx.view.recent)
    for t in seen:
        match = _TECHNIQUE.match(t.notes)
        if t.specialist != name or not match or match.group(1) in found:
            continue
        if t.label is FailureLabel.OK:
            found[match.group(1)] = t.delta_vs_best if t.delta_vs_best is not None else 0.0
        elif t.label is not FailureLabel.HARNESS_ABORT:
            found[match.group(1)] = None
    return found


def ranked(techniques: list[Technique], deltas: dict[str, float | None], direction: Direction,
           rng: random.Random) -> list[Technique]:
    """Most promising first: the measured delta where the campaign has one, else the table's
    `expected_delta` (the prior); techniques that failed go last; the seeded `rng` breaks ties."""
    def key(t: Technique) -> tuple[bool, float, float]:
        delta = deltas.get(t.name, t.expected_delta)
        failed = t.name in deltas and delta is None
        return failed, 0.0 if failed else -direction.gain(delta), rng.random()
    return sorted(techniques, key=key)


def offline_roster(env: Environment, seed: int) -> dict[str, Agent]:
    """One offline specialist per roster entry of `env`, drawing from its table entries, the
    most promising table first."""
    table = load_techniques(env)
    space = declared_space(env)
    roster = {}
    for s in env.specialists:
        techniques = [t for name in (s.techniques_of or (s.name,)) for t in table.get(name, [])]
        knobs = owned_knobs(space, techniques)
        model = KnobModel(knobs, env.direction, seed) if knobs else None
        roster[s.name] = OfflineAgent(s.name, techniques, seed, model)
    return dict(sorted(roster.items(), key=lambda item: -_best_prior(item[1], env.direction)))


def _best_prior(agent: OfflineAgent, direction: Direction) -> float:
    """The largest gain its table expects of any technique: the roster's order, so untried
    specialists get their first turns most promising first."""
    return max((direction.gain(t.expected_delta) for t in agent.techniques), default=0.0)
