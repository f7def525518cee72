"""mlflow-autoresearch: specialist agents search ML training recipes; MLflow records every trial.

The public surface, for scripts and environment authors; the CLI is `autoresearch`. The layers,
top to bottom: `cli`, `campaign`, `agents`, `execution` and `store`, then the vocabulary
(`records`, `tags`, `errors`, `diffs`, `environment`, `lineage`); docs/architecture.md.
"""

from .environment import Environment, load_environment
from .errors import (AutoresearchError, EnvironmentSpecError, HarnessError, LeaseError,
                     ProposalError, StoreError)
from .records import Decision, Direction, FailureLabel, Outcome, Proposal, Trial, TrialResult

__all__ = [
    "AutoresearchError", "Decision", "Direction", "Environment", "EnvironmentSpecError",
    "FailureLabel", "HarnessError", "LeaseError", "Outcome", "Proposal", "ProposalError",
    "StoreError", "Trial", "TrialResult", "load_environment",
]
