"""The loop against a real local MLflow store, driven by scripted specialists on the toy env."""

import pytest
import yaml
from mlflow import MlflowClient

from mlflow_autoresearch import tags, tracking
from mlflow_autoresearch.loop import Settings, run_loop
from mlflow_autoresearch.records import Decision, FailureLabel
from mlflow_autoresearch.testing import ScriptedAgent, replace_in

RECIPE = "recipe/toy.py"


def _campaign(toy_env, store, tmp_path, script, trials=None, **spec):
    if spec:
        path = toy_env / "autoresearch.yaml"
        doc = yaml.safe_load(path.read_text())
        doc.update(spec)
        path.write_text(yaml.safe_dump(doc))
    agents = {"opt": ScriptedAgent("opt", list(script))}
    settings = Settings(str(toy_env), trials=trials or len(script), tracking_uri=store,
                        workdir=tmp_path / "work")
    lines = []
    summary = run_loop(settings, agents, echo=lines.append)
    return summary, lines


def _labels(summary):
    return [t.label.tag for t in summary.trials]


def test_every_label_the_toy_can_produce(toy_env, store, tmp_path):
    evaluator = toy_env.parent / "evaluators" / "toy.py"
    script = [
        ("better", replace_in(RECIPE, "STEPS = 60", "STEPS = 120")),
        ("crash", replace_in(RECIPE, 'MODE = "normal"', 'MODE = "crash"')),
        ("nan", replace_in(RECIPE, 'MODE = "normal"', 'MODE = "nan"')),
        ("gate", replace_in(RECIPE, "STEPS = 120", "STEPS = 2")),
        ("hang", replace_in(RECIPE, 'MODE = "normal"', 'MODE = "hang"')),
        ("tamper", replace_in(RECIPE, 'MODE = "normal"', 'MODE = "tamper"')),
        ("stale", "--- a/recipe/toy.py\n+++ b/recipe/toy.py\n@@ -1 +1 @@\n-nope\n+yes\n"),
        ("evaluator", f"--- a/../evaluators/toy.py\n+++ b/../evaluators/toy.py\n"
                      f"@@ -1 +1 @@\n-{evaluator.read_text().splitlines()[0]}\n+# mine\n"),
        ("traversal", "--- a/../../../../tmp/x.py\n+++ b/../../../../tmp/x.py\n@@ -1 +1 @@\n-a\n+b\n"),
        ("syntax", replace_in(RECIPE, "STEPS = 120", "STEPS = = 120")),
    ]
    summary, lines = _campaign(toy_env, store, tmp_path, script,
                               budgets={"train_seconds": 6, "eval_seconds": 20})
    assert _labels(summary) == [
        "ok", "ok", "crash", "crash", "disqualified", "train_budget_overrun", "illegal",
        "preflight_crash", "preflight_crash", "preflight_crash", "preflight_crash"]
    by_hyp = {t.hypothesis: t for t in summary.trials}
    assert by_hyp["better"].decision is Decision.KEEP
    assert "deliberate crash" in by_hyp["crash"].excerpt
    assert "does not apply" in by_hyp["stale"].excerpt
    assert "touches the evaluator" in by_hyp["evaluator"].excerpt
    assert "outside the workspace" in by_hyp["traversal"].excerpt
    assert "syntax error" in by_hyp["syntax"].excerpt
    assert "metric 'score'" in by_hyp["tamper"].excerpt
    assert len(lines) == 11 and lines[0].startswith("t0000 baseline")
    # Nothing an edit tried reached the evaluator, and failed trials never carry a score.
    assert evaluator.read_text().startswith('"""Evaluator of the toy environment')
    client = MlflowClient(store)
    for trial in summary.trials:
        run = client.get_run(trial.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.metrics[tags.FAILURE_CODE] == float(trial.label)
        assert (tags.SCORE in run.data.metrics) == (trial.label is FailureLabel.OK) or \
            trial.label is FailureLabel.ILLEGAL  # a tampering recipe's own metric stays, unranked
    board = tracking.search_leaderboard(client, summary.experiment_id, tracking.Direction.MINIMIZE)
    assert [t.hypothesis for t in board] == ["better", summary.trials[0].hypothesis]


def test_eval_overrun_and_broken_evaluator_are_not_the_recipes_fault(toy_env, store, tmp_path):
    summary, _ = _campaign(toy_env, store, tmp_path, [], trials=0,
                           budgets={"train_seconds": 20, "eval_seconds": 0.05})
    assert _labels(summary) == ["eval_budget_overrun"]
    evaluator = toy_env.parent / "evaluators" / "toy.py"
    evaluator.write_text(evaluator.read_text().replace('"schema": 1', '"schema": 99'))
    spec = toy_env / "autoresearch.yaml"
    spec.write_text(spec.read_text().replace("eval_seconds: 0.05", "eval_seconds: 20"))
    settings = Settings(str(toy_env), trials=1, tracking_uri=store, experiment="broken",
                        workdir=tmp_path / "work")
    with pytest.raises(Exception, match="evaluator failed"):
        run_loop(settings, {"opt": ScriptedAgent("opt")}, echo=lambda line: None)
    runs = MlflowClient(store).search_runs(
        [MlflowClient(store).get_experiment_by_name("broken").experiment_id])
    assert [r.data.tags[tags.LABEL] for r in runs] == ["harness_abort"]
    assert runs[0].info.status == "FAILED" and "schema" in runs[0].data.tags[tags.EXCERPT]


def test_resuming_continues_numbering_and_lineage(toy_env, store, tmp_path):
    first, _ = _campaign(toy_env, store, tmp_path,
                         [("steps", replace_in(RECIPE, "STEPS = 60", "STEPS = 120"))])
    second, _ = _campaign(toy_env, store, tmp_path,
                          [("lr", replace_in(RECIPE, "LR = 0.1", "LR = 0.15"))], trials=2)
    assert [t.number for t in first.trials] == [0, 1]
    assert [t.number for t in second.trials] == [2]
    assert second.trials[0].parent_id == first.trials[1].run_id  # built on the kept trial
    client = MlflowClient(store)
    chain = tracking.search_ancestors(client, second.trials[0].run_id)
    assert [t.number for t in chain] == [0, 1, 2]
    assert client.get_run(second.trials[0].run_id).data.tags[tags.MLFLOW_PARENT] == \
        first.trials[1].run_id


def test_keep_rule_needs_more_than_min_delta(toy_env):
    from mlflow_autoresearch.environment import load_environment
    from mlflow_autoresearch.loop import decide
    from mlflow_autoresearch.records import Outcome, Trial

    env = load_environment(str(toy_env))  # minimize, min_delta 0.0001
    best = Trial("r0", 0, "baseline", "h", None, "FINISHED", FailureLabel.OK, 1.0)
    ok = lambda score: Outcome(FailureLabel.OK, score=score)  # noqa: E731
    assert decide(env, ok(0.9), best, False) == (Decision.KEEP, pytest.approx(-0.1))
    assert decide(env, ok(0.99995), best, False)[0] is Decision.DISCARD  # inside the noise margin
    assert decide(env, ok(1.5), best, False)[0] is Decision.DISCARD
    assert decide(env, Outcome(FailureLabel.CRASH), best, False) == (None, None)
    assert decide(env, ok(3.0), None, True) == (Decision.BASELINE, None)
    assert decide(env, ok(3.0), None, False) == (Decision.KEEP, None)
