"""Kill the loop in the middle of a trial, start it again: nothing left running, nothing lost,
nothing duplicated; and a second loop on a live campaign is refused."""

import os
import signal
import subprocess
import sys
import time

from mlflow import MlflowClient

from mlflow_autoresearch import tags
from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.testing import check_trial_contract
from support import TRIALS, process_gone

SLOW = ("opt:\n  - {name: slow, set: {SLEEP: 30.0}, hypothesis: Sleep}\n"
        "sched:\n  - {name: more_steps, set: {STEPS: '*2'}, hypothesis: More steps}\n")


def _cli(toy_env, store, workdir, trials, *extra):
    cmd = [sys.executable, "-m", "mlflow_autoresearch.cli", "run", str(toy_env),
           "--trials", str(trials), "--tracking-uri", store, "--workdir", str(workdir), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _runs(client):
    exp = client.get_experiment_by_name("autoresearch/toy")
    return [] if exp is None else client.search_runs([exp.experiment_id], TRIALS, max_results=100)


def _running_trial(client, number: str, seconds: float = 60):
    """The RUNNING run of trial `number` once its recipe's process group is recorded."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        running = [r for r in _runs(client) if r.info.status == "RUNNING"
                   and tags.PID in r.data.tags and r.data.tags[tags.TRIAL] == number]
        if running:
            return running[0]
    raise AssertionError(f"the loop never started trial {number}")


def test_killed_loop_takes_its_recipe_along_and_resumes(toy_env, store, tmp_path):
    # Every opt edit sleeps (so trial 1 is still running when the loop dies); sched's do not.
    (toy_env / "techniques.yaml").write_text(SLOW)
    client = MlflowClient(store)
    loop = _cli(toy_env, store, tmp_path / "work", 2)
    orphan = _running_trial(client, "1")
    os.kill(loop.pid, signal.SIGKILL)
    loop.wait()
    pgid = int(client.get_run(orphan.info.run_id).data.tags[tags.PID].split("@")[0])
    assert process_gone(pgid)  # the recipe died with its loop (parent-death signal)

    again = _cli(toy_env, store, tmp_path / "work", 2)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0, out
    assert "t0001 was left running by a loop that is gone: recorded as harness_abort" in out

    runs = _runs(client)
    numbers = sorted(int(r.data.tags[tags.TRIAL]) for r in runs)
    assert numbers == list(range(len(numbers))) and numbers[-1] == 2
    dead = client.get_run(orphan.info.run_id)
    assert dead.data.tags[tags.LABEL] == "harness_abort" and dead.info.status == "FAILED"
    check_trial_contract(MlflowStore(store), orphan.info.run_id)
    assert all(r.info.status != "RUNNING" for r in runs)


def test_sigterm_records_the_running_trial_killed(toy_env, store, tmp_path):
    (toy_env / "techniques.yaml").write_text(SLOW)
    client = MlflowClient(store)
    loop = _cli(toy_env, store, tmp_path / "work", 2)
    running = _running_trial(client, "1")
    pgid = int(client.get_run(running.info.run_id).data.tags[tags.PID].split("@")[0])
    loop.send_signal(signal.SIGTERM)
    out, _ = loop.communicate(timeout=60)
    assert loop.returncode == 1 and "interrupted" in out
    assert process_gone(pgid)
    run = client.get_run(running.info.run_id)
    assert run.info.status == "KILLED" and run.data.tags[tags.LABEL] == "harness_abort"
    assert not list((tmp_path / "work" / "runs").iterdir())


def test_a_second_loop_on_a_live_campaign_is_refused(toy_env, store, tmp_path):
    """Today's holes: a second `run` relabelled the first loop's trial, killed its processes,
    and the first then recorded it `illegal`. Now the second refuses in one line."""
    (toy_env / "techniques.yaml").write_text(SLOW.replace("30.0", "4.0"))
    client = MlflowClient(store)
    first = _cli(toy_env, store, tmp_path / "work", 1)
    running = _running_trial(client, "1")
    second = _cli(toy_env, store, tmp_path / "work2", 3)
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 1
    error = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "is held by another loop (host" in error[0]
    assert "--take-over" in error[0]
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 0, out
    run = client.get_run(running.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[tags.LABEL] == "ok"


def test_take_over_needs_a_stale_heartbeat(toy_env, store, tmp_path):
    """A holder on another machine whose heartbeat stopped: refused without --take-over, then
    taken over; the trial it left RUNNING is recovered."""
    done = _cli(toy_env, store, tmp_path / "work", 0)
    assert done.wait(timeout=120) == 0
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("autoresearch/toy").experiment_id
    left = client.create_run(exp, run_name="t0001-opt", tags={
        tags.TRIAL: "1", tags.SPECIALIST: "opt", tags.HYPOTHESIS: "left behind",
        tags.LEASE_TOKEN: "elsewhere"}).info.run_id
    client.set_experiment_tag(exp, tags.LEASE_HOLDER, "token=elsewhere host=other-machine pid=7")
    client.set_experiment_tag(exp, tags.LEASE_HEARTBEAT, str(time.time() - 3600))
    refused = _cli(toy_env, store, tmp_path / "work", 2)
    out, _ = refused.communicate(timeout=120)
    assert refused.returncode == 1 and "heartbeat stopped" in out and "--take-over" in out
    assert client.get_run(left).info.status == "RUNNING"
    taken = _cli(toy_env, store, tmp_path / "work", 2, "--take-over")
    out, _ = taken.communicate(timeout=120)
    assert taken.returncode == 0, out
    assert client.get_run(left).data.tags[tags.LABEL] == "harness_abort"
    assert [int(r.data.tags[tags.TRIAL]) for r in client.search_runs(
        [exp], TRIALS, order_by=["attributes.start_time ASC"])] == [0, 1, 2]
    assert tags.LEASE_HOLDER not in client.get_experiment(exp).tags  # released at the end
