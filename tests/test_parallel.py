"""Several trials at once on this machine: overlap, numbering, lineage, refused duplicates,
slots, and a coordinator killed with trials in flight."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from mlflow_autoresearch import tags
from mlflow_autoresearch.campaign import Settings, run_campaign
from mlflow_autoresearch.errors import HarnessError
from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.testing import ScriptedAgent, check_trial_contract, replace_in
from support import TRIALS, edit_spec, process_gone, recipe_pids, recipes_gone

RECIPE = "recipe/toy.py"


def _sleep(seconds: float, mark: str, mode: str = "normal"):
    """An edit that sleeps and changes nothing the score sees (`mark` tells edits apart)."""
    def edit(files):
        files = replace_in(RECIPE, "SLEEP = 0.0", f"SLEEP = {seconds}  # {mark}")(files)
        return replace_in(RECIPE, 'MODE = "normal"', f'MODE = "{mode}"')(files)
    return edit


def _campaign(toy_env, store, tmp_path, agents, trials, workers, **settings):
    settings = Settings(str(toy_env), trials=trials, tracking_uri=store,
                        workdir=tmp_path / "work", workers=workers, **settings)
    lines: list[str] = []
    summary = run_campaign(settings, {a.name: a for a in agents}, echo=lines.append)
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("autoresearch/toy").experiment_id
    runs = client.search_runs([exp], TRIALS, order_by=["attributes.start_time ASC"])
    return summary, lines, runs


def test_three_workers_overlap_and_record_one_tree(toy_env, store, tmp_path):
    edit_spec(toy_env, resources={"cpus": 0.5})
    opt = ScriptedAgent("opt", [("a", _sleep(3, "a")), ("a again", _sleep(3, "a")),
                                ("b", _sleep(3, "b"))])
    sched = ScriptedAgent("sched", [("c", _sleep(3, "c")), ("d", _sleep(3, "d"))])
    summary, lines, runs = _campaign(toy_env, store, tmp_path, [opt, sched], 4, 3)
    numbers = sorted(int(r.data.tags[tags.TRIAL]) for r in runs)
    assert numbers == [0, 1, 2, 3, 4]
    assert any("refused before it ran: opt's edit is the one t0001 is running on the same "
               "parent" in line for line in lines), lines
    assert "a again" not in {r.data.tags[tags.HYPOTHESIS] for r in runs}
    baseline = next(r for r in runs if r.data.tags[tags.TRIAL] == "0")
    trials = [r for r in runs if r.data.tags[tags.TRIAL] != "0"]
    for run in runs:
        check_trial_contract(MlflowStore(store), run.info.run_id)
        assert run.data.tags[tags.EXECUTOR] == "local"
        assert run.data.tags[tags.NODE] == socket.gethostname()
    for run in trials:  # every trial builds on the baseline: nothing beat it
        assert run.data.tags[tags.PARENT] == baseline.info.run_id
        assert run.data.tags[tags.MLFLOW_PARENT] == baseline.info.run_id
        assert run.info.start_time >= baseline.info.end_time  # the baseline ran alone
    spans = sorted((r.info.start_time, r.info.end_time, r.data.tags[tags.SLOT]) for r in trials)
    first, second, third = spans[:3]
    assert second[0] < first[1] and third[0] < first[1]  # three at once
    assert len({first[2], second[2], third[2]}) == 3      # in three slots
    assert summary.labels["ok"] == 5


def test_each_slot_keeps_to_its_own_cores(toy_env, store, tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    opt = ScriptedAgent("opt", [("x", _sleep(2, "x", "environ")), ("y", _sleep(2, "y", "environ"))])
    _, _, runs = _campaign(toy_env, store, tmp_path, [opt], 2, 2, keep_run_dirs=True)
    seen = {}
    for run in runs[1:]:
        number = int(run.data.tags[tags.TRIAL])
        folder = next((tmp_path / "work" / "runs").glob(f"t{number:04d}-*"))
        cores = json.loads((folder / "seeds" / "0" / "out" / "cores.json").read_text())
        assert len(cores) == 1
        seen[run.data.tags[tags.SLOT]] = cores[0]
    assert sorted(seen) == ["0", "1"] and seen["0"] != seen["1"]


def test_more_workers_than_cores_is_refused(toy_env, store, tmp_path):
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(HarnessError, match=f"--workers {cores + 1} needs .* may use {cores}"):
        _campaign(toy_env, store, tmp_path, [ScriptedAgent("opt", [])], 1, cores + 1)


SLOW = "opt:\n" + "".join(
    f"  - {{name: slow{i}, set: {{SLEEP: {5 + i / 10}}}, hypothesis: Sleep {i}}}\n"
    for i in range(6))


def test_sigkill_with_three_in_flight_loses_and_duplicates_nothing(toy_env, store, tmp_path):
    edit_spec(toy_env, resources={"cpus": 0.5})
    (toy_env / "techniques.yaml").write_text(SLOW)
    work = tmp_path / "work"

    def loop(trials):
        return subprocess.Popen(
            [sys.executable, "-m", "mlflow_autoresearch.cli", "run", str(toy_env), "--trials",
             str(trials), "--workers", "3", "--tracking-uri", store, "--workdir", str(work)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    client = MlflowClient(store)
    first = loop(3)
    deadline = time.monotonic() + 120
    while True:
        exp = client.get_experiment_by_name("autoresearch/toy")
        running = [] if exp is None else [
            r for r in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
            if tags.PID in r.data.tags]
        if len(running) == 3:
            break
        assert time.monotonic() < deadline and first.poll() is None, "never had 3 in flight"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    for run in running:  # each trial's processes died with the loop
        assert process_gone(int(run.data.tags[tags.PID].split("@")[0]), 15)
    assert recipes_gone(work), recipe_pids(work)
    second = loop(6)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    runs = client.search_runs([exp.experiment_id], TRIALS,
                              order_by=["attributes.start_time ASC"])
    numbers = [int(r.data.tags[tags.TRIAL]) for r in runs]
    assert sorted(numbers) == list(range(7))
    orphans = {r.info.run_id for r in running}
    for run in runs:
        assert run.info.status != "RUNNING"
        if run.info.run_id in orphans:
            assert run.data.tags[tags.LABEL] == "harness_abort"
    retried = [r.data.tags.get(tags.RETRY_OF) for r in runs if tags.RETRY_OF in r.data.tags]
    assert sorted(retried) == sorted(orphans)  # each orphan's proposal ran once more
    assert out.count("was left running by a loop that is gone") == 3
