"""The system of record: the `TrialStore` protocol and its MLflow implementation, the only code
in the package that talks to MLflow tracking."""

from .base import Lease, StoredRun, TrialStore
from .mlflow_store import MlflowStore, default_uri

__all__ = ["Lease", "MlflowStore", "StoredRun", "TrialStore", "default_uri"]
