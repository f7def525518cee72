"""Time scores that machine load does not move: the harness measures each seed's CPU seconds
(its whole process tree), whatever the recipe prints, and every trial records its time basis."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest
import yaml

from mlflow_autoresearch.environment import load_environment
from mlflow_autoresearch.errors import EnvironmentSpecError
from mlflow_autoresearch.execution import CommandEvaluator, process
from mlflow_autoresearch.execution.projects import kill_after, run_seeds
from mlflow_autoresearch.execution.sandbox import choose, for_environment
from mlflow_autoresearch.execution.workspace import materialise
from mlflow_autoresearch.testing import replace_in

RECIPE = "recipe/toy.py"
ANCHOR = "    time.sleep(SLEEP)\n"
SPIN = ("    import subprocess, sys\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import time\\nt = time.process_time()"
        "\\nwhile time.process_time() - t < 0.6: pass'])\n"
        "    t = time.process_time()\n"
        "    while time.process_time() - t < 1.2:\n        pass\n"
        "    child.wait()\n"
        "    print('cpu_seconds: 0.001')\n")


def test_a_command_tree_is_charged_its_cpu_time_not_its_wall_time(tmp_path):
    sleep = process.run([sys.executable, "-c", "import time; time.sleep(1.5)"], tmp_path, 30,
                        tmp_path / "o", tmp_path / "e")
    spin = process.run(["bash", "-c", "for i in 1 2; do python -c 'import time\nt = "
                        "time.process_time()\nwhile time.process_time() - t < 0.5: pass' & done; "
                        "wait"], tmp_path, 30, tmp_path / "o", tmp_path / "e",
                       env=process.child_env())
    assert sleep.seconds >= 1.5 and sleep.cpu_seconds < 0.5
    assert spin.cpu_seconds >= 1.0  # two children, each 0.5 s of CPU, measured in the parent


def test_seeds_report_harness_measured_cpu_whatever_they_print(toy_env, tmp_path):
    spec = yaml.safe_load((toy_env / "autoresearch.yaml").read_text())
    spec.update(seeds=[0], time_basis="cpu")
    (toy_env / "autoresearch.yaml").write_text(yaml.safe_dump(spec))
    env = load_environment(str(toy_env))
    evaluator = CommandEvaluator(env, tmp_path / "data")
    evaluator.prepare(tmp_path / "logs")
    sandbox = for_environment(choose("auto")[0], env)
    found = {}
    for name, edit in (("sleeps", replace_in(RECIPE, "SLEEP = 0.0", "SLEEP = 1.5")),
                       ("spins", replace_in(RECIPE, ANCHOR, ANCHOR + SPIN))):
        files = edit({RECIPE: (toy_env / RECIPE).read_text()})
        workspace = materialise(env, files, tmp_path / name / "workspace")
        run_seeds(env, workspace, tmp_path / name, evaluator.public_dir, sandbox)
        harness = json.loads((tmp_path / name / "harness.json").read_text())
        assert harness["time_basis"] == "cpu"
        found[name] = harness["seeds"][0]
    assert found["sleeps"]["exit_code"] == 0 and found["spins"]["exit_code"] == 0
    assert found["sleeps"]["wall_seconds"] > 1.5 and found["sleeps"]["cpu_seconds"] < 1.0
    assert found["spins"]["cpu_seconds"] >= 1.8  # 1.2 s in the recipe + 0.6 s in its child


def test_the_time_basis_is_checked_and_airbench_tiny_counts_cpu(toy_env):
    assert load_environment("airbench96", "tiny").time_basis == "cpu"
    assert load_environment("airbench96", "real").time_basis == "wall"
    assert load_environment(str(toy_env)).time_basis == "wall"
    spec = yaml.safe_load((toy_env / "autoresearch.yaml").read_text())
    spec["time_basis"] = "gpu"
    (toy_env / "autoresearch.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(EnvironmentSpecError, match="'time_basis' must be one of"):
        load_environment(str(toy_env))



def test_a_cpu_basis_kills_a_seed_at_one_and_a_half_times_its_budget_of_wall_time(toy_env):
    env = load_environment(str(toy_env))
    assert kill_after(env) == env.train_seconds
    assert kill_after(replace(env, time_basis="cpu")) == 1.5 * env.train_seconds
    assert load_environment("parameter_golf", "search").time_basis == "cpu"
    assert load_environment("nanochat_d12", "search").time_basis == "cpu"
