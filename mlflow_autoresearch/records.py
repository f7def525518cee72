"""The vocabulary every module passes around: labels, decisions, proposals, outcomes, trials.

Frozen dataclasses and enums with their invariants checked at construction. No I/O: building a
`Trial` from an MLflow run is the store's job, deciding a label is the evaluator's, producing a
`TrialResult` is execution's.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field


class FailureLabel(enum.IntEnum):
    """A trial's verdict. The value is the `failure_code` metric; the tag is the lower-case name.

    Codes are stable and append-only (see evaluators/README.md): never renumber or reuse one.
    """

    OK = 0
    CRASH = 1
    PREFLIGHT_CRASH = 2
    TRAIN_BUDGET_OVERRUN = 3
    EVAL_BUDGET_OVERRUN = 4
    SIZE_BLOCKED = 5
    DISQUALIFIED = 6
    ILLEGAL = 7
    HARNESS_ABORT = 8

    @property
    def tag(self) -> str:
        return self.name.lower()

    @classmethod
    def from_tag(cls, value: str) -> FailureLabel:
        try:
            return cls[value.upper()]
        except KeyError:
            known = ", ".join(label.tag for label in cls)
            raise ValueError(f"unknown label {value!r}; expected one of: {known}") from None


class Decision(str, enum.Enum):
    """What the loop made of an `ok` trial against the best at record time."""

    BASELINE = "baseline"
    KEEP = "keep"
    DISCARD = "discard"


class Direction(str, enum.Enum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"

    def better(self, a: float, b: float, margin: float = 0.0) -> bool:
        """True when score `a` beats `b` by more than `margin`."""
        return a < b - margin if self is Direction.MINIMIZE else a > b + margin

    def gain(self, delta: float) -> float:
        """How much better a score delta makes the score: positive is better, either way."""
        return -delta if self is Direction.MINIMIZE else delta


KEPT = (Decision.BASELINE, Decision.KEEP)  # decisions that make a trial a parent and a best


@dataclass(frozen=True)
class WouldKeep:
    """The keep rule as a value a job carries to wherever it runs: true for an ok outcome that
    beats `best` by more than `margin` (any ok outcome while there is no best), the trials worth
    the confirmation seeds."""

    direction: Direction
    best: float | None
    margin: float

    def __call__(self, outcome: Outcome) -> bool:
        return outcome.label is FailureLabel.OK and (
            self.best is None or self.direction.better(outcome.score, self.best, self.margin))

EXCERPT_CHARS = 2000


@dataclass(frozen=True)
class LLMCall:
    """One request an LLM specialist made while proposing: what it sent, what came back, and
    what it cost. The store records each proposal's calls as an MLflow trace on its trial."""

    messages: tuple[dict[str, str], ...]  # the chat messages sent, {"role", "content"}
    answer: str
    model: str
    started: float          # unix seconds
    seconds: float
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    purpose: str = "propose"  # propose | repair: a repair answers an edit that failed


@dataclass(frozen=True)
class Proposal:
    """One specialist's hypothesis and the code edit that tests it.

    `diff` is a unified diff against the parent trial's recipe (paths relative to the environment
    folder, `a/` and `b/` prefixes); it may be empty only for the baseline.
    """

    specialist: str
    hypothesis: str
    diff: str
    parent_id: str | None
    expected_delta: float | None = None
    notes: str = ""
    metrics: dict[str, float] = field(default_factory=dict)    # e.g. llm_input_tokens
    tags: dict[str, str] = field(default_factory=dict)         # e.g. the model name
    artifacts: dict[str, str] = field(default_factory=dict)    # name -> text, e.g. the prompt
    rejected: str = ""  # why the specialist's own edit never applied: preflight records this
    retry_of: str | None = None  # the harness_abort trial whose proposal this re-runs
    calls: tuple[LLMCall, ...] = ()  # an LLM specialist's requests for this proposal

    def __post_init__(self) -> None:
        if not self.specialist.strip():
            raise ValueError("a proposal needs a specialist name")
        if not self.hypothesis.strip():
            raise ValueError("a proposal needs a one-sentence hypothesis")
        if self.parent_id is not None and not self.diff.strip():
            raise ValueError("a proposal with a parent needs a non-empty diff")
        if self.expected_delta is not None and not math.isfinite(self.expected_delta):
            raise ValueError(f"expected_delta must be finite, got {self.expected_delta}")


