"""`TrialStoreContract`: the conformance suite every `TrialStore` implementation runs.

Subclass it in a test module and give it a `store` fixture that returns a fresh, empty store
(and `store_factory`, a callable that opens a second handle on the same store, as a second loop
process would):

    class TestMyStore(TrialStoreContract):
        @pytest.fixture
        def store_factory(self, tmp_path):
            return lambda: MyStore(tmp_path / "db")

The store may be shared between tests (a server started once): every test uses its own campaign
names.

tests/test_store.py runs it on MLflow over a SQLite file and over a loopback `mlflow server`.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from .. import tags
from ..diffs import diff_sha
from ..environment import Environment
from ..errors import AutoresearchError, LeaseError, StoreError
from ..records import (Audit, Decision, Direction, FailureLabel, Outcome, Proposal, Trial,
                       TrialResult)
from ..store import TrialStore

RECIPE = {"recipe/r.py": "X = 1\n"}
DIFF = "--- a/recipe/r.py\n+++ b/recipe/r.py\n@@ -1 +1 @@\n-X = 1\n+X = 2\n"


def contract_environment(root: Path) -> Environment:
    """A minimal environment value for records (nothing is run)."""
    return Environment(name="contract", root=root, profile="tiny", entry_point="train",
                       editable=tuple(RECIPE), protected=(), evaluator=root / "evaluator.py",
                       score_metric="loss", direction=Direction.MINIMIZE, min_delta=0.0,
                       seeds=(0,), train_seconds=10.0, eval_seconds=10.0)


def _result(label: FailureLabel, score: float | None = None, **kw) -> TrialResult:
    outcome = Outcome(label, score=score, metrics={"loss": score} if score is not None else {})
    return TrialResult(outcome, dict(RECIPE), {"seed.txt": "trained\n"}, 2, 1.5, 1.0, **kw)


class TrialStoreContract:
    """What the campaign loop relies on; see store/base.py for the protocol."""

    @pytest.fixture
    def store_factory(self) -> Callable[[], TrialStore]:
        raise NotImplementedError("subclass TrialStoreContract and define store_factory")

    @pytest.fixture
    def store(self, store_factory) -> TrialStore:
        return store_factory()

    @pytest.fixture
    def env(self, tmp_path) -> Environment:
        return contract_environment(tmp_path)

    @pytest.fixture
    def name(self) -> str:
        """A campaign name no other test uses (a store may be shared between tests)."""
        return f"contract-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def campaign(self, store, env, name) -> str:
        campaign_id = store.open_campaign(name, env)
        lease = store.acquire_lease(campaign_id)
        yield campaign_id
        lease.release()

    def _trial(self, store, env, campaign, number, label, score=None, parent=None,
               specialist="opt", decision=None) -> Trial:
        proposal = (Proposal("baseline", "as shipped", "", None, expected_delta=0.0)
                    if parent is None else Proposal(specialist, f"idea {number}", DIFF, parent, -0.1))
        run_id = store.create_trial(campaign, env, number, proposal, f"context {number}")
        return store.finish_trial(run_id, number, proposal, _result(label, score), decision, None)

    def test_a_campaign_opens_once_by_name(self, store, env, name):
        first = store.open_campaign(name, env)
        assert store.open_campaign(name, env) == first
        assert store.campaigns(name) == [(first, name)]
        assert store.campaigns(name + "-none") == []
        assert store.direction(first) is Direction.MINIMIZE
        _, found = store.experiment(first)  # what the MLflow UI opens it with
        assert found[tags.MLFLOW_EXPERIMENT_KIND] == tags.MODEL_TRAINING
        view = json.loads(json.loads(found[tags.MLFLOW_VIEW_PREFIX + tags.VIEW_KEY])["state"])
        assert view["orderByKey"] == f"metrics.`{tags.TRIAL_NUMBER}`"
        assert "metrics.`score`" in view["selectedColumns"]
        assert not found[tags.MLFLOW_NOTE].startswith("*")  # the experiments list shows it raw

    def test_a_campaign_keeps_its_controls_and_tags_every_trial_with_them(self, store, env, name):
        off = {tags.CONTROL_LINEAGE: "off", tags.CONTROL_ROSTER: "single"}
        campaign = store.open_campaign(name, env, controls=off)
        proposal = Proposal("baseline", "as shipped", "", None, expected_delta=0.0)
        run_id = store.create_trial(campaign, env, 0, proposal, "")
        assert {k: store.raw(run_id).tags[k] for k in off} == off
        with pytest.raises(AutoresearchError, match="ran with --lineage off, not --lineage on"):
            store.open_campaign(name, env, controls={**off, tags.CONTROL_LINEAGE: "on"})
        confirm = {**off, tags.CONFIRM_SEEDS: "7,8"}
        with pytest.raises(AutoresearchError, match="with --confirm-seeds 0, not --confirm-seeds "
                                                    "2: continue it with --confirm-seeds 0"):
            store.open_campaign(name, env, controls=confirm)

    def test_the_keep_margin_and_its_measurement_are_recorded(self, store, env, campaign):
        assert store.keep_margin(campaign) is None
        base = self._trial(store, env, campaign, 0, FailureLabel.OK, 3.0, decision=Decision.BASELINE)
        store.record_margin(campaign, 0.5, "measured", base.run_id, (3.0, 3.25, 2.75))
        assert store.keep_margin(campaign) == (0.5, "measured")
        metrics = store.raw(base.run_id).metrics
        assert metrics[tags.SCORE_STD] == 0.25 and metrics[tags.NOISE_REPEATS] == 3
        store.record_margin(campaign, 0.1, "spec")
        assert store.keep_margin(campaign) == (0.1, "spec")

    def test_a_confirmed_trial_says_whether_its_confirmation_held(self, store, env, campaign):
        base = self._trial(store, env, campaign, 0, FailureLabel.OK, 3.0, decision=Decision.BASELINE)
        verdicts = {}
        for number, decision in ((1, Decision.KEEP), (2, Decision.DISCARD)):
            proposal = Proposal("opt", f"idea {number}", DIFF, base.run_id, -0.1)
            run_id = store.create_trial(campaign, env, number, proposal, "")
            result = _result(FailureLabel.OK, 2.0, confirmed=True)
            verdicts[decision] = store.finish_trial(run_id, number, proposal, result, decision, -1.0)
        assert verdicts[Decision.KEEP].confirm == "passed"
        assert verdicts[Decision.DISCARD].confirm == "failed"
        assert base.confirm == "" and tags.CONFIRM not in store.raw(base.run_id).tags

    def test_a_trial_is_running_until_finished_then_never_rewritten(self, store, env, campaign):
        proposal = Proposal("baseline", "as shipped", "", None, expected_delta=0.0)
        run_id = store.create_trial(campaign, env, 0, proposal, "the context", sandbox="bwrap")
        running = store.get_trial(run_id)
        assert store.raw(run_id).tags[tags.SANDBOX] == "bwrap"
        assert running.status == "RUNNING" and running.label is None and running.number == 0
        assert store.read_text(run_id, tags.CONTEXT) == "the context"
        done = store.finish_trial(run_id, 0, proposal, _result(FailureLabel.OK, 3.0),
                                  Decision.BASELINE, None)
        assert (done.status, done.label, done.score, done.decision) == \
            ("FINISHED", FailureLabel.OK, 3.0, Decision.BASELINE)
        assert store.load_recipe(run_id, tuple(RECIPE)) == RECIPE
        with pytest.raises(StoreError, match="never rewritten"):
            store.finish_trial(run_id, 0, proposal, _result(FailureLabel.CRASH), None, None)

    def test_trials_in_flight_and_the_same_edit_are_found(self, store, env, campaign):
        base = self._trial(store, env, campaign, 0, FailureLabel.OK, 3.0,
                           decision=Decision.BASELINE)
        proposal = Proposal("opt", "running", DIFF, base.run_id)
        running = store.create_trial(campaign, env, 1, proposal, "context")
        assert [t.run_id for t in store.in_flight(campaign)] == [running]
        found = store.same_edit(campaign, base.run_id, diff_sha(DIFF))
        assert [(t.run_id, t.label) for t in found] == [(running, None)]
        assert store.same_edit(campaign, base.run_id, diff_sha(DIFF.replace("2", "3"))) == []
        store.finish_trial(running, 1, proposal, _result(FailureLabel.OK, 2.0,
                           where={"executor": "local", "node": "here", "slot": "1"}),
                           Decision.KEEP, -1.0)
        assert store.in_flight(campaign) == []
        assert [t.label for t in store.same_edit(campaign, base.run_id, diff_sha(DIFF))] == [
            FailureLabel.OK]
        written = store.raw(running).tags
        assert (written[tags.EXECUTOR], written[tags.NODE], written[tags.SLOT]) == (
            "local", "here", "1")

    def test_failed_trials_carry_no_score_and_aborts_are_failed_runs(self, store, env, campaign):
        base = self._trial(store, env, campaign, 0, FailureLabel.OK, 3.0, decision=Decision.BASELINE)
        crash = self._trial(store, env, campaign, 1, FailureLabel.CRASH, parent=base.run_id)
        abort = self._trial(store, env, campaign, 2, FailureLabel.HARNESS_ABORT, parent=base.run_id)
        assert crash.score is None and crash.status == "FINISHED"
        assert abort.status == "FAILED"
        raw = store.raw(crash.run_id)
        assert tags.SCORE not in raw.metrics and raw.metrics[tags.FAILURE_CODE] == 1
        assert raw.tags[tags.PARENT] == base.run_id

    def test_numbering_is_max_plus_one(self, store, env, campaign):
        assert store.next_number(campaign) == 0
        base = self._trial(store, env, campaign, 0, FailureLabel.OK, 3.0, decision=Decision.BASELINE)
        self._trial(store, env, campaign, 7, FailureLabel.CRASH, parent=base.run_id)
        self._trial(store, env, campaign, 3, FailureLabel.CRASH, parent=base.run_id)
        assert store.next_number(campaign) == 8

    def test_queries_rank_and_hide_what_they_should(self, store, env, campaign):
        base = self._trial(store, env, campaign, 0, FailureLabel.OK, 3.0, decision=Decision.BASELINE)
        kept = self._trial(store, env, campaign, 1, FailureLabel.OK, 2.0, base.run_id,
                           decision=Decision.KEEP)
        self._trial(store, env, campaign, 2, FailureLabel.OK, 2.5, kept.run_id, "sched",
                    decision=Decision.DISCARD)
        self._trial(store, env, campaign, 3, FailureLabel.HARNESS_ABORT, parent=kept.run_id)
        running = store.create_trial(campaign, env, 4, Proposal("opt", "x", DIFF, kept.run_id),
                                     "")
        board = store.leaderboard(campaign, Direction.MINIMIZE)
        assert [t.number for t in board] == [1, 0]
        assert store.best(campaign, Direction.MINIMIZE).number == 1
        assert [t.number for t in store.ancestors(kept.run_id)] == [0, 1]
        assert {t.number for t in store.children(campaign, kept.run_id)} == {2, 3, 4}
        assert [t.number for t in store.recent(campaign)] == [2, 1, 0]
        assert [t.number for t in store.recent(campaign, specialist="sched")] == [2]
        assert store.baseline(campaign).number == 0
        view = store.view(campaign, Direction.MINIMIZE, "opt", store.baseline(campaign))
        assert view.best.number == 1 and [t.number for t in view.best_chain] == [0, 1]
        assert {t.number for t in store.trials(campaign)} == {0, 1, 2, 3, 4}
        assert store.get_trial(running).label is None

    def test_a_second_loop_cannot_take_a_held_campaign(self, store_factory, store, env, name):
        campaign = store.open_campaign(name, env)
        lease = store.acquire_lease(campaign)
        other = store_factory()
        with pytest.raises(LeaseError, match="held by another loop"):
            other.acquire_lease(campaign)
        lease.release()
        other.acquire_lease(campaign).release()

    def test_a_gone_loops_trials_are_recovered_and_retried_once(self, store_factory, store, env,
                                                                 name):
        campaign = store.open_campaign(name, env)
        lease = store.acquire_lease(campaign)
        base = self._trial(store, env, campaign, 0, FailureLabel.OK, 3.0, decision=Decision.BASELINE)
        proposal = Proposal("opt", "left running", DIFF, base.run_id, -0.2, "notes", tags={"m": "x"})
        orphan = store.create_trial(campaign, env, 1, proposal, "")
        store.record_processes(orphan, "12345@678")
        lease.release()  # the loop is gone; its trial is still RUNNING
        second = store_factory()
        second.acquire_lease(campaign)
        ((trial, marker),) = second.recover(campaign)
        assert (trial.run_id, trial.label, trial.status, marker) == \
            (orphan, FailureLabel.HARNESS_ABORT, "FAILED", "12345@678")
        assert second.recover(campaign) == []  # a finished run is never touched again
        (pending,) = second.pending_retries(campaign)
        retry = second.load_proposal(pending.run_id)
        assert (retry.specialist, retry.hypothesis, retry.diff, retry.parent_id,
                retry.expected_delta, retry.retry_of, retry.tags) == \
            ("opt", "left running", DIFF, base.run_id, -0.2, orphan, {"m": "x"})
        rerun = second.create_trial(campaign, env, 2, retry, "")
        second.finish_trial(rerun, 2, retry, _result(FailureLabel.CRASH), None, None)
        assert second.pending_retries(campaign) == []
        assert second.get_trial(rerun).retry_of == orphan

    def test_a_proposals_own_keys_are_namespaced(self, store, env, campaign):
        base = self._trial(store, env, campaign, 0, FailureLabel.OK, 3.0, decision=Decision.BASELINE)
        proposal = Proposal("opt", "priced", DIFF, base.run_id, tags={"label": "ok"},
                            metrics={tags.LLM_COST_USD: 0.25, "score": -1.0})
        run_id = store.create_trial(campaign, env, 1, proposal, "")
        store.finish_trial(run_id, 1, proposal, _result(FailureLabel.CRASH), None, None)
        raw = store.raw(run_id)
        assert raw.tags[tags.LABEL] == "crash" and tags.SCORE not in raw.metrics
        assert raw.tags[tags.AGENT_TAG_PREFIX + "label"] == "ok"
        assert math.isclose(store.llm_spend(campaign), 0.25)

    def test_the_verdict_carries_the_audit_the_knobs_and_a_telling_name(self, store, env,
                                                                       campaign):
        base = self._trial(store, env, campaign, 0, FailureLabel.OK, 3.0,
                           decision=Decision.BASELINE)
        proposal = Proposal("opt", "idea 1", DIFF, base.run_id, -0.1)
        run_id = store.create_trial(campaign, env, 1, proposal, "")
        audit = Audit((("opt", ("X",)),), "true")
        result = _result(FailureLabel.OK, 2.0, audit=audit)
        result = replace(result, recipe={"recipe/r.py": "X = 2\nY = {'tiny': 5, 'real': 9}\n"})
        store.finish_trial(run_id, 1, proposal, result, Decision.KEEP, -1.0)
        raw = store.raw(run_id)
        assert raw.tags[tags.AUDIT_TOUCHED] == "opt: X"
        assert raw.tags[tags.AUDIT_IN_DOMAIN] == "true"
        assert raw.params == {"X": "2", "Y": "5"}  # the trial's profile's entry
        assert raw.metrics[tags.KEPT_METRIC] == 1.0
        assert raw.name == "t0001-opt-keep"
        assert "[t0000](#/experiments/" in raw.tags[tags.MLFLOW_NOTE]
        assert "+X = 2" in raw.tags[tags.MLFLOW_NOTE]

    def test_report_and_replay_runs_are_never_trials(self, store, env, campaign, tmp_path):
        base = self._trial(store, env, campaign, 0, FailureLabel.OK, 3.0,
                           decision=Decision.BASELINE)
        folder = tmp_path / "report"
        folder.mkdir()
        (folder / "report.md").write_text("# report\n")
        first = store.write_report(campaign, folder, [(0, 3.0)], {"keeps": 0.0})
        second = store.write_report(campaign, folder, [(0, 3.0)], {"keeps": 0.0})
        replayed = store.record_replay(campaign, base.run_id, _result(FailureLabel.OK, 2.5),
                                       (4, 5), "tiny")
        runs = {r.run_id: r for r in store.campaign_runs(campaign)}
        assert list(runs) == [base.run_id]  # trials only
        assert store.next_number(campaign) == 1
        assert [t.run_id for t in store.recent(campaign)] == [base.run_id]
        assert store.best(campaign, Direction.MINIMIZE).run_id == base.run_id
        report = store.raw(second)
        assert report.tags[tags.KIND] == tags.REPORT_KIND and "report/report.md" in report.artifacts
        assert first != second and store.report_run(campaign) == second  # replaced
        replay = store.raw(replayed)
        assert replay.tags[tags.REPLAY_OF] == base.run_id
        assert replay.tags[tags.REPLAY_LABEL] == "ok" and replay.metrics[tags.SCORE] == 2.5
        assert tags.TRIAL not in replay.tags and tags.LABEL not in replay.tags
