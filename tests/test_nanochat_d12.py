"""NanoChat-D12 on the tiny profile: the real recipe, CORE-lite evaluator, loop, store and CLI.

Loop tests run a copy whose horizon is a fifth of the shipped one (about 25 steps);
`test_mlflow_run_of_the_project_logs_its_evaluation` runs the recipe as shipped.
"""

from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_autoresearch import tags
from mlflow_autoresearch.campaign import Settings, run_campaign
from mlflow_autoresearch.records import FailureLabel
from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.testing import ScriptedAgent, check_trial_contract, replace_in
from support import ROOT, cli_campaign, copy_env, mlflow_run_project



ENV = ROOT / "projects" / "nanochat_d12"
RECIPE = "recipe/base_train.py"
SHIPPED_RATIO = 'TARGET_PARAM_DATA_RATIO = {"tiny": 0.5,'
SHORT_RATIO = 'TARGET_PARAM_DATA_RATIO = {"tiny": 0.1,'
TASKS = ("next_line", "line_schema", "closing_char", "last_word")


def short_env(tmp_path: Path, **budgets) -> Path:
    """A copy of the environment with a fifth of the training horizon, budgets overridden."""
    env_dir = copy_env(ENV, tmp_path / "envs", ROOT / "evaluators",
                       budgets={"train_seconds": 40, "eval_seconds": 40, **budgets})
    recipe = env_dir / RECIPE
    recipe.write_text(recipe.read_text().replace(SHIPPED_RATIO, SHORT_RATIO))
    return env_dir


def check_trial(client: MlflowClient, run, experiment: str) -> FailureLabel:
    """The trial contract (shipped in the package), plus what this evaluator measures."""
    label = check_trial_contract(MlflowStore(client.tracking_uri), run.info.run_id, "nanochat_d12",
                                 experiment)
    if label is FailureLabel.OK:
        m = client.get_run(run.info.run_id).data.metrics
        assert m[tags.SCORE] == pytest.approx(m["core"], abs=1e-5)
        assert all(f"core_{task}" in m for task in TASKS)
    return label


def test_mlflow_run_of_the_project_logs_its_evaluation(tmp_path):
    """`mlflow run projects/nanochat_d12 -P profile=tiny`: the shipped baseline within budgets."""
    client, run = mlflow_run_project(ENV, tmp_path)
    m = run.data.metrics
    assert run.data.tags[tags.LABEL] == "ok", run.data.tags.get(tags.EXCERPT)
    assert m["score"] == pytest.approx(m["core"], abs=1e-5) and 0.03 < m["core"] < 1.0
    assert 2.5 < m["val_bpb"] < 5.0
    assert m["depth"] == 2 and m["train_seconds"] < 40 and m["eval_seconds"] < 40
    assert run.data.tags["mlflow.project.entryPoint"] == "main"


def test_loop_labels_each_failure(tmp_path):
    env_dir = short_env(tmp_path, train_seconds=30, eval_seconds=20)
    knobs = 'DEPTH = {"tiny": 2, "real": 12, "search": 2}  # transformer blocks'
    main = "    args = parse_args(argv)\n"
    load = "    doc = torch.load(path, map_location=\"cpu\", weights_only=True)\n"
    script = [
        ("hang", replace_in(RECIPE, knobs, knobs + "\nimport time; time.sleep(3600)")),
        ("crash", replace_in(RECIPE, "        loss_value = loss.item()\n",
                             "        loss_value = loss.item() / 0\n")),
        ("deeper", lambda files: replace_in(RECIPE, knobs, knobs.replace('"tiny": 2', '"tiny": 3'))(
            replace_in(RECIPE, "ASPECT_RATIO = 64", "ASPECT_RATIO = 21")(files))),
        ("slow eval", replace_in(RECIPE, load, "    time.sleep(3600)\n" + load)),
        ("fake score", replace_in(RECIPE, main, main + "    print('CORE metric: 0.9999')\n")),
        # listed before "triton": were that kept, the SDPA call edited here would not run
        ("peeks ahead", replace_in(RECIPE, "is_causal=True", "is_causal=False")),
        # kernels/ comes from python_path (outside the workspace); on CPU it runs SDPA.
        ("triton", replace_in(RECIPE, 'ATTENTION_BACKEND = "sdpa"', 'ATTENTION_BACKEND = "triton"')),
    ]
    settings = Settings(str(env_dir), "tiny", trials=len(script),
                        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                        workdir=tmp_path / "work", confirm_seeds=0)  # labels under test
    summary = run_campaign(settings, {"arch": ScriptedAgent("arch", script)}, echo=lambda line: None)
    got = {t.hypothesis: t for t in summary.trials}
    baseline = summary.trials[0]
    assert baseline.label is FailureLabel.OK, baseline.excerpt
    assert got["hang"].label is FailureLabel.TRAIN_BUDGET_OVERRUN
    assert got["crash"].label is FailureLabel.CRASH
    assert "ZeroDivisionError" in got["crash"].excerpt and RECIPE in got["crash"].excerpt
    assert got["deeper"].label is FailureLabel.DISQUALIFIED and "depth" in got["deeper"].excerpt
    assert got["slow eval"].label is FailureLabel.EVAL_BUDGET_OVERRUN
    assert got["fake score"].label is FailureLabel.OK
    assert got["fake score"].score == baseline.score  # same seed, same checkpoint, same CORE
    assert got["peeks ahead"].label is FailureLabel.ILLEGAL, got["peeks ahead"].excerpt
    assert "probe causality" in got["peeks ahead"].excerpt and not got["peeks ahead"].is_kept
    assert got["triton"].label is FailureLabel.OK, got["triton"].excerpt
    client = MlflowClient(settings.tracking_uri)
    for trial in summary.trials:
        check_trial(client, client.get_run(trial.run_id), summary.campaign)


def test_campaign_from_the_cli_records_well_formed_trials(tmp_path):
    """`autoresearch run <env> --trials 3` with the offline specialists' technique tables."""
    env_dir = short_env(tmp_path)
    client, runs, _ = cli_campaign(env_dir, tmp_path, "--trials", "3")
    assert [int(r.data.tags[tags.TRIAL]) for r in runs] == [0, 1, 2, 3]
    labels = [check_trial(client, run, "autoresearch/nanochat_d12") for run in runs]
    assert labels[0] is FailureLabel.OK
    # The roster goes most promising table first (arch), and a specialist that keeps goes on.
    assert [r.data.tags[tags.SPECIALIST] for r in runs[1:]][0] == "arch"
    for run in runs[1:]:
        diff = client.download_artifacts(run.info.run_id, "trial/patch.diff")
        assert Path(diff).read_text().strip()
