"""Airbench96 end to end on the tiny profile: the real recipe, evaluator, loop, store and CLI."""

from pathlib import Path

from mlflow import MlflowClient

from mlflow_autoresearch import tags
from mlflow_autoresearch.campaign import Settings, run_campaign
from mlflow_autoresearch.records import FailureLabel
from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.testing import ScriptedAgent, check_trial_contract, replace_in

from support import ROOT, cli_campaign, copy_env, mlflow_run_project

RECIPE = "recipe/airbench96.py"


def _check_trial(client, run, experiment):
    """The trial contract (shipped in the package), plus what Airbench96's evaluator measures."""
    label = check_trial_contract(MlflowStore(client.tracking_uri), run.info.run_id, "airbench96",
                                 experiment)
    m = client.get_run(run.info.run_id).data.metrics
    if label not in (FailureLabel.PREFLIGHT_CRASH, FailureLabel.HARNESS_ABORT):
        assert "n_seeds" in m
    if label in (FailureLabel.OK, FailureLabel.DISQUALIFIED):
        assert {"train_seconds", "accuracy"} <= set(m)
    return int(run.data.tags[tags.TRIAL]), label


def test_campaign_from_the_cli_records_well_formed_trials(tmp_path):
    client, runs, stdout = cli_campaign("airbench96", tmp_path, "--trials", "6", timeout=900)
    assert len([line for line in stdout.splitlines() if line.startswith("t00")]) == 7
    seen = [_check_trial(client, run, "autoresearch/airbench96") for run in runs]
    assert [n for n, _ in seen] == list(range(7))
    assert seen[0][1] is FailureLabel.OK  # the measured baseline passes its own gate
    # Turns by payoff: a specialist goes on only after a keep (an untried one's prior 1/2 beats
    # a tried one that kept nothing); which trials keep depends on timing, so the set may vary.
    turns = [(r.data.tags[tags.SPECIALIST], r.data.tags.get(tags.DECISION), tags.RETRY_OF in
              r.data.tags) for r in runs[1:]]
    assert {name for name, _, _ in turns} <= {"arch", "opt", "aug", "loss", "reg"}
    for (before, decision, _), (name, _, retry) in zip(turns, turns[1:]):
        assert name != before or decision == "keep" or retry, turns
    assert len({name for name, _, _ in turns}) >= min(5, 6 - sum(d == "keep" for _, d, _ in turns))


def test_each_label_airbench_can_produce(tmp_path):
    env_dir = copy_env(ROOT / "projects" / "airbench96", tmp_path / "envs", ROOT / "evaluators",
                       budgets={"train_seconds": 15, "eval_seconds": 60})
    evaluator = tmp_path / "envs" / "evaluators" / "airbench96.py"
    knobs = 'EPOCHS = {"tiny": 8, "real": 45, "search": 8}'
    script = [
        ("crash", replace_in(RECIPE, knobs, knobs + "\nimport math; math.sqrt(-1)")),
        ("hang", replace_in(RECIPE, knobs, knobs + "\nimport time; time.sleep(3600)")),
        ("one epoch", replace_in(RECIPE, knobs, knobs.replace('"tiny": 8', '"tiny": 1'))),
        ("stale", "--- a/recipe/airbench96.py\n+++ b/recipe/airbench96.py\n"
                  "@@ -1 +1 @@\n-not the first line\n+x\n"),
        ("evaluator", "--- a/../evaluators/airbench96.py\n+++ b/../evaluators/airbench96.py\n"
                      "@@ -1 +1 @@\n-x\n+y\n"),
        ("traversal", "--- a/recipe/../../../x.py\n+++ b/recipe/../../../x.py\n"
                      "@@ -1 +1 @@\n-x\n+y\n"),
    ]
    before = evaluator.read_text()
    settings = Settings(str(env_dir), "tiny", trials=len(script),
                        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                        workdir=tmp_path / "work")
    summary = run_campaign(settings, {"opt": ScriptedAgent("opt", script)}, echo=lambda line: None)
    got = {t.hypothesis: t for t in summary.trials}
    assert summary.trials[0].label is FailureLabel.OK
    assert got["crash"].label is FailureLabel.CRASH
    assert "ValueError: math domain error" in got["crash"].excerpt
    assert got["hang"].label is FailureLabel.TRAIN_BUDGET_OVERRUN
    assert got["one epoch"].label is FailureLabel.DISQUALIFIED
    for name in ("stale", "evaluator", "traversal"):
        assert got[name].label is FailureLabel.PREFLIGHT_CRASH, name
    assert "evaluator" in got["evaluator"].excerpt
    assert "outside the workspace" in got["traversal"].excerpt
    assert evaluator.read_text() == before
    client = MlflowClient(settings.tracking_uri)
    for trial in summary.trials:
        _check_trial(client, client.get_run(trial.run_id), summary.campaign)


