"""The `TrialStore` protocol: what the campaign loop needs from a system of record.

The loop, the CLI and the shipped conformance suite (`testing.store_contract`) use only these
methods, so another store (a different tracking backend, an in-process one for tests) plugs in by
implementing them and passing `TrialStoreContract`.

Ownership: a campaign is written by the one loop that holds its lease. A trial is written twice,
`create_trial` at its start and `finish_trial` at its end; a run whose status is final is a
recorded result and is never rewritten; `recover` closes what a gone loop left open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..environment import Environment
from ..lineage import LineageView
from ..records import Decision, Direction, Proposal, Trial, TrialResult


@dataclass(frozen=True)
class StoredRun:
    """Everything the store holds for one run, as plain values (audits, contract checks)."""

    run_id: str
    name: str
    status: str
    tags: dict[str, str]
    metrics: dict[str, float]
    artifacts: tuple[str, ...]   # every artifact path, e.g. "trial/recipe/recipe/toy.py"
    params: dict[str, str] = field(default_factory=dict)  # the knobs the recipe ran with


class Lease(Protocol):
    """A loop's hold on one campaign, renewed in the background."""

    token: str
    lost: str

    def verify(self) -> None: ...

    def release(self) -> None: ...


class TrialStore(Protocol):
    """The system of record for campaigns and their trials. All methods raise StoreError on a
    store fault; `acquire_lease`, `create_trial` and `finish_trial` raise LeaseError when another
    loop holds (or took) the campaign."""

    uri: str

    def open_campaign(self, name: str, env: Environment, kind: str = ...,
                      controls: dict[str, str] | None = None) -> str: ...

    def campaigns(self, name: str | None = None) -> list[tuple[str, str]]: ...

    def campaign_of(self, run_id: str) -> str: ...

    def direction(self, campaign_id: str) -> Direction: ...

    def keep_margin(self, campaign_id: str) -> tuple[float, str] | None: ...

    def record_margin(self, campaign_id: str, margin: float, source: str,
                      baseline_id: str | None = None, scores: tuple[float, ...] = ()) -> None: ...

    def analyze(self) -> None:
        """Refresh the backend's query statistics (a no-op where it keeps its own)."""

    def acquire_lease(self, campaign_id: str, take_over: bool = False) -> Lease: ...

    def recover(self, campaign_id: str) -> list[tuple[Trial, str]]: ...

    def next_number(self, campaign_id: str) -> int: ...

    def create_trial(self, campaign_id: str, env: Environment, number: int, proposal: Proposal,
                     context: str, run_id: str | None = None, sandbox: str = "none") -> str: ...

    def record_processes(self, run_id: str, marker: str) -> None: ...

    def find_tampering(self, run_id: str) -> list[str]: ...

    def written_tags(self, run_id: str) -> dict[str, str] | None: ...

    def finish_trial(self, run_id: str, number: int, proposal: Proposal, result: TrialResult,
                     decision: Decision | None, delta: float | None,
                     tampered: list[str] = ..., written: dict[str, str] | None = None) -> Trial:
        ...

    def get_trial(self, run_id: str) -> Trial: ...

    def load_recipe(self, run_id: str, editable: tuple[str, ...]) -> dict[str, str]: ...

    def load_proposal(self, run_id: str) -> Proposal: ...

    def read_text(self, run_id: str, path: str) -> str: ...

    def raw(self, run_id: str) -> StoredRun: ...

    def best(self, campaign_id: str, direction: Direction) -> Trial | None: ...

    def baseline(self, campaign_id: str) -> Trial | None: ...

    def view(self, campaign_id: str, direction: Direction, specialist: str,
             baseline: Trial | None) -> LineageView: ...

    def leaderboard(self, campaign_id: str, direction: Direction,
                    limit: int = 20) -> list[Trial]: ...

    def ancestors(self, run_id: str) -> list[Trial]: ...

    def children(self, campaign_id: str, run_id: str, limit: int = 100) -> list[Trial]: ...

    def recent(self, campaign_id: str, limit: int = ...,
               specialist: str | None = None) -> list[Trial]: ...

    def trials(self, campaign_id: str) -> list[Trial]: ...

    def pending_retries(self, campaign_id: str) -> list[Trial]: ...

    def in_flight(self, campaign_id: str) -> list[Trial]: ...

    def same_edit(self, campaign_id: str, parent_id: str, sha: str) -> list[Trial]: ...

    def llm_spend(self, campaign_id: str) -> float: ...

    def campaign_runs(self, campaign_id: str) -> list[StoredRun]: ...

    def experiment(self, campaign_id: str) -> tuple[str, dict[str, str]]: ...

    def write_report(self, campaign_id: str, folder: Path, steps: list[tuple[int, float]],
                     metrics: dict[str, float]) -> str: ...

    def report_run(self, campaign_id: str) -> str | None: ...

    def record_replay(self, campaign_id: str, of: str, result: TrialResult,
                      seeds: tuple[int, ...], profile: str) -> str: ...
