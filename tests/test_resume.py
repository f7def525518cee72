"""SIGKILL the loop in the middle of a trial, start it again: nothing lost, nothing duplicated."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from mlflow_autoresearch import tags

def _cli(toy_env, store, workdir, trials):
    cmd = [sys.executable, "-m", "mlflow_autoresearch.cli", "run", str(toy_env),
           "--trials", str(trials), "--tracking-uri", store, "--workdir", str(workdir)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _runs(client):
    exp = client.get_experiment_by_name("autoresearch/toy")
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=100)


def test_killed_loop_resumes_and_relabels_its_orphan(toy_env, store, tmp_path):
    # Every opt edit sleeps (so trial 1 is still running when the loop dies); sched's do not.
    (toy_env / "techniques.yaml").write_text(
        "opt:\n  - {name: slow, set: {SLEEP: 30.0}, hypothesis: Sleep}\n"
        "sched:\n  - {name: more_steps, set: {STEPS: '*2'}, hypothesis: More steps}\n")
    client = MlflowClient(store)
    loop = _cli(toy_env, store, tmp_path / "work", 2)
    deadline = time.monotonic() + 60
    orphan = None
    while orphan is None and time.monotonic() < deadline:
        time.sleep(0.2)
        running = [r for r in _runs(client) if r.info.status == "RUNNING"
                   and tags.PID in r.data.tags and r.data.tags[tags.TRIAL] == "1"]
        orphan = running[0] if running else None
    assert orphan is not None, "the loop never started a trial"
    os.kill(loop.pid, signal.SIGKILL)
    loop.wait()
    pid = int(client.get_run(orphan.info.run_id).data.tags[tags.PID])
    assert Path(f"/proc/{pid}").exists()  # the recipe outlived its loop

    again = _cli(toy_env, store, tmp_path / "work", 2)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0, out
    assert "was left running by a dead loop: relabelled harness_abort" in out

    runs = _runs(client)
    numbers = sorted(int(r.data.tags[tags.TRIAL]) for r in runs)
    assert numbers == list(range(len(numbers))) and numbers[-1] == 2
    dead = client.get_run(orphan.info.run_id)
    assert dead.data.tags[tags.LABEL] == "harness_abort" and dead.info.status == "FAILED"
    assert [r.data.tags[tags.LABEL] for r in sorted(runs, key=lambda r: r.info.start_time)] == \
        ["ok", "harness_abort", "ok"]
    assert all(r.info.status != "RUNNING" for r in runs)
    time.sleep(0.5)
    assert not Path(f"/proc/{pid}").exists() or \
        Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # the orphan was reaped
