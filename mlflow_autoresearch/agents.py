"""Specialists: the `Agent` protocol and the offline specialist, the embedded default.

An offline specialist needs no API key and still makes real code edits. It owns a surface of the
recipe and draws from the environment's table of known techniques (`techniques.yaml`), each a set
of knob changes applied to the parent's recipe text. It reads lineage like an LLM specialist would:
it picks the best as parent (sometimes another kept trial), after its own budget overrun it stacks
a cost cut on that edit, after a gate miss it stacks a compensation, and it never submits an edit
already tried on the same parent (so a crashed edit is not resubmitted). Deterministic per seed.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from .environment import Environment, Specialist
from .errors import EnvironmentSpecError, ProposalError
from .lineage import LineageView
from .records import FailureLabel, Proposal, Trial
from .workspace import diff_sha, make_diff

TECHNIQUES_FILE = "techniques.yaml"
OTHER_PARENT_ODDS = 0.2
_EFFECTS = {"down", "same", "up"}
_RELATIVE = re.compile(r"^\s*([+\-*])\s*([0-9.eE+\-]+)\s*$")


@dataclass(frozen=True)
class AgentContext:
    """Everything a specialist may use to propose; built by the loop from MLflow."""

    env: Environment
    specialist: Specialist
    number: int
    view: LineageView
    rendered: str                                   # the lineage text (trial/context.md)
    load_recipe: Callable[[str], dict[str, str]]    # run id -> editable files, from MLflow
    children: Callable[[str], list[Trial]]          # run id -> its children, failures included


class Agent(Protocol):
    """Proposes one edit per turn. Raises ProposalError when it has nothing to propose."""

    name: str

    def propose(self, ctx: AgentContext) -> Proposal: ...


@dataclass(frozen=True)
class Technique:
    """A known edit: knob -> new value ("+k", "-k", "*k" relative, or a literal)."""

    name: str
    changes: dict[str, Any]
    hypothesis: str
    expected_delta: float
    cost: str = "same"
    quality: str = "same"


def load_techniques(env: Environment) -> dict[str, list[Technique]]:
    """The environment's technique table, keyed by specialist. Raises EnvironmentSpecError."""
    path = env.root / TECHNIQUES_FILE
    if not path.is_file():
        raise EnvironmentSpecError(f"{env.name} has no {TECHNIQUES_FILE}; offline specialists "
                                   f"need one (format in the README)")
    raw = yaml.safe_load(path.read_text()) or {}
    table: dict[str, list[Technique]] = {}
    problems = []
    for specialist, entries in raw.items():
        for i, e in enumerate(entries or []):
            where = f"{specialist}[{i}]"
            if not isinstance(e, dict) or not isinstance(e.get("set"), dict) or not e.get("name"):
                problems.append(f"{where} needs a name and a 'set' mapping of knob -> value")
                continue
            if e.get("cost", "same") not in _EFFECTS or e.get("quality", "same") not in _EFFECTS:
                problems.append(f"{where}: cost and quality must be one of {sorted(_EFFECTS)}")
                continue
            table.setdefault(str(specialist), []).append(Technique(
                str(e["name"]), dict(e["set"]), str(e.get("hypothesis", e["name"])),
                float(e.get("expected_delta", 0.0)), e.get("cost", "same"),
                e.get("quality", "same")))
    unknown = set(table) - {s.name for s in env.specialists}
    if unknown:
        problems.append(f"techniques for specialists not in the roster: {sorted(unknown)}")
    if problems:
        raise EnvironmentSpecError(f"{path} has problems: " + "; ".join(problems))
    return table


def apply_technique(files: dict[str, str], paths: tuple[str, ...], technique: Technique,
                    profile: str) -> tuple[dict[str, str], list[str]]:
    """Apply a technique's knob changes; returns the new files and `KNOB old->new` notes.

    A knob is a top-level line `NAME = <literal>  # comment` in one of `paths`; a dict literal
    keyed by profile changes only the active profile's entry. Raises KeyError for a missing knob.
    """
    out = dict(files)
    notes = []
    for knob, change in technique.changes.items():
        for rel in paths:
            match = re.search(rf"^{re.escape(knob)}\s*=\s*(.*?)(\s*#.*)?$", out[rel], re.M)
            if match:
                break
        else:
            raise KeyError(f"knob {knob} not found in {', '.join(paths)}")
        literal = match.group(1)
        value = ast.literal_eval(literal)
        if isinstance(value, dict):
            if profile not in value:
                raise KeyError(f"knob {knob} has no entry for profile {profile!r}")
            old = value[profile]
            entry = re.compile(rf"(['\"]{re.escape(profile)}['\"]\s*:\s*)([^,}}]+)")
            new_literal = entry.sub(lambda m: m.group(1) + repr(_change(old, change)), literal, 1)
        else:
            old = value
            new_literal = repr(_change(old, change))
        new = _change(old, change)
        notes.append(f"{knob} {repr(old)}->{repr(new)}")
        start, end = match.span(1)
        out[rel] = out[rel][:start] + new_literal + out[rel][end:]
    return out, notes


def _change(old: Any, change: Any) -> Any:
    relative = _RELATIVE.match(change) if isinstance(change, str) else None
    if not relative:
        return change
    op, amount = relative.group(1), float(relative.group(2))
    if isinstance(old, bool) or not isinstance(old, (int, float)):
        raise KeyError(f"cannot apply {change!r} to non-numeric value {old!r}")
    new = old + amount if op == "+" else old - amount if op == "-" else old * amount
    if isinstance(old, int):
        return max(0, int(round(new)))
    return float(f"{new:.6g}")


@dataclass
class OfflineAgent:
    """A specialist that needs no LLM: a technique table plus lineage-driven reactions."""

    name: str
    techniques: list[Technique]
    seed: int = 0

    def propose(self, ctx: AgentContext) -> Proposal:
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

    def _parents(self, ctx: AgentContext, rng: random.Random) -> list[Trial]:
        """Best first, or with some odds another kept trial first; then the rest as fallbacks."""
        kept = list(ctx.view.leaderboard) or ([ctx.view.baseline] if ctx.view.baseline else [])
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
        for technique in rng.sample(techniques, len(techniques)):
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


def offline_roster(env: Environment, seed: int) -> dict[str, Agent]:
    """One offline specialist per roster entry of `env`."""
    table = load_techniques(env)
    return {s.name: OfflineAgent(s.name, table.get(s.name, []), seed) for s in env.specialists}
