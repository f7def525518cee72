"""The store through an outage, on a real `mlflow server`: its retries ride out a restart, a
record it still could not write waits in the outbox until the next start, and a fault that stays
fails at once."""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_autoresearch import tags
from mlflow_autoresearch.errors import AutoresearchError, StoreError
from mlflow_autoresearch.records import Decision, FailureLabel, Outcome, Proposal, TrialResult
from mlflow_autoresearch.store import MlflowStore, outbox
from mlflow_autoresearch.store._retry import RETRY_ENV
from mlflow_autoresearch.testing import check_trial_contract
from mlflow_autoresearch.testing.store_contract import RECIPE, contract_environment
from support import TRIALS, free_port, start_mlflow_server

BASELINE = Proposal("baseline", "as shipped", "", None, expected_delta=0.0)
RESULT = TrialResult(Outcome(FailureLabel.OK, score=2.5, metrics={"loss": 2.5}), dict(RECIPE),
                     {"seed.txt": "trained\n"}, 2, 1.5, 1.0)


@dataclass
class Server:
    """An `mlflow server` to kill and start again on the same port and store."""

    folder: Path
    port: int
    procs: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.procs.append(start_mlflow_server(self.folder, self.port))

    def kill(self) -> None:
        os.killpg(self.procs[-1].pid, signal.SIGKILL)
        self.procs[-1].wait()


@pytest.fixture
def restartable(tmp_path):
    server = Server(tmp_path, free_port())
    server.start()
    yield server
    for proc in server.procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _open_trial(uri: str, root: Path):
    """A store holding a campaign's lease, with its baseline trial RUNNING."""
    store = MlflowStore(uri)
    env = contract_environment(root)
    campaign = store.open_campaign("outage", env)
    lease = store.acquire_lease(campaign)
    run_id = store.create_trial(campaign, env, 0, BASELINE, "the context")
    return store, campaign, lease, run_id


def test_a_write_rides_out_a_server_restart(restartable, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(RETRY_ENV, "60")
    store, _, lease, run_id = _open_trial(restartable.url, tmp_path)
    restartable.kill()
    restart = threading.Timer(3, restartable.start)
    restart.start()
    started = time.monotonic()
    trial = store.finish_trial(run_id, 0, BASELINE, RESULT, Decision.BASELINE, None)
    waited = time.monotonic() - started
    restart.join()
    lease.release()
    assert (trial.status, trial.label, trial.score) == ("FINISHED", FailureLabel.OK, 2.5)
    assert store.raw(run_id).tags[tags.LABEL] == "ok"
    assert 3 < waited < 60
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and re.fullmatch(rf"the tracking store at {restartable.url} is "
                                           rf"unreachable \([a-z ]+\); retrying for up to 60 s",
                                           said[0])


def test_a_record_the_store_refused_waits_in_the_outbox(restartable, tmp_path, monkeypatch):
    monkeypatch.setenv(RETRY_ENV, "2")
    store, campaign, lease, run_id = _open_trial(restartable.url, tmp_path)
    written = store.written_tags(run_id)
    restartable.kill()
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"unreachable \(connection refused\) and stayed so for "
                                         r"2 s of retries"):
        store.finish_trial(run_id, 0, BASELINE, RESULT, Decision.BASELINE, None)
    assert time.monotonic() - started < 30
    box = outbox.folder(tmp_path / "work", campaign)
    path = outbox.save(box, run_id, 0, BASELINE, RESULT, Decision.BASELINE, None, [],
                       written=store.written_tags(run_id))
    assert path.parent == box and [p.name for p in box.iterdir()] == [f"{run_id}.pkl"]

    restartable.start()
    lease.release()
    fresh = MlflowStore(restartable.url)  # the next start: it knows nothing of the trial
    assert fresh.written_tags(run_id) is None
    fresh_lease = fresh.acquire_lease(campaign)
    [(pending, trial)] = outbox.flush(box, fresh)
    assert pending.run_id == run_id and pending.written == written
    assert (trial.status, trial.label, trial.score, trial.decision) == \
        ("FINISHED", FailureLabel.OK, 2.5, Decision.BASELINE)
    found = fresh.raw(run_id).tags
    written.pop(tags.MLFLOW_RUN_NAME)  # the verdict renames the run: t0000-baseline-baseline
    assert {k: found[k] for k in written} == written and found[tags.LABEL] == "ok"
    assert list(box.iterdir()) == []
    assert outbox.flush(box, fresh) == []

    outbox.save(box, run_id, 0, BASELINE, RESULT, Decision.BASELINE, None)
    [(_, reason)] = outbox.flush(box, fresh)
    assert "is already FINISHED" in reason and list(box.iterdir()) == []
    fresh_lease.release()


