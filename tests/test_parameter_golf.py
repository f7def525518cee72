"""Parameter Golf on the tiny profile: the real recipe, evaluator, probes, loop, store and CLI.

Loop tests run a copy whose recipe trains 30 steps instead of 200 (seconds, not half a minute);
`test_mlflow_run_of_the_project_logs_its_evaluation` runs the recipe as shipped. Probe tests that
need no retraining score one shared 30-step artifact against edited copies of the workspace.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_autoresearch import tags
from mlflow_autoresearch.campaign import Settings, run_campaign
from mlflow_autoresearch.environment import load_environment
from mlflow_autoresearch.execution.projects import SeedResult, write_harness_file
from mlflow_autoresearch.records import FailureLabel
from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.testing import ScriptedAgent, check_trial_contract, replace_in
from support import ROOT, cli_campaign, copy_env, mlflow_run_project



ENV = ROOT / "projects" / "parameter_golf"
EVALUATOR = ROOT / "evaluators" / "parameter_golf.py"
RECIPE = "recipe/train_gpt.py"
SHIPPED_STEPS = 'ITERATIONS = {"tiny": 200,'
SHORT_STEPS = 'ITERATIONS = {"tiny": 30,'
STREAM_LOOP = ("        yield from score_targets(model, stream, first, last, hp)\n"
               "        if ttt:\n"
               "            adapt(model, stream[first - 1:last], hp)\n")


def short_env(tmp_path: Path, **budgets) -> Path:
    """A copy of the environment whose recipe trains 30 steps, with budgets overridden.

    A barely trained model compresses worse than the shipped baseline, so the byte cap is raised.
    """
    spec = {"train_seconds": 40, "eval_seconds": 40, "artifact_bytes": 215000, **budgets}
    env_dir = copy_env(ENV, tmp_path / "envs", ROOT / "evaluators", budgets=spec)
    recipe = env_dir / RECIPE
    recipe.write_text(recipe.read_text().replace(SHIPPED_STEPS, SHORT_STEPS))
    return env_dir


def check_trial(client: MlflowClient, run, experiment: str) -> FailureLabel:
    """The trial contract (shipped in the package), plus what this evaluator measures."""
    label = check_trial_contract(MlflowStore(client.tracking_uri), run.info.run_id, "parameter_golf",
                                 experiment)
    if label in (FailureLabel.OK, FailureLabel.SIZE_BLOCKED):
        m = client.get_run(run.info.run_id).data.metrics
        assert m["artifact_bytes"] > m["code_bytes"] > 0
    return label


def test_mlflow_run_of_the_project_logs_its_evaluation(tmp_path):
    """`mlflow run projects/parameter_golf -P profile=tiny`: the shipped baseline within budgets."""
    client, run = mlflow_run_project(ENV, tmp_path)
    m = run.data.metrics
    assert run.data.tags[tags.LABEL] == "ok", run.data.tags.get(tags.EXCERPT)
    assert m["score"] == pytest.approx(m["val_bpb"], abs=1e-5) and 1.8 < m["score"] < 3.2
    assert m["train_seconds"] < 40 and m["eval_seconds"] < 40
    assert m["artifact_bytes"] <= 180000 and m["n_val_tokens"] == 32768
    assert run.data.tags["mlflow.project.entryPoint"] == "main"


def test_loop_labels_each_training_failure(tmp_path):
    env_dir = short_env(tmp_path, train_seconds=20)
    knobs = 'MLP_MULT = 2  # MLP hidden width = MLP_MULT * MODEL_DIM'
    main = "    args = parse_args(argv)\n"
    script = [
        ("inflate", replace_in(RECIPE, knobs, knobs.replace("= 2", "= 4"))),
        ("hang", replace_in(RECIPE, knobs, knobs + "\nimport time; time.sleep(3600)")),
        ("crash", replace_in(RECIPE, "        loss_value = loss.item()\n",
                             "        loss_value = loss.item() / 0 if step == 3 else loss.item()\n")),
        ("reads validation", replace_in(RECIPE, main, main + "    (args.data_dir.parent / "
                                        "'private' / 'fineweb_val_000000.bin').read_bytes()\n")),
        ("fake score", replace_in(RECIPE, main, main + "    print('val_bpb: 0.0001')\n")),
        ("peeks ahead", replace_in(RECIPE, "is_causal=True", "is_causal=False")),
    ]
    settings = Settings(str(env_dir), "tiny", trials=len(script),
                        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                        workdir=tmp_path / "work", confirm_seeds=0)  # labels under test
    summary = run_campaign(settings, {"arch": ScriptedAgent("arch", script)}, echo=lambda line: None)
    got = {t.hypothesis: t for t in summary.trials}
    baseline = summary.trials[0]
    assert baseline.label is FailureLabel.OK, baseline.excerpt
    assert got["inflate"].label is FailureLabel.SIZE_BLOCKED, got["inflate"].excerpt
    assert "cap" in got["inflate"].excerpt
    assert got["hang"].label is FailureLabel.TRAIN_BUDGET_OVERRUN
    assert got["crash"].label is FailureLabel.CRASH
    assert "ZeroDivisionError" in got["crash"].excerpt and RECIPE in got["crash"].excerpt
    assert got["reads validation"].label is FailureLabel.ILLEGAL
    assert "data-isolation" in got["reads validation"].excerpt
    assert got["fake score"].label is FailureLabel.OK
    assert got["fake score"].score == baseline.score  # same seed, same artifact, same bpb
    assert got["peeks ahead"].label is FailureLabel.ILLEGAL, got["peeks ahead"].excerpt
    assert "probe causality" in got["peeks ahead"].excerpt and not got["peeks ahead"].is_kept
    client = MlflowClient(settings.tracking_uri)
    for trial in summary.trials:
        check_trial(client, client.get_run(trial.run_id), summary.campaign)


def test_campaign_from_the_cli_records_well_formed_trials(tmp_path):
    """`autoresearch run <env> --trials 3` with the offline specialists' technique tables."""
    env_dir = short_env(tmp_path)
    client, runs, _ = cli_campaign(env_dir, tmp_path, "--trials", "3")
    assert [int(r.data.tags[tags.TRIAL]) for r in runs] == [0, 1, 2, 3]
    labels = [check_trial(client, run, "autoresearch/parameter_golf") for run in runs]
    assert labels[0] is FailureLabel.OK
    # The roster goes most promising table first (curr: 1.5x tokens per step), and a specialist
    # that keeps goes on (agents/turns.py).
    assert [r.data.tags[tags.SPECIALIST] for r in runs[1:]][0] == "curr"
    for run in runs[1:]:
        diff = client.download_artifacts(run.info.run_id, "trial/patch.diff")
        assert Path(diff).read_text().strip()


