"""`ExecutorContract`: the conformance suite every `Executor` implementation runs.

Subclass it in a test module and give it two fixtures: `env`, an environment whose one editable
recipe has the knobs `MODE = "normal"` and `SLEEP = 0.0` (the toy environment of the tests:
"crash" raises, "hang" sleeps past any budget, SLEEP seconds of pretend work), and
`make_executor`, a callable `(env, slots) -> Executor` whose executor is ready to run trials of
`env` (data prepared):

    class TestMyExecutor(ExecutorContract):
        @pytest.fixture
        def make_executor(self, tmp_path):
            return lambda env, slots: MyExecutor(env, slots, tmp_path)

tests/test_executors.py runs it on the local executor, and on a two-node Ray cluster.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ..environment import Environment
from ..errors import HarnessError
from ..execution.executors import Done, Executor, Job
from ..execution.workspace import read_editable
from ..records import FailureLabel, Proposal
from ..diffs import make_diff

LONG = 120.0  # seconds a test waits for jobs before it fails


def job(env: Environment, tmp: Path, key: str, mode: str = "normal", sleep: float = 0.0) -> Job:
    """A trial of `env` whose recipe runs in `mode` after `sleep` seconds."""
    files = read_editable(env, env.root)
    rel = next(iter(files))
    edited = files[rel].replace('MODE = "normal"', f'MODE = "{mode}"', 1)
    edited = edited.replace("SLEEP = 0.0", f"SLEEP = {sleep}", 1)
    diff = make_diff(files, {rel: edited})
    proposal = Proposal("contract", f"{mode} after {sleep} s", diff, "parent" if diff else None)
    return Job(key, env, proposal, files, tmp / key)


def collect(executor: Executor, keys: set[str]) -> dict[str, Done]:
    """Poll until every one of `keys` came back; each exactly once."""
    found: dict[str, Done] = {}
    deadline = time.monotonic() + LONG
    while set(found) != keys:
        assert time.monotonic() < deadline, f"still waiting for {keys - set(found)}"
        for done in executor.poll(1.0):
            assert done.key in keys and done.key not in found, f"unexpected {done.key}"
            found[done.key] = done
    return found


class ExecutorContract:
    """What the campaign loop relies on from an executor."""

    @pytest.fixture
    def executor(self, make_executor, env):
        executor = make_executor(env, 2)
        yield executor
        executor.close()

    def test_each_job_comes_back_once_with_its_outcome_and_where_it_ran(self, executor, env,
                                                                        tmp_path):
        executor.submit(job(env, tmp_path, "ok"))
        executor.submit(job(env, tmp_path, "crash", mode="crash"))
        found = collect(executor, {"ok", "crash"})
        assert found["ok"].result.outcome.label is FailureLabel.OK
        assert found["crash"].result.outcome.label is FailureLabel.CRASH
        assert "deliberate crash" in "".join(found["crash"].result.logs.values())
        for done in found.values():
            assert done.result.where["executor"] == executor.name
            assert done.result.where["node"]
        assert executor.poll(0.2) == []

    def test_a_job_beyond_the_slots_is_refused(self, executor, env, tmp_path):
        executor.submit(job(env, tmp_path, "a", sleep=1))
        executor.submit(job(env, tmp_path, "b", sleep=1))
        with pytest.raises(HarnessError, match="slots"):
            executor.submit(job(env, tmp_path, "c"))
        collect(executor, {"a", "b"})
        executor.submit(job(env, tmp_path, "c"))  # a slot is free again
        collect(executor, {"c"})

    def test_a_cancelled_job_is_a_harness_abort_and_its_slot_frees(self, executor, env,
                                                                  tmp_path):
        executor.submit(job(env, tmp_path, "hang", mode="hang"))
        executor.submit(job(env, tmp_path, "ok"))
        time.sleep(3)  # the hanging recipe is running
        started = time.monotonic()
        executor.cancel("hang", "the test said so")
        found = collect(executor, {"hang", "ok"})
        outcome = found["hang"].result.outcome
        assert outcome.label is FailureLabel.HARNESS_ABORT
        assert "the test said so" in outcome.excerpt
        assert time.monotonic() - started < env.train_seconds  # killed, not waited out
        assert found["ok"].result.outcome.label is FailureLabel.OK
        executor.submit(job(env, tmp_path, "again"))
        collect(executor, {"again"})
