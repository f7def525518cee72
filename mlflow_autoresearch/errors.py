"""The few exceptions the harness raises. A failed trial is never one of them: it is a record."""


class AutoresearchError(Exception):
    """Base of every error this package raises on purpose; the CLI prints it as one message."""


class EnvironmentSpecError(AutoresearchError):
    """An environment folder (autoresearch.yaml, MLproject, files) is broken; lists every problem."""


class ProposalError(AutoresearchError):
    """A specialist could not produce a proposal this turn."""


class HarnessError(AutoresearchError):
    """The harness itself failed (evaluator broken k times in a row, evaluator and spec disagree)."""


class StoreError(AutoresearchError):
    """The tracking store is unreachable, missing, or refused a write; nothing was half-recorded."""


class LeaseError(AutoresearchError):
    """Another loop holds the campaign, or took it over from this one."""
