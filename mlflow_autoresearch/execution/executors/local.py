"""`LocalExecutor`: up to N trials at once on this machine, each in its own slot.

Each job runs `run_trial` on a thread of its own, pinned to its slot (`slots.py`), so every
process it starts keeps to the slot's cores and GPUs. Worker threads never call back into the
coordinator's code themselves: a process group about to start is handed to the polling thread,
which records it (`Job.on_start`) and only then lets the group run, so the store keeps one writer
and a group is always findable before it runs.
"""

from __future__ import annotations

import dataclasses
import queue
import socket
import threading
from dataclasses import dataclass, field

from ...errors import HarnessError
from ...records import FailureLabel, Outcome, TrialResult
from ..engine import run_trial
from ..evaluator import Evaluator
from ..process import Group, kill_group, pin_thread
from .base import Done, Job, lost
from .slots import Slot

HOST = socket.gethostname()


class Cancelled(Exception):
    """Raised in a worker whose job was cancelled, at its next process start."""


@dataclass
class _Running:
    job: Job
    slot: Slot
    thread: threading.Thread | None = None
    groups: list[Group] = field(default_factory=list)
    cancelled: str = ""


@dataclass
class _Start:
    """A worker's request: record `group` before it runs; `error` is what recording raised."""

    key: str
    group: Group
    answered: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class LocalExecutor:
    """Runs jobs in `slots` on this machine with `evaluator` (prepared, with its sandbox)."""

    name = "local"

    def __init__(self, evaluator: Evaluator, slots: list[Slot]):
        self.evaluator = evaluator
        self.slots = len(slots)
        self._free = list(slots)
        self._running: dict[str, _Running] = {}
        self._events: queue.Queue[_Start | Done] = queue.Queue()
        self._lock = threading.Lock()

    def submit(self, job: Job) -> None:
        if not self._free:
            raise HarnessError(f"every one of the {self.slots} slots is taken: poll first")
        running = _Running(job, self._free.pop(0))
        running.thread = threading.Thread(target=self._work, args=(running,), daemon=True,
                                          name=f"autoresearch-slot-{running.slot.index}")
        self._running[job.key] = running
        running.thread.start()

    def poll(self, timeout: float) -> list[Done]:
        """Answer the workers' start requests and collect finished jobs, waiting up to
        `timeout` for the first finished one."""
        finished: list[Done] = []
        wait = timeout
        while True:
            try:
                event = self._events.get(timeout=wait) if wait > 0 else self._events.get_nowait()
            except queue.Empty:
                return finished
            if isinstance(event, _Start):
                self._answer(event)
            else:
                finished.append(self._collect(event))
                wait = 0.0

    def cancel(self, key: str, why: str) -> None:
        with self._lock:
            running = self._running.get(key)
            if running is None or running.cancelled:
                return
            running.cancelled = why
            groups = list(running.groups)
        for group in groups:
            kill_group(group.pgid, 0.0)

    def close(self) -> None:
        """Cancel what runs, wait for the workers to end, and drop their results."""
        for key in list(self._running):
            self.cancel(key, "the executor was closed")
        while self._running:
            self.poll(0.2)

    def _work(self, running: _Running) -> None:
        """A worker thread's whole life: one job, always answered with a `Done`."""
        job, slot = running.job, running.slot
        try:
            pin_thread(slot.cores, slot.variables())
            result = run_trial(job.env, job.proposal, job.parent_recipe, self.evaluator,
                               job.run_dir, self.evaluator.sandbox,
                               lambda group: self._started(job.key, group), job.keep_run_dir,
                               job.confirm_if, job.on_phase)
        except BaseException as exc:  # noqa: BLE001 - the loop waits for every job it started
            result = lost(job, f"harness error in slot {slot.index}: {exc!r}", exc)
        where = {"executor": self.name, "node": HOST, "slot": str(slot.index)}
        self._events.put(Done(job.key, dataclasses.replace(result, where=where)))

    def _started(self, key: str, group: Group) -> None:
        """On a worker: wait until the polling thread has recorded `group`; raise if that
        failed or the job was cancelled (the engine then kills the group)."""
        with self._lock:
            running = self._running[key]
            running.groups.append(group)
            if running.cancelled:
                raise Cancelled(running.cancelled)
        request = _Start(key, group)
        self._events.put(request)
        request.answered.wait()
        if request.error is not None:
            raise request.error

    def _answer(self, request: _Start) -> None:
        running = self._running[request.key]
        try:
            if running.cancelled:
                raise Cancelled(running.cancelled)
            running.job.on_start(request.group)
        except BaseException as exc:  # noqa: BLE001 - handed to the worker, which records it
            request.error = exc
        request.answered.set()

    def _collect(self, done: Done) -> Done:
        running = self._running.pop(done.key)
        running.thread.join()
        self._free.append(running.slot)
        self._free.sort(key=lambda s: s.index)
        if not running.cancelled:
            return done
        return Done(done.key, _cancelled(done.result, running.cancelled))


def _cancelled(result: TrialResult, why: str) -> TrialResult:
    """A cancelled job's result: `harness_abort` with the reason, whatever the recipe did (its
    logs kept)."""
    return dataclasses.replace(result, error=None, outcome=Outcome(
        FailureLabel.HARNESS_ABORT, metrics=result.outcome.metrics,
        seconds=result.outcome.seconds, excerpt=f"cancelled: {why}"))
