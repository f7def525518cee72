"""The campaign loop against a real local MLflow store, driven by scripted specialists on the toy
environment: labels, the keep rule, numbering, tampering, faults of the store, retries."""

import json
import subprocess
import sys

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric

from mlflow_autoresearch import campaign as campaign_module
from mlflow_autoresearch import tags
from mlflow_autoresearch.campaign import Settings, decide, evaluate_recipe, run_campaign
from mlflow_autoresearch.environment import load_environment
from mlflow_autoresearch.errors import HarnessError, StoreError
from mlflow_autoresearch.records import Decision, Direction, FailureLabel, Outcome, Proposal, Trial
from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.testing import ScriptedAgent, check_trial_contract, replace_in

RECIPE = "recipe/toy.py"
STEPS = replace_in(RECIPE, "STEPS = 60", "STEPS = 120")


def _spec(toy_env, **spec):
    path = toy_env / "autoresearch.yaml"
    doc = yaml.safe_load(path.read_text())
    doc.update(spec)
    path.write_text(yaml.safe_dump(doc))


def _campaign(toy_env, store, tmp_path, script, trials=None, agent=None, **settings):
    agent = agent or ScriptedAgent("opt", list(script))
    settings = Settings(str(toy_env), trials=len(script) if trials is None else trials,
                        tracking_uri=store, workdir=tmp_path / "work", **settings)
    lines = []
    summary = run_campaign(settings, {agent.name: agent}, echo=lines.append)
    return summary, lines


def _labels(summary):
    return [t.label.tag for t in summary.trials]


def test_every_label_the_toy_can_produce(toy_env, store, tmp_path):
    evaluator = toy_env.parent / "evaluators" / "toy.py"
    script = [
        ("better", STEPS),
        ("crash", replace_in(RECIPE, 'MODE = "normal"', 'MODE = "crash"')),
        ("nan", replace_in(RECIPE, 'MODE = "normal"', 'MODE = "nan"')),
        ("gate", replace_in(RECIPE, "STEPS = 120", "STEPS = 2")),
        ("hang", replace_in(RECIPE, 'MODE = "normal"', 'MODE = "hang"')),
        ("stale", "--- a/recipe/toy.py\n+++ b/recipe/toy.py\n@@ -1 +1 @@\n-nope\n+yes\n"),
        ("evaluator", f"--- a/../evaluators/toy.py\n+++ b/../evaluators/toy.py\n"
                      f"@@ -1 +1 @@\n-{evaluator.read_text().splitlines()[0]}\n+# mine\n"),
        ("traversal", "--- a/../../../../tmp/x.py\n+++ b/../../../../tmp/x.py\n@@ -1 +1 @@\n-a\n+b\n"),
        ("syntax", replace_in(RECIPE, "STEPS = 120", "STEPS = = 120")),
        # A header naming the recipe, rename lines moving a protected file: git follows the latter.
        ("rename", "diff --git a/recipe/toy.py b/recipe/toy.py\nsimilarity index 100%\n"
                   "rename from techniques.yaml\nrename to moved.yaml\n"),
        ("rename mlproject", "diff --git a/recipe/toy.py b/recipe/toy.py\nsimilarity index 100%\n"
                             "rename from MLproject\nrename to gone\n"),
        ("after", replace_in(RECIPE, "SLEEP = 0.0", "SLEEP = 0.001")),
    ]
    agent = ScriptedAgent("opt", list(script))
    _spec(toy_env, budgets={"train_seconds": 6, "eval_seconds": 20})
    summary, lines = _campaign(toy_env, store, tmp_path, script, agent=agent)
    assert _labels(summary) == [
        "ok", "ok", "crash", "crash", "disqualified", "train_budget_overrun",
        "preflight_crash", "preflight_crash", "preflight_crash", "preflight_crash",
        "preflight_crash", "preflight_crash", "ok"]
    by_hyp = {t.hypothesis: t for t in summary.trials}
    assert by_hyp["better"].decision is Decision.KEEP
    assert "deliberate crash" in by_hyp["crash"].excerpt
    assert "does not apply" in by_hyp["stale"].excerpt
    assert "touches the evaluator" in by_hyp["evaluator"].excerpt
    assert "outside the workspace" in by_hyp["traversal"].excerpt
    assert "syntax error" in by_hyp["syntax"].excerpt
    assert "removes or renames 'techniques.yaml'" in by_hyp["rename"].excerpt
    assert "removes or renames 'MLproject'" in by_hyp["rename mlproject"].excerpt
    assert (toy_env / "MLproject").is_file() and (toy_env / "techniques.yaml").is_file()
    assert len(lines) == 13 and lines[0].startswith("t0000 baseline")
    assert evaluator.read_text().startswith('"""Evaluator of the toy environment')
    # Every trial carries the whole contract, and the agent heard about each of its proposals.
    s = MlflowStore(store)
    for trial in summary.trials:
        assert check_trial_contract(s, trial.run_id, "toy", "autoresearch/toy") is trial.label
    assert [t.run_id for t in agent.told] == [t.run_id for t in summary.trials[1:]]
    assert [t.label for t in agent.told] == [t.label for t in summary.trials[1:]]
    # A preflight_crash logs the parent's recipe and why the edit never ran.
    stale = s.raw(by_hyp["stale"].run_id)
    assert "trial/recipe/recipe/toy.py" in stale.artifacts
    assert "does not apply" in s.read_text(stale.run_id, "trial/logs/preflight.txt")
    assert "STEPS = 120" in s.read_text(stale.run_id, "trial/recipe/recipe/toy.py")
    board = s.leaderboard(summary.experiment_id, Direction.MINIMIZE)
    assert [t.hypothesis for t in board] == ["better", summary.trials[0].hypothesis]