@dataclass(frozen=True)
class Outcome:
    """What the evaluator (or the harness, for faults it caught itself) measured.

    `score` is finite exactly when the label is OK, so a failed trial can never win; numbers
    measured on failed trials go in `metrics`.
    """

    label: FailureLabel
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    excerpt: str = ""
    seconds: float = 0.0
    gates: tuple[str, ...] = ()  # the environment's gates the evaluator says it checked

    def __post_init__(self) -> None:
        if self.label is FailureLabel.OK:
            if self.score is None or not math.isfinite(self.score):
                raise ValueError(f"an ok outcome needs a finite score, got {self.score}")
        elif self.score is not None:
            raise ValueError(f"a {self.label.tag} outcome carries no score (got {self.score})")
        for name, value in self.metrics.items():
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"metric {name!r} must be a finite number, got {value!r}")
        if len(self.excerpt) > EXCERPT_CHARS:
            object.__setattr__(self, "excerpt", self.excerpt[-EXCERPT_CHARS:])


@dataclass(frozen=True)
class Trial:
    """A detached record of one trial as MLflow holds it; never writes.

    `outcome` is None while the trial is running; `decision` is set only on ok trials.
    """

    run_id: str
    number: int
    specialist: str
    hypothesis: str
    parent_id: str | None
    status: str
    label: FailureLabel | None = None
    score: float | None = None
    decision: Decision | None = None
    delta_vs_best: float | None = None
    notes: str = ""
    excerpt: str = ""
    diff_sha: str = ""
    start_time: int = 0
    retry_of: str | None = None  # the harness_abort trial whose proposal this one re-ran
    confirm: str = ""  # passed | failed once its confirmation seeds ran, else ""

    @property
    def verdict(self) -> str:
        """The label's tag, or the run status while no label exists (a running trial)."""
        return self.label.tag if self.label is not None else self.status.lower()

    @property
    def is_kept(self) -> bool:
        return self.decision in KEPT


@dataclass(frozen=True)
class Audit:
    """What an edit touched, grouped by owner ("opt", "opt+reg", "unowned"), and whether its
    specialist owns all of it: "true", "false", or "unknown" when no surface is declared."""

    touched: tuple[tuple[str, tuple[str, ...]], ...]
    in_domain: str

    def describe(self) -> str:
        """The `autoresearch.audit.touched` tag: `opt: LR, MOMENTUM; unowned: X`."""
        return "; ".join(f"{owner}: {', '.join(names)}" for owner, names in self.touched)


@dataclass(frozen=True)
class TrialResult:
    """One proposal after execution: the outcome and everything the harness measured around it.

    Built by `execution.run_trial`, recorded whole by the store. `error` is set when the harness
    itself failed or was interrupted (the outcome is then `harness_abort`): the loop records the
    trial first and re-raises it after.
    """

    outcome: Outcome
    recipe: dict[str, str]    # the editable surface as it ran (the parent's if the edit never applied)
    logs: dict[str, str]      # name -> text: each seed's output, the evaluator's, preflight's
    diff_lines: int
    trial_seconds: float      # the whole trial, harness included
    recipe_seconds: float     # inside the seeds' processes
    error: BaseException | None = None
    confirmed: bool = False   # the confirmation seeds ran too; the outcome pools both
    where: dict[str, str] = field(default_factory=dict)  # executor, node, slot: where it ran
    audit: Audit | None = None  # None when the harness never got as far as the edit

    @property
    def harness_seconds(self) -> float:
        return max(0.0, self.trial_seconds - self.recipe_seconds)

    @property
    def killed(self) -> bool:
        """The user interrupted the trial (Ctrl-C, SIGTERM), rather than the harness failing."""
        return isinstance(self.error, KeyboardInterrupt)
