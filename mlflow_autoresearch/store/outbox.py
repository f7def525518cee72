"""The outbox: a finished trial's record the tracking store refused, kept on disk until it is back.

When the final write of a trial (`MlflowStore.finish_trial`) still fails after the store's
retries, the loop `save`s everything that write needs, one file per run id under
`<workdir>/outbox/<campaign id>/`. The next loop on the campaign `flush`es them, holding the
lease and before `recover`, which would otherwise close those runs as `harness_abort`.

A fresh process no longer knows which tags the harness wrote into the run at its start, which
`finish_trial` needs only for a tampered trial (it restores those and deletes the others): so a
`Pending` keeps them (`MlflowStore.written_tags`) and hands them back (`finish_trial(written=)`).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from mlflow.exceptions import MlflowException

from ..errors import AutoresearchError, StoreError
from ..records import Decision, Proposal, Trial, TrialResult
from .mlflow_store import MlflowStore


@dataclass(frozen=True)
class Pending:
    """One saved record: the arguments of its `finish_trial`, and when it was saved."""

    run_id: str
    number: int
    proposal: Proposal
    result: TrialResult   # `error` kept only where it pickles (a KeyboardInterrupt always does)
    decision: Decision | None
    delta: float | None
    tampered: tuple[str, ...]
    written: dict[str, str] | None  # the harness tags of the run; None if unknown
    saved: float                    # time.time() at save, to flush oldest first


def folder(workdir: Path, campaign_id: str) -> Path:
    """Where the records of campaign `campaign_id` wait."""
    return workdir / "outbox" / campaign_id


def save(folder: Path, run_id: str, number: int, proposal: Proposal, result: TrialResult,
         decision: Decision | None, delta: float | None, tampered: list[str] = (),
         written: dict[str, str] | None = None) -> Path:
    """Keep the record `finish_trial` could not write; returns its file. `written` is
    `store.written_tags(run_id)`: without it a tampered trial keeps the tags it holds."""
    pending = Pending(run_id, number, proposal, replace(result, error=_portable(result.error)),
                      decision, delta, tuple(tampered), written, time.time())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.pkl"
    with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{run_id}.", suffix=".tmp",
                                     delete=False) as tmp:
        try:
            pickle.dump(pending, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)
    return path


def flush(folder: Path, store: MlflowStore) -> list[tuple[Pending, Trial | str]]:
    """Write the records waiting in `folder`, oldest first, each file removed once written.
    Call holding the campaign's lease, before `store.recover`.

    Returns each record with its trial, or why it was not written: a run no longer RUNNING is
    final (never rewritten), so its record is dropped; a run this store does not hold (another
    store, same experiment id) keeps its file for the store that does.

    Raises:
        StoreError: the store is unreachable; this record and the later ones stay.
        LeaseError: another loop took the campaign over.
    """
    entries = sorted(((path, _load(path)) for path in folder.glob("*.pkl")),
                     key=lambda entry: entry[1].saved)
    done: list[tuple[Pending, Trial | str]] = []
    for path, pending in entries:
        name = f"t{pending.number:04d} ({pending.run_id})"
        try:
            status = store.get_trial(pending.run_id).status
        except StoreError as exc:
            if not _missing(exc):
                raise
            done.append((pending, f"{name} is not in the store at {store.uri}: its record "
                                  f"waits in {path} for the store that holds it"))
            continue
        if status != "RUNNING":
            path.unlink()
            done.append((pending, f"{name} is already {status}: a finished run is never "
                                  f"rewritten, so its saved record was dropped"))
            continue
        trial = store.finish_trial(pending.run_id, pending.number, pending.proposal,
                                   pending.result, pending.decision, pending.delta,
                                   list(pending.tampered), written=pending.written)
        path.unlink()
        done.append((pending, trial))
    return done


def _load(path: Path) -> Pending:
    try:
        with path.open("rb") as f:
            return pickle.load(f)
    except Exception as exc:  # noqa: BLE001 - a file from another version fails in many ways
        raise AutoresearchError(f"the outbox record {path} is unreadable ({exc}); delete it to "
                                f"give that trial up (the next start records it harness_abort)"
                                ) from None


def _portable(error: BaseException | None) -> BaseException | None:
    """`error` where it survives pickling, else None; an interruption stays one (a fresh
    KeyboardInterrupt), so the trial is still recorded KILLED."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any exception's arguments may refuse pickling
        return KeyboardInterrupt() if isinstance(error, KeyboardInterrupt) else None


def _missing(exc: StoreError) -> bool:
    """The store answered that the run does not exist."""
    cause = exc.__cause__
    return isinstance(cause, MlflowException) and cause.error_code == "RESOURCE_DOES_NOT_EXIST"
