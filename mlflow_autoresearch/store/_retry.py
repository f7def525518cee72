"""Retries of transient tracking-store faults, with backoff, bounded per store call.

`MlflowStore` wraps its `MlflowClient` in `RetryingClient`, so each MLflow call retries on its
own (a whole store method retried could open a second run after a partial failure), and gives
each outermost public call one `Budget` of RETRY_SECONDS that all its MLflow calls share.
Transient: the store down or restarting (a refused, reset or timed-out connection), a server's
HTTP 408, 429 or 5xx, SQLite's "database is locked"; anything else fails at once.
"""

from __future__ import annotations

import contextvars
import functools
import math
import os
import re
import sqlite3
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlparse

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from requests import exceptions as http

from ..errors import AutoresearchError, StoreError

# MLflow's HTTP client retries a refused connection or a 5xx by itself, 7 times over ~4 minutes,
# and it would do so inside each of our attempts: the two layers would multiply. Ours is the one
# in charge (it spans a whole store call, is bounded, and says why it waits), so MLflow's makes
# one try unless the user set otherwise; a request still waits up to MLFLOW_HTTP_REQUEST_TIMEOUT.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
RETRY_SECONDS = 60.0  # per store call; AUTORESEARCH_STORE_RETRY_SECONDS overrides it
RETRY_ENV = "AUTORESEARCH_STORE_RETRY_SECONDS"
RETRY_FIRST, RETRY_LONGEST = 0.5, 4.0  # backoff: the first wait, doubled up to the longest
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})  # as MLflow's own client retries
_CONNECTION_FAULTS = (ConnectionError, TimeoutError, http.ConnectionError, http.Timeout)
# a database server (or SQLite's lock) that is busy or restarting, as SQLAlchemy words it
_DB_TRANSIENT = ("database is locked", "could not connect", "connection refused",
                 "lost connection", "has gone away")


@dataclass
class Budget:
    """The retry time of one store call, shared by every MLflow call it makes. The clock starts
    with the first attempt that fails, so a call gives up within RETRY_SECONDS plus one attempt."""

    uri: str
    seconds: float
    deadline: float | None = None

    def wait(self, reason: str, started: float, delay: float) -> bool:
        """Sleep before the next attempt and return True, or return False once the time is spent.
        The first wait of the call says why it pauses, on stderr."""
        if self.deadline is None:
            self.deadline = started + self.seconds
            if self.seconds > 0:
                print(f"the tracking store at {self.uri} is unreachable ({reason}); retrying for "
                      f"up to {self.seconds:g} s", file=sys.stderr, flush=True)
        left = self.deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        return True


BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("autoresearch_store_call",
                                                                          default=None)


class RetryingClient:
    """An MlflowClient whose calls retry transient faults while a store call's budget lasts."""

    def __init__(self, client: MlflowClient):
        self._client = client

    def __getattr__(self, name: str):
        value = getattr(self._client, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args, **kwargs):
            return attempt(value, *args, **kwargs)
        return call


def attempt(fn, *args, **kwargs):
    """`fn(*args, **kwargs)`, retried with exponential backoff on a transient fault while the
    store call's budget lasts. Outside a store call, one try: the lease's heartbeat thread starts
    with no budget (threads do not inherit context variables) and beats again anyway."""
    budget, delay = BUDGET.get(), RETRY_FIRST
    while True:
        started = time.monotonic()
        try:
            return fn(*args, **kwargs)
        except (MlflowException, OSError, sqlite3.Error) as exc:
            reason = _transient(exc, budget.uri) if budget else None
            if reason is None:
                raise
            if not budget.wait(reason, started, delay):
                raise StoreError(f"the tracking store at {budget.uri} is unreachable ({reason}) "
                                 f"and stayed so for {budget.seconds:g} s of retries; bring it "
                                 f"back (or raise {RETRY_ENV}) and run again") from exc
            delay = min(2 * delay, RETRY_LONGEST)


def _transient(exc: BaseException, uri: str) -> str | None:
    """Why `exc` is worth another try, in a few words, or None when trying again cannot help."""
    links = [exc]
    while (nxt := links[-1].__cause__ or links[-1].__context__) is not None and nxt not in links:
        links.append(nxt)
    text = " ".join(str(link) for link in links).lower()
    server = urlparse(uri).scheme in ("http", "https")
    if any(isinstance(link, _CONNECTION_FAULTS) for link in links) or (
            not server and any(phrase in text for phrase in _DB_TRANSIENT)):
        found = re.search(r"\[errno -?\d+\] ([a-z ]+)", text)
        if found:
            return found.group(1).strip()
        phrases = ("timed out", "connection aborted", *_DB_TRANSIENT)
        return next((p for p in phrases if p in text), "connection lost")
    status = _http_status(links) if server else None
    return f"HTTP {status}" if status in _RETRY_STATUSES else None


def _http_status(links: list[BaseException]) -> int | None:
    """The HTTP status an MLflow server answered with, from the innermost link that tells it
    (MLflow wraps a status its client gave up on in a generic INTERNAL_ERROR)."""
    for link in reversed(links):
        if isinstance(link, http.RetryError):  # MLflow's client gave up on those statuses
            found = re.search(r"too many (\d{3}) error responses", str(link))
            return int(found.group(1)) if found else None
        if isinstance(link, http.HTTPError) and link.response is not None:
            return link.response.status_code
        if isinstance(link, MlflowException):
            return link.get_http_status_code()
    return None


def retry_seconds() -> float:
    """RETRY_SECONDS, or the environment's AUTORESEARCH_STORE_RETRY_SECONDS where set."""
    raw = os.environ.get(RETRY_ENV, "").strip()
    if not raw:
        return RETRY_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise AutoresearchError(f"{RETRY_ENV}={raw!r} is not a number of seconds; set it to one "
                                f"(0 turns retries off) or unset it for {RETRY_SECONDS:g}")
    return seconds
