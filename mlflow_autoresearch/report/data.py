"""The report's inputs as rows: one `Row` per recorded trial, per-specialist stats and the summary.

Pure functions over `StoredRun` values (no MLflow), so the renderers and their tests need only
plain data. A trial's `outcome` splits `ok` by decision (baseline, keep, discard) and is otherwise
its label: the key every figure and the lineage page colour by.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import tags
from ..records import KEPT, Decision, Direction, FailureLabel

if TYPE_CHECKING:  # store/__init__ imports MLflow; the report only reads the dataclass's fields
    from ..store.base import StoredRun

RUNNING = "RUNNING"
INPUT_TOKENS = tags.AGENT_METRIC_PREFIX + tags.LLM_INPUT_TOKENS
OUTPUT_TOKENS = tags.AGENT_METRIC_PREFIX + tags.LLM_OUTPUT_TOKENS
COST_USD = tags.AGENT_METRIC_PREFIX + tags.LLM_COST_USD

# Outcome -> colour, in stacking order: decisions on ok trials first, then the failure labels.
COLORS = {
    Decision.BASELINE.value: "#3b3b3b",
    Decision.KEEP.value: "#2ca02c",
    Decision.DISCARD.value: "#8fb8de",
    FailureLabel.OK.tag: "#1f77b4",  # an ok trial without a decision (older runs)
    FailureLabel.CRASH.tag: "#d62728",
    FailureLabel.PREFLIGHT_CRASH.tag: "#ff9896",
    FailureLabel.TRAIN_BUDGET_OVERRUN.tag: "#ff7f0e",
    FailureLabel.EVAL_BUDGET_OVERRUN.tag: "#f5c26b",
    FailureLabel.SIZE_BLOCKED.tag: "#9467bd",
    FailureLabel.DISQUALIFIED.tag: "#8c564b",
    FailureLabel.ILLEGAL.tag: "#e377c2",
    FailureLabel.HARNESS_ABORT.tag: "#7f7f7f",
}
OTHER_COLOR = "#bcbd22"  # a label this version does not know
KEPT_DECISIONS = frozenset(d.value for d in KEPT)


def color(outcome: str) -> str:
    return COLORS.get(outcome, OTHER_COLOR)


def outcome_order(outcomes: Iterable[str]) -> list[str]:
    """The distinct outcomes given, in the palette's order (unknown ones last, sorted)."""
    present = set(outcomes)
    known = [o for o in COLORS if o in present]
    return known + sorted(present - set(COLORS))


@dataclass(frozen=True)
class Campaign:
    """What the report needs to know about one campaign besides its runs."""

    name: str
    experiment_id: str
    direction: Direction
    score_metric: str
    run_url: Callable[[str], str]  # run id -> the URL of its MLflow run page


@dataclass(frozen=True)
class Row:
    """One recorded trial, flattened from its run's tags and metrics."""

    run_id: str
    number: int
    specialist: str
    hypothesis: str
    parent_id: str | None
    label: str
    decision: str | None
    score: float | None
    delta: float | None
    in_domain: str | None    # true | false | unknown, None on runs from before the audit
    input_tokens: float | None
    output_tokens: float | None
    cost_usd: float | None

    @property
    def kept(self) -> bool:
        return self.decision in KEPT_DECISIONS

    @property
    def outcome(self) -> str:
        if self.label == FailureLabel.OK.tag and self.decision:
            return self.decision
        return self.label

    @property
    def name(self) -> str:
        return f"t{self.number:04d}"


def _number(run: StoredRun) -> int | None:
    raw = run.tags.get(tags.TRIAL)
    if raw is not None and raw.strip().lstrip("-").isdigit():
        return int(raw)
    metric = run.metrics.get(tags.TRIAL_NUMBER)
    return int(metric) if metric is not None else None


