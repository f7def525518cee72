"""Helpers for tests: paths, private copies of environment folders to edit freely, CLI campaigns.

A plain module (not conftest.py) so test files can import it by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mlflow_autoresearch.execution.sandbox import bwrap_works
from mlflow_autoresearch.testing.server import start_mlflow_server

ROOT = Path(__file__).resolve().parent.parent
TRIALS = "tags.`autoresearch.trial` LIKE '%'"  # a campaign's trial runs (not its report run)
ASSETS = Path(__file__).resolve().parent / "assets"
# Tests that need bubblewrap skip where it does not work, except in CI (which installs it).
_NO_BWRAP = bwrap_works()
needs_bwrap = pytest.mark.skipif(bool(_NO_BWRAP) and not os.environ.get("CI"),
                                 reason=_NO_BWRAP or "bwrap works")


def copy_env(src: Path, dest: Path, evaluators: Path, **spec_overrides) -> Path:
    """Copy an environment folder beside a copy of its evaluators, with spec keys overridden."""
    env_dir = dest / src.name
    shutil.copytree(src, env_dir, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(evaluators, dest / "evaluators", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    spec_path = env_dir / "autoresearch.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["evaluator"] = str(dest / "evaluators" / Path(spec["evaluator"]).name)
    if "python_path" in spec:  # shared code stays where it is: point the copy at the original
        spec["python_path"] = [str((src / rel).resolve()) for rel in spec["python_path"]]
    for key, value in spec_overrides.items():
        spec[key] = value
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return env_dir


def cli_campaign(env: str | Path, cwd: Path, *args: str, timeout: float = 600) -> tuple:
    """Run `autoresearch run ENV --profile tiny ARGS...` in a subprocess, its workdir and SQLite
    store under `cwd`, and assert it exited 0. Returns (MlflowClient, the campaign's runs, oldest
    first, the command's stdout)."""
    result = _run([sys.executable, "-m", "mlflow_autoresearch.cli", "run", str(env), "--profile", "tiny",
                   *args], cwd, timeout)
    client = _client(cwd)
    experiment = client.get_experiment_by_name(f"autoresearch/{Path(env).name}")
    runs = client.search_runs([experiment.experiment_id], TRIALS,
                              order_by=["attributes.start_time ASC"])
    return client, runs, result.stdout


def mlflow_run_project(env_dir: Path, cwd: Path):
    """`mlflow run ENV_DIR --env-manager local -P profile=tiny` (the `main` entry point: one
    evaluated trial) with its store under `cwd`; asserts it exited 0 and returns (client, run)."""
    _run([sys.executable, "-m", "mlflow", "run", str(env_dir), "--env-manager", "local", "-P", "profile=tiny"],
         cwd, 600)
    client = _client(cwd)
    runs = client.search_runs(["0"])
    assert len(runs) == 1
    return client, runs[0]


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "AUTORESEARCH_WORKDIR": str(cwd / "work"),
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _client(cwd: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """`mlflow server` on loopback (one worker, job runner off), its store under `folder`;
    yields its URL and stops it on exit."""
    port = free_port()
    proc = start_mlflow_server(folder, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def process_gone(pid: int, seconds: float = 5.0) -> bool:
    """True once `pid` has exited (or is a zombie nobody reaped yet), waiting up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def recipe_pids(folder: Path, script: str = "toy.py") -> list[int]:
    """Processes whose command line runs `script` under `folder` (a trial's leftovers)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            text = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(folder) in text and script in text:
            found.append(int(pid))
    return found


def recipes_gone(folder: Path, seconds: float = 15.0) -> bool:
    """Wait up to `seconds` for every recipe process under `folder` to exit (a killed group's
    members take a moment after its leader)."""
    deadline = time.monotonic() + seconds
    while recipe_pids(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not recipe_pids(folder)


def edit_spec(env_dir: Path, **spec) -> None:
    """Override top-level keys of an environment copy's `autoresearch.yaml`."""
    path = env_dir / "autoresearch.yaml"
    doc = yaml.safe_load(path.read_text())
    doc.update(spec)
    path.write_text(yaml.safe_dump(doc))
