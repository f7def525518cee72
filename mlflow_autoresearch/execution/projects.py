"""A trial's seeds as MLflow Project runs, each a cold process timed and bounded from outside.

`TrialBackend` is an MLflow Projects backend: MLflow parses the environment's MLproject,
validates and substitutes the entry point's parameters exactly as `mlflow run` does; the backend
then starts the command under our process layer (its own group, a guard, output to files) and
returns at once, so the harness records the group and enforces the budget. It is called directly
rather than through `mlflow.projects.run`, which would also write tags to a tracking run: here
only the store talks to tracking, and recipes get no MLflow run or tracking URI at all.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.projects.utils import fetch_and_validate_project, get_entry_point_command, load_project

from ..environment import Environment
from . import process
from .sandbox import Sandbox, group_cpu_seconds, new_group, remove_group

HARNESS_FILE = "harness.json"
CPU_BASIS_KILL = 1.5  # on a CPU time basis, a seed is killed at this many x its budget of wall
logging.getLogger("mlflow.projects").setLevel(logging.WARNING)


class TrialSubmittedRun(SubmittedRun):
    """A launched entry point waiting under its guard; `process.supervise` starts and bounds it."""

    def __init__(self, child: process.Child):
        self.child = child

    @property
    def run_id(self) -> str:
        return ""  # no tracking run: the store records the trial

    def wait(self) -> bool:
        return process.supervise(self.child, None).exit_code == 0

    def get_status(self) -> str:
        code = self.child.proc.poll()
        if code is None:
            return RunStatus.to_string(RunStatus.RUNNING)
        return RunStatus.to_string(RunStatus.FINISHED if code == 0 else RunStatus.FAILED)

    def cancel(self) -> None:
        self.child.kill()


class TrialBackend(AbstractBackend):
    """Launches one entry point of a local project; backend_config keys: `stdout`, `stderr`
    (log paths), `grace_seconds` (SIGTERM to SIGKILL), `env` (the child's whole environment),
    `sandbox` (a `Sandbox`), `read` and `write` (what the command may see besides the project
    folder, which it sees read-only), `group` (the name of its cgroup)."""

    def run(self, project_uri, entry_point, params, version, backend_config, tracking_uri,
            experiment_id):
        work_dir = fetch_and_validate_project(project_uri, version, entry_point, params)
        command = get_entry_point_command(load_project(work_dir), entry_point, params, None)[0]
        sandbox: Sandbox = backend_config["sandbox"]
        argv = sandbox.wrap(["bash", "-c", command], (work_dir, *backend_config["read"]),
                            tuple(backend_config["write"]), work_dir, backend_config.get("group"))
        child = process.start(argv, Path(work_dir), backend_config["env"],
                              Path(backend_config["stdout"]), Path(backend_config["stderr"]),
                              float(backend_config.get("grace_seconds", process.GRACE_SECONDS)))
        return TrialSubmittedRun(child)


@dataclass(frozen=True)
class SeedResult:
    seed: int
    wall_seconds: float
    exit_code: int
    timed_out: bool
    out_dir: str
    stdout: str
    stderr: str
    refused: str = ""  # what the harness removed from the output folder before scoring, and why
    cpu_seconds: float = 0.0  # user + system CPU of the seed's whole process tree


def kill_after(env: Environment) -> float:
    """Wall seconds after which a seed is killed: its train budget, or on a CPU time basis (where
    the evaluator charges CPU seconds, which load does not move) 1.5 x that, so a hung recipe
    still ends but a loaded machine does not turn a trial into an overrun."""
    return env.train_seconds * (CPU_BASIS_KILL if env.time_basis == "cpu" else 1.0)


def run_seeds(env: Environment, workspace: Path, run_dir: Path, data_dir: Path,
              sandbox: Sandbox, on_start: Callable[[process.Group], None] = lambda group: None,
              grace: float = process.GRACE_SECONDS,
              on_phase: Callable[[str, float], None] = lambda text, budget: None,
              ) -> list[SeedResult]:
    """Run the entry point once per seed as a cold process in `sandbox`; stop at the first
    failed seed. Each seed sees the workspace and `data_dir` read-only and writes only its
    output folder.

    Writes `run_dir/harness.json` (the evaluator's input, schema in evaluators/README.md) and
    returns the per-seed results. `on_start(group)` records each process group before it runs;
    `on_phase(text, budget seconds)` says which seed starts (progress only).
    """
    results: list[SeedResult] = []
    for k, seed in enumerate(env.seeds, 1):
        on_phase(f"seed {k} of {len(env.seeds)}", env.train_seconds)
        seed_dir = run_dir / "seeds" / str(seed)
        out_dir = seed_dir / "out"
        out_dir.mkdir(parents=True, exist_ok=True)
        params = {**env.parameters, "seed": str(seed), "data_dir": str(data_dir),
                  "out_dir": str(out_dir)}
        group = new_group()
        submitted = TrialBackend().run(
            str(workspace), env.entry_point, params, None,
            {"stdout": str(seed_dir / "stdout.txt"), "stderr": str(seed_dir / "stderr.txt"),
             "grace_seconds": grace, "env": process.child_env(env.child_env()),
             "sandbox": sandbox, "read": [str(data_dir)], "write": [str(out_dir)],
             "group": group}, None, None)
        try:
            finished = process.supervise(submitted.child, kill_after(env), on_start)
            cpu = max(finished.cpu_seconds, group_cpu_seconds(group) or 0.0)
        finally:
            remove_group(group)
        rel = seed_dir.relative_to(run_dir)
        refused = remove_links(out_dir)
        results.append(SeedResult(seed, round(finished.seconds, 4), finished.exit_code,
                                  finished.timed_out, str(rel / "out"), str(rel / "stdout.txt"),
                                  str(rel / "stderr.txt"), refused,
                                  round(cpu, 4)))
        if finished.timed_out or finished.exit_code != 0 or refused:
            break
    write_harness_file(env, run_dir, workspace, results)
    return results


def remove_links(out_dir: Path) -> str:
    """Remove every symbolic link and special file a seed left in its output folder, and say
    which: the evaluator runs outside the sandbox, and a link would have it read, as the seed's
    output, a file the seed could not see (the private labels, the store)."""
    found = []
    for folder, dirs, files in os.walk(out_dir):  # never follows a link to a folder
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                kind = f"a link to {os.readlink(path)}" if path.is_symlink() else "a special file"
                found.append(f"{path.relative_to(out_dir)} ({kind})")
                path.unlink()
    return "; ".join(sorted(found))


def write_harness_file(env: Environment, run_dir: Path, workspace: Path,
                       results: list[SeedResult]) -> None:
    """`run_dir/harness.json`: what the evaluator is told about the seeds (schema 1)."""
    payload = {
        "schema": 1, "environment": env.name, "profile": env.profile,
        "time_basis": env.time_basis,
        "workspace": str(workspace.relative_to(run_dir)) if workspace.is_relative_to(run_dir)
        else str(workspace),
        "budgets": env.budgets, "gates": env.gates, "expected_seeds": list(env.seeds),
        "seeds": [asdict(r) for r in results],
    }
    (run_dir / HARNESS_FILE).write_text(json.dumps(payload, indent=1))
