"""`RayExecutor`: each trial one Ray task on a cluster, with the trial's resources.

A task gets the job (the proposal, the parent's recipe) and a bundle of the environment folder,
its evaluator folder and its `python_path` folders, unpacks the bundle once per node, prepares the
evaluator's data there (idempotent, cached per node) and runs the same engine as the local
executor (`run_trial`: the same processes, budgets, sandbox and capture). It returns the
`TrialResult`; the coordinator records it. Worker nodes need this package installed (a shared
install or image, or a Ray runtime environment that pip-installs it): the bundle carries the
environment, not the harness. A task whose node dies, or that is cancelled, comes back as
`harness_abort`. Ray's own APIs schedule, queue and ship everything; nothing here does.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path

import ray
from ray.exceptions import RayError, RayTaskError

from ...environment import Environment
from ...errors import HarnessError
from ...records import TrialResult
from ..engine import run_trial
from ..evaluator import CommandEvaluator
from ..sandbox import for_environment
from ..workspace import IGNORE
from .base import Done, Job, lost, unrecorded, unwatched

NODE_ROOT = "AUTORESEARCH_NODE_DIR"  # where a node keeps bundles, data and scratch folders


class RayExecutor:
    """Runs jobs as Ray tasks on the cluster at `address` (None: RAY_ADDRESS, else a local Ray
    started here and stopped by `close`), `workers` at a time."""

    name = "ray"

    def __init__(self, env: Environment, workers: int, sandbox_kind: str,
                 address: str | None = None):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        address = address or os.environ.get("RAY_ADDRESS")
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     **({} if address else {"num_cpus": len(os.sched_getaffinity(0))}))
        _check_fits(env)
        self.slots = workers
        self._bundle = ray.put(bundle(env))
        self._kind = sandbox_kind
        self._remote = ray.remote(_run_on_node).options(
            num_cpus=env.cpus, num_gpus=env.gpus, max_retries=0, retry_exceptions=False)
        self._tasks: dict[str, tuple[ray.ObjectRef, Job]] = {}
        self._cancelled: dict[str, str] = {}

    def submit(self, job: Job) -> None:
        if len(self._tasks) >= self.slots:
            raise HarnessError(f"every one of the {self.slots} slots is taken: poll first")
        # Its groups run, and its phases pass, elsewhere.
        payload = dataclasses.replace(job, on_start=unrecorded, on_phase=unwatched)
        ref = self._remote.remote(self._bundle, payload, self._kind)
        self._tasks[job.key] = (ref, job)

    def poll(self, timeout: float) -> list[Done]:
        if not self._tasks:
            return []
        refs = {ref: key for key, (ref, _) in self._tasks.items()}
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        return [self._collect(refs[ref]) for ref in ready]

    def cancel(self, key: str, why: str) -> None:
        if key in self._tasks and key not in self._cancelled:
            self._cancelled[key] = why
            ray.cancel(self._tasks[key][0], force=True)

    def close(self) -> None:
        for key in list(self._tasks):
            self.cancel(key, "the executor was closed")
        self._tasks.clear()
        if self._owns_ray:
            ray.shutdown()

    def _collect(self, key: str) -> Done:
        ref, job = self._tasks.pop(key)
        why = self._cancelled.pop(key, "")
        try:
            result = ray.get(ref)
        except RayTaskError as exc:  # the task's own code raised: a harness fault on the node
            result = lost(job, f"the trial's Ray task failed: {exc}", HarnessError(str(exc)))
        except RayError as exc:  # the node or worker died, or the task was cancelled
            result = lost(job, f"cancelled: {why}" if why
                          else f"its Ray node or worker was lost: {exc}")
        else:
            result = lost(job, f"cancelled: {why}") if why else result
        return Done(key, dataclasses.replace(result, where={"executor": self.name,
                                                             **result.where}))


def bundle(env: Environment) -> bytes:
    """The environment folder, its evaluator's folder and its `python_path` folders as one tar
    (caches left out), what a node needs besides this package."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name, folder in _folders(env).items():
            tar.add(folder, arcname=name, filter=_skip_caches)
    return data.getvalue()


def _folders(env: Environment) -> dict[str, Path]:
    found = {"root": env.root, "evaluators": env.evaluator.parent}
    found.update({f"py{i}": p for i, p in enumerate(env.python_path)})
    return found


def _skip_caches(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = Path(info.name).name
    return None if IGNORE(".", [name]) else info


def on_node(env: Environment, root: Path) -> Environment:
    """`env` with its folders where `bundle` put them under `root` on this node."""
    return dataclasses.replace(
        env, root=root / "root", evaluator=root / "evaluators" / env.evaluator.name,
        python_path=tuple(root / f"py{i}" for i in range(len(env.python_path))))


def _run_on_node(payload: bytes, job: Job, sandbox_kind: str) -> TrialResult:
    """The Ray task: unpack the environment, prepare its data, run the trial."""
    base = Path(os.environ.get(NODE_ROOT) or Path(tempfile.gettempdir()) / "autoresearch-ray")
    digest = hashlib.sha256(payload).hexdigest()[:16]
    root = base / "bundles" / digest
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:  # one task per node unpacks and prepares
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not root.is_dir():
            unpacking = root.with_suffix(".part")
            with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
                tar.extractall(unpacking, filter="data")
            unpacking.rename(root)
        env = on_node(job.env, root)
        evaluator = CommandEvaluator(env, base / "data", for_environment(sandbox_kind, env))
        prepared = root / f".prepared-{env.profile}"
        if not prepared.exists():  # idempotent, but a process per trial is overhead
            evaluator.prepare(base / "logs")
            prepared.touch()
    run_dir = base / "runs" / job.run_dir.name
    result = run_trial(env, job.proposal, job.parent_recipe, evaluator, run_dir,
                       evaluator.sandbox, keep_run_dir=job.keep_run_dir,
                       confirm_if=job.confirm_if)
    node = ray.get_runtime_context().get_node_id()
    error = result.error if result.error is None else HarnessError(repr(result.error))
    return dataclasses.replace(result, error=error, where={"executor": "ray", "node": node})


def _check_fits(env: Environment) -> None:
    """Refuse, in one line, a trial no node of the cluster could ever hold."""
    total = ray.cluster_resources()
    if env.cpus > total.get("CPU", 0) or env.gpus > total.get("GPU", 0):
        raise HarnessError(
            f"one trial of {env.name} ({env.profile}) needs {env.cpus:g} CPU(s) and {env.gpus} "
            f"GPU(s); the Ray cluster has {total.get('CPU', 0):g} and {total.get('GPU', 0):g}: "
            f"add nodes, or lower the profile's resources")

