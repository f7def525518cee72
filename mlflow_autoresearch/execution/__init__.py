"""One trial from proposal to `TrialResult`: workspace and preflight, processes and budgets, the
MLflow Projects backend, the evaluator protocol. Never talks to the tracking store."""

from .engine import run_trial
from .evaluator import CommandEvaluator, Evaluator
from .preflight import PreflightError

__all__ = ["CommandEvaluator", "Evaluator", "PreflightError", "run_trial"]