def test_eval_overrun_and_broken_evaluator_are_not_the_recipes_fault(toy_env, store, tmp_path):
    _spec(toy_env, budgets={"train_seconds": 20, "eval_seconds": 0.05})
    summary, _ = _campaign(toy_env, store, tmp_path, [], trials=0)
    assert _labels(summary) == ["eval_budget_overrun"]
    evaluator = toy_env.parent / "evaluators" / "toy.py"
    evaluator.write_text(evaluator.read_text().replace('"schema": 2', '"schema": 99'))
    _spec(toy_env, budgets={"train_seconds": 20, "eval_seconds": 20})
    with pytest.raises(HarnessError, match="evaluator failed"):
        _campaign(toy_env, store, tmp_path, [], trials=1, experiment="broken")
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("broken").experiment_id])
    assert [r.data.tags[tags.LABEL] for r in runs] == ["harness_abort"]
    assert runs[0].info.status == "FAILED" and "schema" in runs[0].data.tags[tags.EXCERPT]
    check_trial_contract(MlflowStore(store), runs[0].info.run_id)


def test_resuming_continues_numbering_and_lineage(toy_env, store, tmp_path):
    first, _ = _campaign(toy_env, store, tmp_path, [("steps", STEPS)])
    second, _ = _campaign(toy_env, store, tmp_path,
                          [("lr", replace_in(RECIPE, "LR = 0.1", "LR = 0.15"))], trials=2)
    assert [t.number for t in first.trials] == [0, 1]
    assert [t.number for t in second.trials] == [2]
    assert second.trials[0].parent_id == first.trials[1].run_id  # built on the kept trial
    s = MlflowStore(store)
    assert [t.number for t in s.ancestors(second.trials[0].run_id)] == [0, 1, 2]
    assert s.raw(second.trials[0].run_id).tags[tags.MLFLOW_PARENT] == first.trials[1].run_id


