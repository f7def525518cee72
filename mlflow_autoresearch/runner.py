"""Launch a trial's seeds through MLflow Projects, each a cold process timed and bounded from outside.

`TrialBackend` is this package's MLflow project backend (entry-point group
`mlflow.project_backend`, name `autoresearch`): MLflow parses the MLproject, validates and
substitutes the parameters and resolves the run, as for `mlflow run`; the backend then starts the
entry point in its own process group with output captured and returns at once, so the runner can
enforce the budget. MLflow's own local backend cannot: its synchronous path gives no handle to
the process, and its asynchronous path re-launches the `mlflow run` CLI (seconds per call).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow.projects
from mlflow.entities import RunStatus
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.projects.utils import (
    fetch_and_validate_project,
    get_entry_point_command,
    get_run_env_vars,
    load_project,
)

from . import process
from .environment import Environment

BACKEND_NAME = "autoresearch"
HARNESS_FILE = "harness.json"
logging.getLogger("mlflow.projects").setLevel(logging.WARNING)


class TrialSubmittedRun(SubmittedRun):
    """A running entry point: its own process group, budget enforced by `wait_budget`."""

    def __init__(self, run_id: str, proc, started: float, grace: float):
        self._run_id = run_id
        self.proc = proc
        self.started = started
        self.grace = grace

    @property
    def run_id(self) -> str:
        return self._run_id

    def wait(self) -> bool:
        return self.wait_budget(None).exit_code == 0

    def wait_budget(self, timeout: float | None) -> process.Finished:
        """Wait up to `timeout` seconds from launch; past it, kill the whole process group."""
        return process.wait(self.proc, timeout, self.started, self.grace)

    def get_status(self) -> str:
        code = self.proc.poll()
        if code is None:
            return RunStatus.to_string(RunStatus.RUNNING)
        return RunStatus.to_string(RunStatus.FINISHED if code == 0 else RunStatus.FAILED)

    def cancel(self) -> None:
        process.kill_group(self.proc.pid, self.grace)


class TrialBackend(AbstractBackend):
    """MLflow project backend `autoresearch`: local, non-blocking, one process group per launch.

    backend_config keys: `run_id` (the trial's run, required), `stdout`, `stderr` (log paths),
    `grace_seconds` (SIGTERM to SIGKILL), `env` (extra environment variables).
    """

    def run(self, project_uri, entry_point, params, version, backend_config, tracking_uri,
            experiment_id):
        work_dir = fetch_and_validate_project(project_uri, version, entry_point, params)
        project = load_project(work_dir)
        command = get_entry_point_command(project, entry_point, params, None)[0]
        run_id = backend_config["run_id"]
        env = process.child_env({**get_run_env_vars(run_id, experiment_id),
                                  **backend_config.get("env", {})})
        started = time.monotonic()
        proc = process.start(["bash", "-c", command], Path(work_dir), env,
                             Path(backend_config["stdout"]), Path(backend_config["stderr"]))
        grace = float(backend_config.get("grace_seconds", process.GRACE_SECONDS))
        return TrialSubmittedRun(run_id, proc, started, grace)


@dataclass(frozen=True)
class SeedResult:
    seed: int
    wall_seconds: float
    exit_code: int
    timed_out: bool
    out_dir: str
    stdout: str
    stderr: str


def run_seeds(env: Environment, workspace: Path, run_dir: Path, data_dir: Path, run_id: str,
              experiment_id: str, on_start: Callable[[int], None] = lambda pid: None,
              grace: float = process.GRACE_SECONDS) -> list[SeedResult]:
    """Run the entry point once per seed as a cold process; stop at the first failed seed.

    Writes `run_dir/harness.json` (the evaluator's input, schema in evaluators/README.md) and
    returns the per-seed results. `on_start(pid)` is told each process group as it starts.
    """
    results: list[SeedResult] = []
    for seed in env.seeds:
        seed_dir = run_dir / "seeds" / str(seed)
        out_dir = seed_dir / "out"
        out_dir.mkdir(parents=True, exist_ok=True)
        params = {**env.parameters, "seed": str(seed), "data_dir": str(data_dir),
                  "out_dir": str(out_dir)}
        submitted = mlflow.projects.run(
            str(workspace), entry_point=env.entry_point, parameters=params,
            backend=BACKEND_NAME, experiment_id=experiment_id, env_manager="local",
            synchronous=False,
            backend_config={"run_id": run_id, "stdout": str(seed_dir / "stdout.txt"),
                            "stderr": str(seed_dir / "stderr.txt"), "grace_seconds": grace,
                            "env": env.child_env()})
        try:
            on_start(submitted.proc.pid)
            finished = submitted.wait_budget(env.train_seconds)
        except BaseException:  # interrupted loop: never leave a recipe running behind
            submitted.cancel()
            raise
        rel = seed_dir.relative_to(run_dir)
        results.append(SeedResult(seed, round(finished.seconds, 4), finished.exit_code,
                                  finished.timed_out, str(rel / "out"), str(rel / "stdout.txt"),
                                  str(rel / "stderr.txt")))
        if finished.timed_out or finished.exit_code != 0:
            break
    write_harness_file(env, run_dir, workspace, results)
    return results


def write_harness_file(env: Environment, run_dir: Path, workspace: Path,
                       results: list[SeedResult]) -> None:
    payload = {
        "schema": 1, "environment": env.name, "profile": env.profile,
        "workspace": str(workspace.relative_to(run_dir)) if workspace.is_relative_to(run_dir)
        else str(workspace),
        "budgets": env.budgets, "gates": env.gates, "expected_seeds": list(env.seeds),
        "seeds": [asdict(r) for r in results],
    }
    (run_dir / HARNESS_FILE).write_text(json.dumps(payload, indent=1))
