"""The `autoresearch` command as users run it: real subprocesses, a real `mlflow server`."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_autoresearch import tags

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, cwd, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "mlflow_autoresearch.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """`mlflow server` on loopback, one worker, job runner off (reference/mlflow.md section 2)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start within 90 s")
    yield url
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def test_campaign_against_a_tracking_server(toy_env, server, tmp_path):
    result = _cli("run", str(toy_env), "--trials", "2", "--tracking-uri", server,
                  "--workdir", str(tmp_path / "work"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("t0000 baseline") and lines[2].startswith("t0002")
    assert "Best: t00" in result.stdout and "Harness overhead" in result.stdout
    client = MlflowClient(server)
    exp = client.get_experiment_by_name("autoresearch/toy")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.data.tags[tags.TRIAL] for r in runs] == ["0", "1", "2"]
    names = {a.path for a in client.list_artifacts(runs[1].info.run_id, "trial")}
    assert {"trial/patch.diff", "trial/patch.diff.txt", "trial/context.md", "trial/recipe",
            "trial/evaluation.json", "trial/logs"} <= names
    status = _cli("status", "--tracking-uri", server, cwd=tmp_path)
    assert "autoresearch/toy" in status.stdout and "3 trial(s)" in status.stdout
    chain = _cli("lineage", runs[2].info.run_id, "--tracking-uri", server, cwd=tmp_path)
    assert chain.returncode == 0 and chain.stdout.startswith("t0000 [baseline, ok")


def test_unreachable_server_is_one_clear_error(toy_env, tmp_path):
    result = _cli("run", str(toy_env), "--tracking-uri", f"http://127.0.0.1:{_free_port()}",
                  "--workdir", str(tmp_path / "work"), cwd=tmp_path,
                  env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
    assert result.returncode == 1
    assert "MLflow at http://127.0.0.1:" in result.stderr and "Traceback" not in result.stderr


def test_broken_environment_spec_is_one_clear_error(toy_env, tmp_path):
    (toy_env / "autoresearch.yaml").write_text("name: toy\n")
    result = _cli("run", str(toy_env), "--workdir", str(tmp_path / "work"), cwd=tmp_path)
    assert result.returncode == 1 and "problem(s)" in result.stderr
    assert "Traceback" not in result.stderr


def test_root_mlproject_runs_the_loop(toy_env, tmp_path):
    """`mlflow run . -e loop` launches a campaign, the way the README shows."""
    result = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "loop", "--env-manager", "local",
         "-P", f"env={toy_env}", "-P", "trials=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("autoresearch/toy")
    assert len(client.search_runs([exp.experiment_id])) == 2


def test_kernel_bench_entry_point_says_no_gpu_and_exits_cleanly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "kernel-bench",
         "--env-manager", "local"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "GPU" in result.stdout + result.stderr
