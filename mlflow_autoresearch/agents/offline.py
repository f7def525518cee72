"""The offline specialist, the embedded default: real code edits with no API key.

An offline specialist owns a surface of the recipe and draws from the environment's technique
table (`techniques.py`). It reads lineage like an LLM specialist would: it picks the best as
parent (sometimes another kept trial within the keep margin of it), after its own budget
overrun it stacks a cost cut on that edit, after a gate miss it stacks a compensation, and it
never submits an edit already tried on the same parent (so a crashed edit is not resubmitted). It tries its techniques most promising
first (`ranked`): by the table's `expected_delta` until the campaign has measured one, failures
last. Deterministic per seed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ..diffs import diff_sha, make_diff
from ..environment import Environment
from ..errors import ProposalError
from ..records import Direction, FailureLabel, Proposal, Trial
from .base import Agent, AgentContext
from .techniques import TECHNIQUES_FILE, Technique, apply_technique, load_techniques

OTHER_PARENT_ODDS = 0.2
_TECHNIQUE = re.compile(r"offline technique '([^']+)'")  # in the notes of every offline trial


@dataclass
class OfflineAgent:
    """A specialist that needs no LLM: a technique table plus lineage-driven reactions."""

    name: str
    techniques: list[Technique]
    seed: int = 0

    def ask(self, ctx: AgentContext) -> Proposal:
        rng = random.Random(f"{self.seed}:{ctx.number}:{self.name}")
        reaction = self._reaction(ctx)
        if reaction is not None:
            proposal = self._compensate(ctx, rng, *reaction)
            if proposal is not None:
                return proposal
        for parent in self._parents(ctx, rng):
            proposal = self._fresh(ctx, rng, parent, self.techniques)
            if proposal is not None:
                return proposal
        raise ProposalError(f"{self.name} has tried every technique in its table on every kept "
                            f"trial; add techniques to {TECHNIQUES_FILE} or an LLM specialist")

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

    def _reaction(self, ctx: AgentContext) -> tuple[Trial, str, str] | None:
        """(failed trial, effect wanted, reason) after this specialist's last trial failed a
        budget or gate, provided its parent is still a kept trial to build on."""
        last = next(iter(ctx.view.mine), None)
        kept = {t.run_id for t in ctx.view.leaderboard}
        if last is None or last.parent_id not in kept:
            return None
        if last.label in (FailureLabel.TRAIN_BUDGET_OVERRUN, FailureLabel.EVAL_BUDGET_OVERRUN,
                          FailureLabel.SIZE_BLOCKED):
            return last, "cost", f"t{last.number:04d} hit {last.label.tag}; cut cost"
        if last.label is FailureLabel.DISQUALIFIED:
            return last, "quality", f"t{last.number:04d} missed the gate; compensate"
        return None

    def _compensate(self, ctx: AgentContext, rng: random.Random, failed: Trial, effect: str,
                    reason: str) -> Proposal | None:
        """Stack a cost cut or a quality boost on the failed edit, diffed against its parent."""
        fixes = [t for t in self.techniques if getattr(t, effect) == ("down" if effect == "cost"
                                                                      else "up")]
        if not fixes:
            return None
        parent = next(t for t in ctx.view.leaderboard if t.run_id == failed.parent_id)
        try:
            base = ctx.load_recipe(failed.run_id)
        except Exception:  # a preflight failure logs no recipe: nothing to stack on
            return None
        return self._fresh(ctx, rng, parent, fixes, base=base, prefix=f"{reason}: ",
                           note=f"builds on failed trial t{failed.number:04d}")

    def _fresh(self, ctx: AgentContext, rng: random.Random, parent: Trial,
               techniques: list[Technique], base: dict[str, str] | None = None,
               prefix: str = "", note: str = "") -> Proposal | None:
        parent_files = ctx.load_recipe(parent.run_id)
        start = base or parent_files
        # A harness fault does not count as an idea tried (paper section 4).
        tried = {c.diff_sha for c in ctx.children(parent.run_id)
                 if c.label is not FailureLabel.HARNESS_ABORT}
        for technique in ranked(techniques, measured(ctx, self.name), ctx.env.direction, rng):
            try:
                files, changes = apply_technique(start, ctx.specialist.edits, technique,
                                                 ctx.env.profile)
            except (KeyError, ValueError, SyntaxError):
                continue
            diff = make_diff(parent_files, files)
            if not diff or diff_sha(diff) in tried:
                continue
            hypothesis = f"{prefix}{technique.hypothesis} ({', '.join(changes)})"
            notes = f"offline technique {technique.name!r}" + (f"; {note}" if note else "")
            return Proposal(self.name, hypothesis, diff, parent.run_id,
                            technique.expected_delta, notes)
        return None


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
    sign = 1.0 if direction is Direction.MINIMIZE else -1.0

    def key(t: Technique) -> tuple[bool, float, float]:
        delta = deltas.get(t.name, t.expected_delta)
        failed = t.name in deltas and delta is None
        return failed, 0.0 if failed else sign * delta, rng.random()
    return sorted(techniques, key=key)


def offline_roster(env: Environment, seed: int) -> dict[str, Agent]:
    """One offline specialist per roster entry of `env`, drawing from its table entries."""
    table = load_techniques(env)
    return {s.name: OfflineAgent(s.name, [t for name in (s.techniques_of or (s.name,))
                                          for t in table.get(name, [])], seed)
            for s in env.specialists}
