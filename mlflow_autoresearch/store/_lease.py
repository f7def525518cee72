"""The campaign lease: one loop at a time may write a campaign, and a dead one is noticed.

The lease lives in the campaign experiment's tags: the holder's token, host and pid, and a
heartbeat that a daemon thread renews every HEARTBEAT_SECONDS. A second loop refuses while the
heartbeat is fresh. Once it is older than LEASE_SECONDS the holder is presumed gone: a holder on
this host whose pid is dead is taken over at once, any other only with `take_over` (we cannot see
whether a loop on another machine is merely paused). MLflow is not a lock service: two loops
starting in the same instant are caught by re-reading the token after writing it, which stops the
ordinary mistake (a second terminal, a stray `evaluate`), not an adversary.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from .. import tags
from ..errors import LeaseError

HEARTBEAT_SECONDS = 10.0
LEASE_SECONDS = 60.0
SETTLE_SECONDS = 0.3  # wait before re-reading the token we wrote
HOST = socket.gethostname()


@dataclass(frozen=True)
class Holder:
    token: str
    host: str
    pid: int
    heartbeat: float

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.heartbeat)

    def describe(self) -> str:
        return f"host {self.host} pid {self.pid}, heartbeat {self.age:.0f} s ago"

    def dead_here(self) -> bool:
        """True when the holder ran on this host and its process is gone."""
        if self.host != HOST:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def read_holder(client: MlflowClient, experiment_id: str) -> Holder | None:
    """The campaign's lease holder, from `token=<hex> host=<name> pid=<n>` and the heartbeat."""
    t = client.get_experiment(experiment_id).tags
    fields = dict(part.partition("=")[::2] for part in t.get(tags.LEASE_HOLDER, "").split())
    if not fields.get("token"):
        return None
    try:
        heartbeat = float(t.get(tags.LEASE_HEARTBEAT, "0"))
    except ValueError:
        heartbeat = 0.0
    pid = fields.get("pid", "")
    return Holder(fields["token"], fields.get("host", "?"), int(pid) if pid.isdigit() else -1,
                  heartbeat)


class Lease:
    """This loop's hold on one campaign, renewed in the background until `release`."""

    def __init__(self, client: MlflowClient, experiment_id: str, name: str, token: str,
                 previous: Holder | None):
        self.client, self.experiment_id, self.name = client, experiment_id, name
        self.token = token
        self.previous = previous  # the holder taken over, if any
        self.lost = ""            # why this loop no longer holds the campaign
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="autoresearch-lease", daemon=True)
        self._thread.start()

    def verify(self) -> None:
        """Raise LeaseError unless the store still names this loop as the holder (one read)."""
        if not self.lost:
            self._check(read_holder(self.client, self.experiment_id))
        if self.lost:
            raise LeaseError(f"this loop no longer holds campaign {self.name!r}: {self.lost}; it "
                             f"stops without writing more")

    def _check(self, holder: Holder | None) -> bool:
        """Note (in `lost`) and return whether the store names another holder, or none."""
        if holder is None or holder.token != self.token:
            self.lost = (f"another loop took over ({holder.describe()})" if holder
                         else "the lease was removed")
        return bool(self.lost)

    def release(self) -> None:
        """Stop the heartbeat and clear the lease if it is still ours."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            holder = read_holder(self.client, self.experiment_id)
            if holder is not None and holder.token == self.token:
                for key in (tags.LEASE_HOLDER, tags.LEASE_HEARTBEAT):
                    self.client.delete_experiment_tag(self.experiment_id, key)
        except Exception:  # noqa: BLE001 - a stale lease is taken over by the next loop anyway
            pass

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                if self._check(read_holder(self.client, self.experiment_id)):
                    return
                self.client.set_experiment_tag(self.experiment_id, tags.LEASE_HEARTBEAT,
                                               f"{time.time():.3f}")
            except Exception:  # noqa: BLE001 - the store may be back at the next beat
                continue


def acquire(client: MlflowClient, experiment_id: str, name: str, take_over: bool) -> Lease:
    """Take the campaign's lease, or raise LeaseError naming the holder and what to do."""
    holder = read_holder(client, experiment_id)
    if holder is not None and not holder.dead_here():
        if holder.age < LEASE_SECONDS:
            raise LeaseError(
                f"campaign {name!r} is held by another loop ({holder.describe()}); stop that loop "
                f"first, or if it is gone, wait until its heartbeat is over {LEASE_SECONDS:.0f} s "
                f"old and run again with --take-over")
        if not take_over:
            raise LeaseError(
                f"campaign {name!r} is held by a loop whose heartbeat stopped "
                f"({holder.describe()}); if that loop is gone, run again with --take-over")
    token = uuid.uuid4().hex
    client.set_experiment_tag(experiment_id, tags.LEASE_HEARTBEAT, f"{time.time():.3f}")
    client.set_experiment_tag(experiment_id, tags.LEASE_HOLDER,
                              f"token={token} host={HOST} pid={os.getpid()}")
    time.sleep(SETTLE_SECONDS)
    now = read_holder(client, experiment_id)
    if now is None or now.token != token:
        raise LeaseError(f"another loop took campaign {name!r} at the same moment "
                         f"({now.describe() if now else 'lease removed'}); stop one of them")
    return Lease(client, experiment_id, name, token, holder)
