"""Executors against the contract (`testing/executor_contract.py`), and slot planning."""

from __future__ import annotations

import dataclasses

import pytest

from mlflow_autoresearch.environment import load_environment
from mlflow_autoresearch.errors import HarnessError
from mlflow_autoresearch.execution import CommandEvaluator
from mlflow_autoresearch.execution.executors.local import LocalExecutor
from mlflow_autoresearch.execution.sandbox import choose, for_environment
from mlflow_autoresearch.execution.executors.slots import Slot, plan
from mlflow_autoresearch.records import FailureLabel
from mlflow_autoresearch.testing.executor_contract import ExecutorContract, collect, job


class TestLocalExecutor(ExecutorContract):
    @pytest.fixture
    def env(self, toy_env):
        return load_environment(str(toy_env), "tiny")

    @pytest.fixture
    def make_executor(self, tmp_path):
        def make(env, slots):
            evaluator = CommandEvaluator(env, tmp_path / "data",
                                         for_environment(choose("auto")[0], env))
            evaluator.prepare(tmp_path / "logs")
            return LocalExecutor(evaluator, plan(env, slots, cores=[0, 1]))
        return make


def _env(toy_env, cpus=1.0, gpus=0):
    return dataclasses.replace(load_environment(str(toy_env), "tiny"), cpus=cpus, gpus=gpus)


def test_one_slot_is_the_whole_machine(toy_env):
    env = _env(toy_env)
    assert [s.cores for s in plan(env, 1, cores=[0, 1, 2, 3])] == [(0, 1, 2, 3)]


def test_slots_split_the_cores_and_never_share_one(toy_env):
    assert [s.cores for s in plan(_env(toy_env), 2, cores=[0, 1, 2, 3])] == [(0, 1), (2, 3)]
    assert [s.cores for s in plan(_env(toy_env, cpus=2), 2, cores=[4, 5, 6, 7])] == [
        (4, 5), (6, 7)]


def test_fractional_cpus_share_cores(toy_env):
    slots = plan(_env(toy_env, cpus=0.25), 8, cores=[0, 1])
    assert [s.cores for s in slots] == [(0,), (1,)] * 4


def test_a_workers_count_the_machine_cannot_hold_is_refused(toy_env):
    with pytest.raises(HarnessError, match=r"--workers 3 needs 3 x 1 core\(s\).*may use 2"):
        plan(_env(toy_env), 3, cores=[0, 1])
    with pytest.raises(HarnessError, match="--workers 9 needs"):
        plan(_env(toy_env, cpus=0.25), 9, cores=[0, 1])


def test_gpus_are_split_and_hidden_from_slots_that_need_none(toy_env):
    slots = plan(_env(toy_env, gpus=1), 2, cores=[0, 1], gpus=["0", "1"])
    assert [s.variables() for s in slots] == [{"CUDA_VISIBLE_DEVICES": "0"},
                                              {"CUDA_VISIBLE_DEVICES": "1"}]
    hidden = plan(_env(toy_env), 2, cores=[0, 1], gpus=["0"])
    assert [s.variables() for s in hidden] == [{"CUDA_VISIBLE_DEVICES": ""}] * 2
    assert plan(_env(toy_env), 2, cores=[0, 1], gpus=[])[0].variables() == {}
    with pytest.raises(HarnessError, match="needs 4 GPU"):
        plan(_env(toy_env, gpus=2), 2, cores=[0, 1], gpus=["0", "1"])


def test_a_slot_that_fails_before_its_trial_still_answers(toy_env, tmp_path):
    """A fault in the worker thread itself (here: a core that does not exist) comes back as
    the job's harness_abort, so the loop never waits for a job forever."""
    env = load_environment(str(toy_env), "tiny")
    evaluator = CommandEvaluator(env, tmp_path / "data", for_environment("none", env))
    executor = LocalExecutor(evaluator, [Slot(0, (4096,))])
    executor.submit(job(env, tmp_path, "nowhere"))
    done = collect(executor, {"nowhere"})["nowhere"]
    assert done.result.outcome.label is FailureLabel.HARNESS_ABORT
    assert "harness error in slot 0" in done.result.outcome.excerpt
    assert isinstance(done.result.error, OSError)