def test_mlflow_run_of_the_project_logs_its_evaluation(tmp_path):
    """`mlflow run projects/airbench96 -P profile=tiny` works on its own."""
    client, run = mlflow_run_project(ROOT / "projects" / "airbench96", tmp_path)
    assert run.data.tags[tags.LABEL] == "ok" and run.data.metrics["accuracy"] >= 0.98
    assert run.data.tags["mlflow.project.entryPoint"] == "main"
    assert {"trial/evaluation.json", "trial/recipe"} <= {
        a.path for a in client.list_artifacts(run.info.run_id, "trial")}


def test_llm_specialists_from_the_cli_against_a_loopback_endpoint(tmp_path):
    """`autoresearch run airbench96 --specialists llm` with the real openai client over HTTP."""
    from fake_openai import FakeOpenAI

    recipe = (ROOT / "projects" / "airbench96" / RECIPE).read_text()
    line = next(l for l in recipe.splitlines() if l.startswith("EVAL_EVERY = "))
    search_replace = (
        "Hypothesis: Skip the per-epoch progress evaluations; they cost time and change nothing.\n"
        f"Expected delta: -0.3\nParent: t0000\n\n{RECIPE}\n```python\n<<<<<<< SEARCH\n{line}\n"
        f"=======\n{line.replace('EVAL_EVERY = 1', 'EVAL_EVERY = 0', 1)}\n>>>>>>> REPLACE\n```\n")
    lr = next(l for l in recipe.splitlines() if l.startswith("MOMENTUM = "))
    diff = (f"Hypothesis: Less momentum.\nExpected delta: 0.0\nParent: t0000\n\n```diff\n"
            f"--- a/{RECIPE}\n+++ b/{RECIPE}\n@@ -1,1 +1,1 @@\n-{lr}\n"
            f"+{lr.replace('0.85', '0.8', 1)}\n```\n")
    garbage = "I would rather not change anything today."
    with FakeOpenAI([search_replace, diff, garbage, garbage, garbage]) as server:
        client, runs, _ = cli_campaign("airbench96", tmp_path, "--specialists", "llm", "--model", "fake-model",
                                    "--base-url", server.base_url, "--trials", "3", "--price", "1,2",
                                    timeout=900)
    labels = [_check_trial(client, run, "autoresearch/airbench96")[1] for run in runs]
    assert labels[3] is FailureLabel.PREFLIGHT_CRASH and labels[1] is not labels[3]
    for run in runs[1:]:
        m = run.data.metrics
        assert m["agent.llm_input_tokens"] > 0 and m["agent.llm_output_tokens"] > 0 and m["agent.llm_cost_usd"] > 0
        assert run.data.tags["autoresearch.agent.model"] == "fake-model"
        names = {a.path for a in client.list_artifacts(run.info.run_id, "trial/llm")}
        assert "trial/llm/prompt.md" in names and "trial/llm/response.md" in names
    raw = Path(client.download_artifacts(runs[3].info.run_id, "trial/llm/response-3.md"))
    assert raw.read_text() == garbage
    assert "never applied" in runs[3].data.tags[tags.EXCERPT]
