"""The evaluator protocol, and the evaluator every environment uses: a harness-owned script.

`CommandEvaluator` runs `evaluators/<env>.py` (contract: evaluators/README.md) under the
environment's eval budget, through the process layer, and turns its `outcome.json` into an
`Outcome`. Faults of the evaluator itself are never blamed on the recipe: a timeout is
`eval_budget_overrun`, a crash or an invalid file `harness_abort`. `disagreement` catches an
evaluator and a spec that do not match (a misspelt score metric, a gate the evaluator ignores).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..environment import Environment
from ..errors import HarnessError
from ..records import EXCERPT_CHARS, FailureLabel, Outcome
from . import process
from .sandbox import NONE, Sandbox

OUTCOME_FILE = "outcome.json"
SCHEMA = 2


class Evaluator(Protocol):
    """Scores one trial's run directory (`harness.json` plus what the seeds saved).

    `public_dir` is the data the recipe may read (its `data_dir`). `score` never raises for
    anything the recipe did; it reports each process group it starts to `on_start`.
    """

    public_dir: Path

    def prepare(self, log_dir: Path) -> None: ...

    def score(self, run_dir: Path,
              on_start: Callable[[process.Group], None] = lambda group: None) -> Outcome: ...


@dataclass(frozen=True)
class CommandEvaluator:
    """Runs `python <env.evaluator> {prepare,score} ...` for one environment and profile; the
    evaluator runs outside the sandbox and starts its recipe-importing children in `sandbox`."""

    env: Environment
    data_root: Path
    sandbox: Sandbox = Sandbox(NONE)

    @property
    def data_dir(self) -> Path:
        return self.data_root / self.env.name / self.env.profile

    @property
    def public_dir(self) -> Path:
        return self.data_dir / "public"

    def prepare(self, log_dir: Path) -> None:
        """Build or find the profile's data. Raises HarnessError with the evaluator's reason."""
        log_dir.mkdir(parents=True, exist_ok=True)
        stdout, stderr = log_dir / "prepare.stdout.txt", log_dir / "prepare.stderr.txt"
        finished = process.run(
            self._argv("prepare", "--profile", self.env.profile, "--data-dir", str(self.data_dir)),
            self.env.evaluator.parent, None, stdout, stderr, self._child_env())
        if finished.exit_code != 0:
            lines = stderr.read_text(errors="replace").strip().splitlines() or ["(no output)"]
            raise HarnessError(f"preparing {self.env.name} data ({self.env.profile}) failed: "
                               f"{lines[-1]}")

    def score(self, run_dir: Path,
              on_start: Callable[[process.Group], None] = lambda group: None) -> Outcome:
        out = run_dir / OUTCOME_FILE
        stdout, stderr = run_dir / "evaluator.stdout.txt", run_dir / "evaluator.stderr.txt"
        finished = process.run(
            self._argv("score", "--profile", self.env.profile, "--data-dir", str(self.data_dir),
                       "--run-dir", str(run_dir), "--out", str(out)),
            self.env.evaluator.parent, self.env.eval_seconds, stdout, stderr, self._child_env(),
            on_start)
        if finished.timed_out:
            return Outcome(FailureLabel.EVAL_BUDGET_OVERRUN, seconds=finished.seconds,
                           excerpt=f"evaluation killed at {finished.seconds:.1f} s "
                                   f"(budget {self.env.eval_seconds:g} s)")
        if finished.exit_code != 0 or not out.is_file():
            tail = stderr.read_text(errors="replace")[-EXCERPT_CHARS:].strip()
            return Outcome(FailureLabel.HARNESS_ABORT, seconds=finished.seconds,
                           excerpt=f"evaluator exited {finished.exit_code}: {tail}")
        try:
            return parse_outcome(out.read_text(), finished.seconds)
        except ValueError as exc:
            return Outcome(FailureLabel.HARNESS_ABORT, seconds=finished.seconds,
                           excerpt=f"evaluator wrote an invalid {OUTCOME_FILE}: {exc}")

    def _argv(self, *args: str) -> list[str]:
        return [sys.executable, str(self.env.evaluator), *args]

    def _child_env(self) -> dict[str, str]:
        return process.child_env({**self.env.child_env(), **self.sandbox.child_env()})


def parse_outcome(text: str, seconds: float = 0.0) -> Outcome:
    """Validate an `outcome.json` document (schema 2). Raises ValueError naming the problem."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"expected an object with \"schema\": {SCHEMA}")
    label = FailureLabel.from_tag(str(doc.get("label")))
    if label in (FailureLabel.PREFLIGHT_CRASH, FailureLabel.HARNESS_ABORT):
        raise ValueError(f"label {label.tag!r} is the harness's to give, not the evaluator's")
    metrics = doc.get("metrics", {})
    if not isinstance(metrics, dict):
        raise ValueError("\"metrics\" must be an object of name -> number")
    clean = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"metric {name!r} is not a number: {value!r}")
        if math.isfinite(value):
            clean[str(name)] = float(value)
    gates = doc.get("gates")
    if not isinstance(gates, list) or not all(isinstance(g, str) for g in gates):
        raise ValueError("\"gates\" must list the names of the gates the evaluator checked")
    score = doc.get("score")
    excerpt = doc.get("excerpt") or ""
    if not isinstance(excerpt, str):
        raise ValueError("\"excerpt\" must be a string")
    return Outcome(label, score=None if score is None else float(score), metrics=clean,
                   excerpt=excerpt, seconds=seconds, gates=tuple(gates))


def disagreement(env: Environment, outcome: Outcome) -> str:
    """Why the evaluator and the spec do not match, judged on an outcome that reached scoring
    (`ok` or `disqualified`); "" when they do. Any other label says nothing either way."""
    if outcome.label not in (FailureLabel.OK, FailureLabel.DISQUALIFIED):
        return ""
    reported = ", ".join(sorted(outcome.metrics)) or "nothing"
    if env.score_metric not in outcome.metrics:
        return (f"the evaluator reported no metric {env.score_metric!r}, the spec's score.metric "
                f"(it reported: {reported}); fix score.metric in {env.root.name}/autoresearch.yaml")
    missing = sorted(set(env.gates) - set(outcome.gates))
    if missing:
        applied = ", ".join(outcome.gates) or "none"
        return (f"the evaluator did not apply the gate(s) {missing} that the spec declares "
                f"(it applied: {applied}; it reported: {reported}); fix the gate names in "
                f"{env.root.name}/autoresearch.yaml")
    return ""