def test_a_standalone_evaluation_never_touches_the_campaign(toy_env, store, tmp_path):
    """`autoresearch evaluate` used to write a trial 0 into the campaign, rewinding numbering."""
    _campaign(toy_env, store, tmp_path, [("steps", STEPS)])
    settings = Settings(str(toy_env), trials=0, tracking_uri=store, workdir=tmp_path / "work")
    evaluated = evaluate_recipe(settings, echo=lambda line: None)
    s = MlflowStore(store)
    assert s.campaign_of(evaluated.run_id) != s.campaigns("autoresearch/toy")[0][0]
    assert [name for _, name in s.campaigns()] == ["autoresearch/toy"]  # not a campaign
    later, _ = _campaign(toy_env, store, tmp_path, [("lr", replace_in(RECIPE, "LR = 0.1", "LR = 0.15"))],
                         trials=2)
    assert [t.number for t in later.trials] == [2]
    with pytest.raises(Exception, match="is a campaign: standalone evaluations never go into one"):
        evaluate_recipe(Settings(str(toy_env), tracking_uri=store, workdir=tmp_path / "work",
                                 experiment="autoresearch/toy"), echo=lambda line: None)


def test_a_recipe_that_writes_its_own_verdict_is_illegal_and_overwritten(toy_env, store, tmp_path,
                                                                        monkeypatch):
    """Without a sandbox (which hides the store: tests/test_tamper.py), recipes still get no
    MLflow variables; one that finds the store anyway and rewrites its trial number, label and
    score is caught by value, and its keys are rewritten."""
    tamper = lambda files: replace_in(RECIPE, 'STORE = ""', f'STORE = "{store}"')(  # noqa: E731
        replace_in(RECIPE, 'MODE = "normal"', 'MODE = "tamper"')(files))
    environ = replace_in(RECIPE, 'MODE = "normal"', 'MODE = "environ"')
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    summary, _ = _campaign(toy_env, store, tmp_path, [("environ", environ), ("tamper", tamper)],
                           keep_run_dirs=True, sandbox="off")
    assert _labels(summary) == ["ok", "ok", "illegal"]
    seen = json.loads(next((tmp_path / "work" / "runs").glob("t0001-*/seeds/0/out/environ.json"))
                      .read_text())
    assert not [k for k in seen if k.startswith("MLFLOW_") or k == "OPENAI_API_KEY"], seen
    tampered = MlflowStore(store).raw(summary.trials[2].run_id)
    assert "tag 'autoresearch.trial'" in summary.trials[2].excerpt
    assert "metric 'score'" in summary.trials[2].excerpt
    assert tampered.tags[tags.TRIAL] == "2" and tampered.tags[tags.LABEL] == "illegal"
    assert tags.DECISION not in tampered.tags and not summary.trials[2].is_kept
    assert tampered.metrics[tags.TRIAL_NUMBER] == 2
    check_trial_contract(MlflowStore(store), tampered.run_id)  # the score is masked (NaN)
    again, _ = _campaign(toy_env, store, tmp_path, [("more", STEPS)], trials=3)
    assert [t.number for t in again.trials] == [3]


def test_a_proposals_own_keys_cannot_override_the_harness(toy_env, store, tmp_path):
    class Forger(ScriptedAgent):
        def ask(self, ctx):
            p = super().ask(ctx)
            return Proposal(p.specialist, p.hypothesis, p.diff, p.parent_id,
                            tags={"trial": "999", "label": "ok"},
                            metrics={"score": -1.0, "mse": 0.0, "failure_code": 0.0})

    agent = Forger("opt", [("crash", replace_in(RECIPE, 'MODE = "normal"', 'MODE = "crash"'))])
    summary, _ = _campaign(toy_env, store, tmp_path, [], trials=1, agent=agent)
    run = MlflowStore(store).raw(summary.trials[1].run_id)
    assert run.tags[tags.TRIAL] == "1" and run.tags[tags.LABEL] == "crash"
    assert run.tags["autoresearch.agent.trial"] == "999"
    assert tags.SCORE not in run.metrics and run.metrics[tags.FAILURE_CODE] == 1
    assert run.metrics["agent.score"] == -1.0


