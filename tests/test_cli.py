"""The `autoresearch` command as users run it: real subprocesses, a real `mlflow server`."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_autoresearch import tags
from support import TRIALS, free_port

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, cwd, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "mlflow_autoresearch.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_campaign_against_a_tracking_server(toy_env, server, tmp_path):
    result = _cli("run", str(toy_env), "--trials", "2", "--tracking-uri", server,
                  "--workdir", str(tmp_path / "work"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("t0000 baseline") and lines[2].startswith("t0002")
    assert "Best: t00" in result.stdout and "Harness overhead" in result.stdout
    client = MlflowClient(server)
    exp = client.get_experiment_by_name("autoresearch/toy")
    runs = client.search_runs([exp.experiment_id], TRIALS, order_by=["attributes.start_time ASC"])
    assert [r.data.tags[tags.TRIAL] for r in runs] == ["0", "1", "2"]
    # The invocation ends by writing the campaign's report run, beside the trials.
    (report,) = client.search_runs([exp.experiment_id], f"tags.`{tags.KIND}` = 'report'")
    assert report.data.metrics["trials"] == 3.0
    names = {a.path for a in client.list_artifacts(runs[1].info.run_id, "trial")}
    assert {"trial/patch.diff", "trial/patch.diff.txt", "trial/context.md", "trial/recipe",
            "trial/evaluation.json", "trial/logs"} <= names
    status = _cli("status", "--tracking-uri", server, cwd=tmp_path)
    assert "autoresearch/toy" in status.stdout and "3 trial(s)" in status.stdout
    chain = _cli("lineage", runs[2].info.run_id, "--tracking-uri", server, cwd=tmp_path)
    assert chain.returncode == 0 and chain.stdout.startswith("t0000 [baseline, ok")


@pytest.mark.parametrize("command", ["run", "status"])
def test_unreachable_server_is_one_whole_line_within_seconds(toy_env, tmp_path, command):
    """MLflow's own HTTP retries took ~4 minutes, then printed a message cut mid-sentence."""
    uri = f"http://127.0.0.1:{free_port()}"
    args = ["run", str(toy_env), "--workdir", str(tmp_path / "work")] if command == "run" \
        else ["status"]
    started = time.monotonic()
    result = _cli(*args, "--tracking-uri", uri, cwd=tmp_path, timeout=60)
    assert time.monotonic() - started < 20
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"Error: no MLflow tracking server answers at {uri} (")
    assert result.stderr.rstrip().endswith("or fix --tracking-uri")


def test_read_only_commands_never_create_a_store(tmp_path):
    for args in (["status"], ["lineage", "0" * 32]):
        result = _cli(*args, cwd=tmp_path)
        assert result.returncode == 1 and "there is no tracking store at sqlite:///" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_status_names_an_unknown_campaign_and_names_may_hold_quotes(toy_env, tmp_path):
    name = "it's mine"
    ran = _cli("run", str(toy_env), "--trials", "1", "--experiment", name,
               "--workdir", str(tmp_path / "work"), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    shown = _cli("status", "--experiment", name, cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith(f"{name} (experiment ")
    assert "2 trial(s)" in shown.stdout
    missing = _cli("status", "--experiment", "nope", cwd=tmp_path)
    assert missing.returncode == 1 and "There is no campaign 'nope'" in missing.stdout
    assert "No campaigns yet" not in missing.stdout


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
    assert len(client.search_runs([exp.experiment_id], TRIALS)) == 2


def test_kernel_bench_entry_point_says_no_gpu_and_claims_nothing(tmp_path):
    """Without CUDA the entry point exits 0 with its one line, and its MLflow run holds no
    figure (the GPU path's table and metrics are tested in tests/kernels)."""
    result = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "kernel-bench",
         "--env-manager", "local"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kernel_bench: no CUDA GPU on this machine, nothing to benchmark.\n" in result.stdout
    (run,) = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(["0"])
    assert run.info.status == "FINISHED" and run.data.metrics == {}
    assert run.data.tags["mlflow.project.entryPoint"] == "kernel-bench"