# -------------------------------------------------------------------------------------------------
# Evaluator probes on one shared artifact
# -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Prepared tiny data and one 30-step artifact trained by the real launcher and recipe."""
    root = tmp_path_factory.mktemp("pg")
    data = root / "data"
    subprocess.run([sys.executable, str(EVALUATOR), "prepare", "--profile", "tiny",
                    "--data-dir", str(data)], check=True, timeout=120)
    workspace = root / "workspace"
    shutil.copytree(ENV, workspace, ignore=shutil.ignore_patterns("__pycache__"))
    recipe = workspace / RECIPE
    recipe.write_text(recipe.read_text().replace(SHIPPED_STEPS, SHORT_STEPS))
    out = root / "out"
    subprocess.run([sys.executable, "harness/launch.py", "--nproc", "1", RECIPE, "--profile",
                    "tiny", "--seed", "0", "--data-dir", str(data / "public"), "--out-dir",
                    str(out)], cwd=workspace, check=True, timeout=120, capture_output=True)
    return data, workspace, out


def score_edit(tmp_path: Path, trained, old: str = "", new: str = "",
               eval_seconds: float = 40) -> dict:
    """Score the shared artifact with the recipe edited (old -> new); returns outcome.json."""
    data, workspace, out = trained
    run_dir = tmp_path / "run"
    shutil.copytree(workspace, run_dir / "workspace")
    if old:
        recipe = run_dir / "workspace" / RECIPE
        text = recipe.read_text()
        assert text.count(old) == 1, old
        recipe.write_text(text.replace(old, new))
    seed_dir = run_dir / "seeds" / "0"
    shutil.copytree(out, seed_dir / "out")
    for name in ("stdout.txt", "stderr.txt"):
        (seed_dir / name).write_text("")
    # The harness's own writer, as the runner calls it after the seeds ran.
    env = load_environment(str(short_env(tmp_path, eval_seconds=eval_seconds)), "tiny")
    write_harness_file(env, run_dir, run_dir / "workspace", [SeedResult(
        0, 5.0, 0, False, "seeds/0/out", "seeds/0/stdout.txt", "seeds/0/stderr.txt")])
    outcome = run_dir / "outcome.json"
    subprocess.run([sys.executable, str(EVALUATOR), "score", "--profile", "tiny", "--data-dir",
                    str(data), "--run-dir", str(run_dir), "--out", str(outcome)],
                   check=True, timeout=120)
    return json.loads(outcome.read_text())


def test_honest_artifact_passes_every_probe_and_ignores_result_json(tmp_path, trained):
    (trained[2] / "result.json").write_text(json.dumps({"val_bpb": 0.0001}))
    outcome = score_edit(tmp_path, trained)
    assert outcome["label"] == "ok", outcome["excerpt"]
    assert outcome["score"] == pytest.approx(outcome["metrics"]["val_bpb"], abs=1e-5)
    assert outcome["score"] > 2.0


def test_a_model_that_peeks_at_later_tokens_is_illegal(tmp_path, trained):
    outcome = score_edit(tmp_path, trained, "is_causal=True", "is_causal=False")
    assert outcome["label"] == "illegal" and "probe causality" in outcome["excerpt"]


def test_ttt_that_adapts_before_scoring_is_illegal(tmp_path, trained):
    swapped = ("        if ttt:\n            adapt(model, stream[first - 1:last], hp)\n"
               "        yield from score_targets(model, stream, first, last, hp)\n")
    outcome = score_edit(tmp_path, trained, STREAM_LOOP, swapped)
    assert outcome["label"] == "illegal", outcome["excerpt"]
    assert "probe score-before-update" in outcome["excerpt"]


def test_unnormalized_distributions_are_illegal(tmp_path, trained):
    boosted = STREAM_LOOP.replace(
        "        yield from score_targets(model, stream, first, last, hp)\n",
        "        for start, rows in score_targets(model, stream, first, last, hp):\n"
        "            yield start, rows + 0.5\n")
    outcome = score_edit(tmp_path, trained, STREAM_LOOP, boosted)
    assert outcome["label"] == "illegal" and "probe normalization" in outcome["excerpt"]


def test_slow_scoring_overruns_the_eval_budget(tmp_path, trained):
    outcome = score_edit(tmp_path, trained, STREAM_LOOP,
                         "        time.sleep(3600)\n" + STREAM_LOOP, eval_seconds=12)
    assert outcome["label"] == "eval_budget_overrun"
    assert outcome["metrics"]["artifact_bytes"] > 0
