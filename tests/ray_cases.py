"""Ray cases, run by tests/test_ray.py inside a network namespace of their own (only 127.0.0.1
exists there and nothing leaves the machine): never collected on their own.

A real local Ray cluster (`ray.cluster_utils.Cluster`: a head with no CPUs and two one-CPU
worker nodes), a real SQLite store, real trials of the toy environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import ray
from mlflow import MlflowClient
from ray.cluster_utils import Cluster

from mlflow_autoresearch import tags
from mlflow_autoresearch.campaign import Settings, run_campaign
from mlflow_autoresearch.environment import load_environment
from mlflow_autoresearch.execution.sandbox import choose
from mlflow_autoresearch.execution.executors.ray import NODE_ROOT, RayExecutor
from mlflow_autoresearch.testing.executor_contract import ExecutorContract
from support import TRIALS, edit_spec, recipe_pids, recipes_gone

SLOW = "opt:\n" + "".join(
    f"  - {{name: slow{i}, set: {{SLEEP: {2.5 + i / 10}}}, hypothesis: Sleep {i}}}\n"
    for i in range(8))


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(autouse=True)
def _node_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(NODE_ROOT, str(tmp_path / "node"))


class TestRayExecutor(ExecutorContract):
    @pytest.fixture
    def env(self, toy_env):
        return load_environment(str(toy_env), "tiny")

    @pytest.fixture
    def make_executor(self, cluster):
        return lambda env, slots: RayExecutor(env, slots, "none", cluster[0].address)


def test_every_ray_node_reports_loopback(cluster):
    nodes = ray.nodes()
    assert len(nodes) == 3
    assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}


def test_a_lost_node_aborts_its_trial_and_the_proposal_reruns(cluster, toy_env, store,
                                                              tmp_path):
    (toy_env / "techniques.yaml").write_text(SLOW)
    client = MlflowClient(store)
    lost: list[str] = []

    def remove_a_busy_node():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            exp = client.get_experiment_by_name("autoresearch/toy")
            running = [] if exp is None else client.search_runs(
                [exp.experiment_id], "attributes.status = 'RUNNING'")
            if len([r for r in running if r.data.tags.get(tags.TRIAL) != "0"]) == 2:
                time.sleep(1.5)  # both recipes are running, one per node
                cluster[0].remove_node(cluster[1][0])
                lost.append(cluster[1][0].node_id)
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=remove_a_busy_node)
    watcher.start()
    settings = Settings(str(toy_env), trials=6, tracking_uri=store, workdir=tmp_path / "work",
                        workers=2, executor="ray", ray_address=cluster[0].address)
    summary = run_campaign(settings, echo=print)
    watcher.join()
    assert lost, "no node was removed"
    exp = client.get_experiment_by_name("autoresearch/toy").experiment_id
    runs = client.search_runs([exp], TRIALS, order_by=["attributes.start_time ASC"])
    assert sorted(int(r.data.tags[tags.TRIAL]) for r in runs) == list(range(7))
    aborted = [r for r in runs if r.data.tags[tags.LABEL] == "harness_abort"]
    assert len(aborted) == 1 and "Ray node or worker was lost" in aborted[0].data.tags[
        tags.EXCERPT]
    rerun = [r for r in runs if r.data.tags.get(tags.RETRY_OF) == aborted[0].info.run_id]
    assert len(rerun) == 1 and rerun[0].data.tags[tags.LABEL] == "ok"
    assert rerun[0].data.tags[tags.HYPOTHESIS] == aborted[0].data.tags[tags.HYPOTHESIS]
    for run in runs:
        assert run.info.status != "RUNNING" and run.data.tags[tags.EXECUTOR] == "ray"
        assert run.data.tags[tags.SANDBOX] == choose("auto")[0]  # recipes sandboxed on nodes
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    ok = [r for r in runs if r.data.tags[tags.LABEL] == "ok"]
    assert len(ok) == 6 and all(r.data.tags[tags.NODE] in alive | set(lost) for r in ok)
    assert summary.stop_reason == "reached trial 6"


def test_sigkill_of_a_ray_coordinator_loses_and_duplicates_nothing(toy_env, store, tmp_path):
    """The coordinator starts its own local Ray and dies with three trials in flight; the
    next start relabels them, and Ray took their processes down with the coordinator."""
    edit_spec(toy_env, resources={"cpus": 0.5})
    (toy_env / "techniques.yaml").write_text(SLOW.replace("{SLEEP: 2.5", "{SLEEP: 8"))
    node_dir = tmp_path / "node"

    def loop(trials):
        return subprocess.Popen(
            [sys.executable, "-m", "mlflow_autoresearch.cli", "run", str(toy_env), "--trials",
             str(trials), "--workers", "3", "--executor", "ray", "--tracking-uri", store,
             "--workdir", str(tmp_path / "work"), "--sandbox", "off"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
            start_new_session=True)

    client = MlflowClient(store)
    first = loop(3)
    deadline = time.monotonic() + 180
    while True:
        exp = client.get_experiment_by_name("autoresearch/toy")
        running = [] if exp is None else client.search_runs(
            [exp.experiment_id], "attributes.status = 'RUNNING'")
        if len(running) == 3 and len(recipe_pids(node_dir)) >= 3:
            break
        assert time.monotonic() < deadline and first.poll() is None, first.stdout.read()
        time.sleep(0.3)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert recipes_gone(node_dir, 60), recipe_pids(node_dir)
    second = loop(6)
    out, _ = second.communicate(timeout=400)
    assert second.returncode == 0, out
    runs = client.search_runs([exp.experiment_id], TRIALS,
                              order_by=["attributes.start_time ASC"])
    assert sorted(int(r.data.tags[tags.TRIAL]) for r in runs) == list(range(7))
    orphans = {r.info.run_id for r in running}
    assert all(r.info.status != "RUNNING" for r in runs)
    assert all(r.data.tags[tags.LABEL] == "harness_abort" for r in runs
               if r.info.run_id in orphans)
    retried = sorted(r.data.tags[tags.RETRY_OF] for r in runs if tags.RETRY_OF in r.data.tags)
    assert retried == sorted(orphans)