def to_rows(runs: Iterable[StoredRun]) -> list[Row]:
    """The recorded trials among `runs`, by trial number; in-flight runs and runs that are not
    trials (no trial number) are left out."""
    out = []
    for run in runs:
        number = _number(run)
        if run.status == RUNNING or number is None:
            continue
        t, m = run.tags, run.metrics
        out.append(Row(
            run_id=run.run_id, number=number, specialist=t.get(tags.SPECIALIST, "?"),
            hypothesis=t.get(tags.HYPOTHESIS, ""), parent_id=t.get(tags.PARENT) or None,
            label=t.get(tags.LABEL) or run.status.lower(), decision=t.get(tags.DECISION),
            score=m.get(tags.SCORE), delta=m.get(tags.DELTA_VS_BEST),
            in_domain=t.get(tags.AUDIT_IN_DOMAIN), input_tokens=m.get(INPUT_TOKENS),
            output_tokens=m.get(OUTPUT_TOKENS), cost_usd=m.get(COST_USD)))
    return sorted(out, key=lambda r: r.number)


def in_flight(runs: Iterable[StoredRun]) -> int:
    return sum(1 for run in runs if run.status == RUNNING)


def best_steps(direction: Direction, rows: list[Row]) -> list[tuple[int, float]]:
    """(trial number, best kept score so far) for each row from the first scored keep on."""
    steps: list[tuple[int, float]] = []
    best: float | None = None
    for row in rows:
        if row.kept and row.score is not None and (
                best is None or direction.better(row.score, best)):
            best = row.score
        if best is not None:
            steps.append((row.number, best))
    return steps


@dataclass(frozen=True)
class Summary:
    """The campaign's headline numbers; scores are None until a kept trial has one."""

    trials: int
    keeps: int
    in_flight: int
    best_score: float | None
    best_trial: int | None
    baseline_score: float | None
    baseline_trial: int | None

    def improvement(self, direction: Direction) -> float | None:
        """How much better the best is than the baseline (positive is better, either way)."""
        if self.best_score is None or self.baseline_score is None:
            return None
        return direction.gain(self.best_score - self.baseline_score)


def summarize(direction: Direction, rows: list[Row], running: int = 0) -> Summary:
    board = leaderboard(direction, rows)
    best = board[0] if board else None
    base = next((r for r in rows if r.decision == Decision.BASELINE.value), None)
    return Summary(
        trials=len(rows), keeps=sum(r.decision == Decision.KEEP.value for r in rows),
        in_flight=running, best_score=best.score if best else None,
        best_trial=best.number if best else None,
        baseline_score=base.score if base else None, baseline_trial=base.number if base else None)


def leaderboard(direction: Direction, rows: list[Row]) -> list[Row]:
    """Kept trials and the baseline with a score, best first (earlier first on ties)."""
    kept = [r for r in rows if r.kept and r.score is not None]
    return sorted(kept, key=lambda r: (-direction.gain(r.score), r.number))


@dataclass
class SpecialistStats:
    """One specialist's record over the campaign."""

    name: str
    trials: int = 0
    keeps: int = 0
    best_delta: float | None = None   # DELTA_VS_BEST of its keep that gained most
    labels: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    in_domain: int = 0
    out_of_domain: int = 0
    tokens: float | None = None       # input + output, None when no trial logged LLM usage
    cost_usd: float | None = None

    @property
    def keep_rate(self) -> float:
        return self.keeps / self.trials if self.trials else 0.0

    @property
    def out_of_domain_rate(self) -> float | None:
        audited = self.in_domain + self.out_of_domain
        return self.out_of_domain / audited if audited else None


def specialist_stats(direction: Direction, rows: list[Row]) -> list[SpecialistStats]:
    """Per specialist, in order of first appearance."""
    stats: dict[str, SpecialistStats] = {}
    for row in rows:
        s = stats.setdefault(row.specialist, SpecialistStats(row.specialist))
        s.trials += 1
        s.labels[row.label] += 1
        s.outcomes[row.outcome] += 1
        if row.decision == Decision.KEEP.value:
            s.keeps += 1
            if row.delta is not None and (s.best_delta is None or direction.gain(row.delta)
                                          > direction.gain(s.best_delta)):
                s.best_delta = row.delta
        s.in_domain += row.in_domain == "true"
        s.out_of_domain += row.in_domain == "false"
        if row.input_tokens is not None or row.output_tokens is not None:
            s.tokens = (s.tokens or 0.0) + (row.input_tokens or 0.0) + (row.output_tokens or 0.0)
        if row.cost_usd is not None:
            s.cost_usd = (s.cost_usd or 0.0) + row.cost_usd
    return list(stats.values())
