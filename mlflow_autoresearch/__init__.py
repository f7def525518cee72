"""mlflow-autoresearch: specialist agents search ML training recipes; MLflow records every trial.

The public surface, for scripts and environment authors; the CLI is `autoresearch`.
"""

from .environment import Environment, load_environment
from .errors import AutoresearchError, EnvironmentSpecError, HarnessError, ProposalError
from .records import Decision, Direction, FailureLabel, Outcome, Proposal, Trial

__all__ = [
    "AutoresearchError", "Decision", "Direction", "Environment", "EnvironmentSpecError",
    "FailureLabel", "HarnessError", "Outcome", "Proposal", "ProposalError", "Trial",
    "load_environment",
]