@pytest.mark.parametrize("fault", ["after the metrics", "after the verdict"])
def test_a_store_fault_while_recording_leaves_no_half_trial(toy_env, store, tmp_path,
                                                            monkeypatch, fault):
    """The run's final status is the last write; a fault before it leaves a run that no query
    counts, and the next start recovers it as harness_abort, score masked, decision removed."""
    class FailingStore(MlflowStore):
        def _final_batch(self, run_id, metrics, final_tags, step):
            if fault == "after the metrics":
                self.client.log_batch(run_id, metrics=[Metric(k, v, 0, step)
                                                       for k, v in metrics.items()])
            else:
                super()._final_batch(run_id, metrics, final_tags, step)
            raise OSError(f"disk went away {fault}")

    monkeypatch.setattr(campaign_module, "MlflowStore", FailingStore)
    with pytest.raises(StoreError, match="disk went away"):
        _campaign(toy_env, store, tmp_path, [], trials=0)
    monkeypatch.undo()
    client = MlflowClient(store)
    half = client.search_runs([client.get_experiment_by_name("autoresearch/toy").experiment_id])[0]
    assert half.info.status == "RUNNING" and half.data.metrics[tags.SCORE] > 0
    assert (tags.DECISION in half.data.tags) == (fault == "after the verdict")
    s = MlflowStore(store)
    assert s.leaderboard(half.info.experiment_id, Direction.MINIMIZE) == []
    assert s.trials(half.info.experiment_id)[0].verdict == "running"
    shown = subprocess.run([sys.executable, "-m", "mlflow_autoresearch.cli", "status",
                            "--tracking-uri", store], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "1 trial(s); running 1" in shown.stdout, shown.stderr
    saved = list((tmp_path / "work" / "outbox").rglob("*.pkl"))
    assert [p.stem for p in saved] == [half.info.run_id]  # the record the store refused
    saved[0].unlink()  # lost with the machine: recovery still closes the run
    summary, lines = _campaign(toy_env, store, tmp_path, [], trials=1)
    assert "t0000 was left running by a loop that is gone: recorded as harness_abort" in lines[0]
    recovered = s.raw(half.info.run_id)
    assert recovered.tags[tags.LABEL] == "harness_abort" and tags.DECISION not in recovered.tags
    check_trial_contract(s, half.info.run_id)
    assert [t.number for t in summary.trials] == [1]
    assert summary.trials[0].decision is Decision.BASELINE


def test_a_record_the_store_refused_is_written_from_the_outbox_at_the_next_start(
        toy_env, store, tmp_path, monkeypatch):
    class FailingStore(MlflowStore):
        def _final_batch(self, run_id, metrics, final_tags, step):
            raise OSError("disk went away")

    monkeypatch.setattr(campaign_module, "MlflowStore", FailingStore)
    with pytest.raises(StoreError, match="disk went away"):
        _campaign(toy_env, store, tmp_path, [], trials=0)
    monkeypatch.undo()
    summary, lines = _campaign(toy_env, store, tmp_path, [], trials=0)
    assert lines[0].startswith("t0000 was recorded from the outbox")
    s = MlflowStore(store)
    baseline = s.baseline(summary.experiment_id)
    assert baseline.number == 0 and baseline.decision is Decision.BASELINE
    check_trial_contract(s, baseline.run_id)
    assert summary.trials == [] and not list((tmp_path / "work" / "outbox").rglob("*.pkl"))


def test_an_interrupted_trial_is_recorded_killed_and_leaves_nothing_behind(toy_env, store,
                                                                           tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, which the CLI turns into it) while a trial's process is starting."""
    class InterruptedStore(MlflowStore):
        calls = 0

        def record_processes(self, run_id, marker):
            InterruptedStore.calls += 1
            if InterruptedStore.calls == 4:  # after the baseline's 2 seeds and evaluator
                raise KeyboardInterrupt
            super().record_processes(run_id, marker)

    monkeypatch.setattr(campaign_module, "MlflowStore", InterruptedStore)
    with pytest.raises(KeyboardInterrupt):
        _campaign(toy_env, store, tmp_path, [("steps", STEPS)])
    monkeypatch.undo()
    s = MlflowStore(store)
    trials = s.trials(s.campaigns()[0][0])
    assert [t.verdict for t in trials] == ["ok", "harness_abort"]
    assert s.raw(trials[1].run_id).status == "KILLED"
    assert "interrupted by the user" in trials[1].excerpt
    check_trial_contract(s, trials[1].run_id)
    assert list((tmp_path / "work" / "runs").iterdir()) == []


def test_an_aborted_trials_proposal_runs_once_more(toy_env, store, tmp_path):
    """An interrupted trial's number is spent, but its idea is re-run at the next start, once."""
    class Interrupting(ScriptedAgent):
        def ask(self, ctx):
            proposal = super().ask(ctx)
            evaluator = toy_env.parent / "evaluators" / "toy.py"
            evaluator.write_text(evaluator.read_text().replace('"schema": 2', '"schema": 99'))
            return proposal

    first, _ = _campaign(toy_env, store, tmp_path, [], trials=1,
                         agent=Interrupting("opt", [("steps", STEPS)]))
    assert _labels(first) == ["ok", "harness_abort"]
    evaluator = toy_env.parent / "evaluators" / "toy.py"
    evaluator.write_text(evaluator.read_text().replace('"schema": 99', '"schema": 2'))
    lr = replace_in(RECIPE, "LR = 0.1", "LR = 0.15")
    summary, _ = _campaign(toy_env, store, tmp_path, [("lr", lr)], trials=3)
    retry, fresh = summary.trials
    aborted = first.trials[1]
    assert retry.retry_of == aborted.run_id
    assert (retry.number, retry.specialist, retry.hypothesis, retry.parent_id, retry.diff_sha) == \
        (2, "opt", "steps", aborted.parent_id, aborted.diff_sha)
    assert retry.label is FailureLabel.OK and (fresh.number, fresh.hypothesis) == (3, "lr")
    check_trial_contract(MlflowStore(store), retry.run_id)
    again, _ = _campaign(toy_env, store, tmp_path,
                         [("x", replace_in(RECIPE, "SLEEP = 0.0", "SLEEP = 0.01"))], trials=4)
    assert [t.retry_of for t in again.trials] == [None]  # retried once only


def test_a_misspelt_score_metric_or_gate_stops_the_campaign(toy_env, store, tmp_path):
    _spec(toy_env, score={"metric": "msee", "direction": "minimize"})
    with pytest.raises(HarnessError, match=r"no metric 'msee'.*it reported: mse, n_seeds"):
        _campaign(toy_env, store, tmp_path, [], trials=2)
    _spec(toy_env, score={"metric": "mse", "direction": "minimize"}, gates={"mse_gate": 0.05})
    with pytest.raises(HarnessError, match=r"did not apply the gate\(s\) \['mse_gate'\]"):
        _campaign(toy_env, store, tmp_path, [], trials=2, experiment="gates")
    for name in ("autoresearch/toy", "gates"):
        client = MlflowClient(store)
        (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        assert run.data.tags[tags.LABEL] == "harness_abort"


def test_keep_rule_needs_more_than_min_delta(toy_env):
    env = load_environment(str(toy_env))  # minimize, min_delta 0.0001
    best = Trial("r0", 0, "baseline", "h", None, "FINISHED", FailureLabel.OK, 1.0)
    ok = lambda score: Outcome(FailureLabel.OK, score=score)  # noqa: E731
    assert decide(env, ok(0.9), best, False) == (Decision.KEEP, pytest.approx(-0.1))
    assert decide(env, ok(0.99995), best, False)[0] is Decision.DISCARD  # inside the noise margin
    assert decide(env, ok(1.5), best, False)[0] is Decision.DISCARD
    assert decide(env, Outcome(FailureLabel.CRASH), best, False) == (None, None)
    assert decide(env, ok(3.0), None, True) == (Decision.BASELINE, None)
    assert decide(env, ok(3.0), None, False) == (Decision.KEEP, None)