def test_the_outbox_keeps_only_what_pickles(tmp_path):
    class Local(Exception):
        """A class pickle cannot find by name."""

    def saved(error):
        path = outbox.save(tmp_path, "r1", 0, BASELINE, replace(RESULT, error=error), None, None)
        return pickle.loads(path.read_bytes()).result

    assert saved(Local("gone")).error is None
    assert saved(RuntimeError("kept")).error.args == ("kept",)
    assert saved(KeyboardInterrupt()).killed
    assert [p.name for p in tmp_path.iterdir()] == ["r1.pkl"]


def test_a_fault_that_stays_fails_at_once(server, store, monkeypatch, capsys):
    monkeypatch.setenv(RETRY_ENV, "60")
    for uri in (server, store):
        opened = MlflowStore(uri)
        opened.campaigns()  # a new SQLite file is created and migrated first: not the fault
        for run_id in ("0" * 32, "not a run id"):
            started = time.monotonic()
            with pytest.raises(StoreError, match="failed"):
                opened.get_trial(run_id)
            assert time.monotonic() - started < 2
    assert "retrying" not in capsys.readouterr().err


def test_a_retry_time_that_is_no_number_is_refused(store, monkeypatch):
    monkeypatch.setenv(RETRY_ENV, "a minute")
    with pytest.raises(AutoresearchError, match=f"{RETRY_ENV}='a minute' is not a number"):
        MlflowStore(store).campaigns()


def test_a_flushed_tampered_trial_gets_its_harness_tags_back(store, tmp_path):
    opened, campaign, lease, run_id = _open_trial(store, tmp_path)
    opened.client.set_tag(run_id, tags.SPECIALIST, "forged")
    opened.client.set_tag(run_id, tags.DECISION, "keep")
    tampered = opened.find_tampering(run_id)
    illegal = replace(RESULT, outcome=Outcome(FailureLabel.ILLEGAL, excerpt="wrote its verdict"))
    box = outbox.folder(tmp_path / "work", campaign)
    outbox.save(box, run_id, 0, BASELINE, illegal, None, None, tampered,
                written=opened.written_tags(run_id))
    lease.release()
    fresh = MlflowStore(store)
    fresh_lease = fresh.acquire_lease(campaign)
    [(_, trial)] = outbox.flush(box, fresh)
    fresh_lease.release()
    found = fresh.raw(run_id).tags
    assert (trial.label, trial.decision) == (FailureLabel.ILLEGAL, None)
    assert found[tags.SPECIALIST] == "baseline" and tags.DECISION not in found


SLOW = ("opt:\n" + "".join(f"  - {{name: slow{i}, set: {{SLEEP: {1.5 + i / 10}}}, "
                           f"hypothesis: Sleep {i}}}\n" for i in range(8)))


def test_a_campaign_rides_out_a_server_restart(restartable, toy_env, tmp_path):
    """Two workers against one `mlflow server --workers 1` killed and started again in the
    middle: the campaign finishes and every trial that finished has its whole record."""
    (toy_env / "techniques.yaml").write_text(SLOW)
    loop = subprocess.Popen(
        [sys.executable, "-m", "mlflow_autoresearch.cli", "run", str(toy_env), "--trials", "6",
         "--workers", "2", "--tracking-uri", restartable.url, "--workdir", str(tmp_path / "w")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, RETRY_ENV: "120"})
    client = MlflowClient(restartable.url)
    deadline = time.monotonic() + 120
    while True:
        exp = client.get_experiment_by_name("autoresearch/toy")
        if exp and len(client.search_runs([exp.experiment_id])) >= 3:
            break
        assert time.monotonic() < deadline and loop.poll() is None, "the campaign never got going"
        time.sleep(0.2)
    restartable.kill()
    time.sleep(3)
    restartable.start()
    out, _ = loop.communicate(timeout=400)
    assert loop.returncode == 0, out
    assert "is unreachable" in out
    runs = client.search_runs([exp.experiment_id], TRIALS)
    assert sorted(int(r.data.tags[tags.TRIAL]) for r in runs) == list(range(7))
    store = MlflowStore(restartable.url)
    for run in runs:
        assert run.info.status == "FINISHED", run.data.tags.get(tags.EXCERPT)
        check_trial_contract(store, run.info.run_id)
