"""Executors: where the campaign's trials run, how many at once (`base.Executor`): `local`
slots on this machine, or `ray` tasks on a cluster (imported only when asked for)."""

from .base import Done, Executor, Job, lost
from .local import LocalExecutor

__all__ = ["Done", "Executor", "Job", "LocalExecutor", "lost"]
