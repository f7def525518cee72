"""`min_delta: auto`: the keep margin measured from repeats of the baseline, recorded with its
source; `autoresearch noise` measures it without a campaign."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from click.testing import CliRunner

from mlflow_autoresearch import tags
from mlflow_autoresearch.campaign import Settings, run_campaign
from mlflow_autoresearch.cli import main
from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.testing import ScriptedAgent, replace_in

RECIPE = "recipe/toy.py"
# Unseeded noise on the predictions: every run of the same recipe scores differently.
NOISY = ('    preds = np.load(Path(args.data_dir) / "test_x.npy") @ w\n',
         '    preds = np.load(Path(args.data_dir) / "test_x.npy") @ w\n'
         '    preds += np.random.default_rng().normal(scale=0.1, size=preds.shape)\n')


@pytest.fixture
def noisy_env(toy_env):
    recipe = toy_env / RECIPE
    recipe.write_text(recipe.read_text().replace(*NOISY))
    spec = yaml.safe_load((toy_env / "autoresearch.yaml").read_text())
    spec.update(min_delta="auto", noise_repeats=3, seeds=[0])
    (toy_env / "autoresearch.yaml").write_text(yaml.safe_dump(spec))
    return toy_env


def test_auto_measures_the_margin_once_and_records_its_source(noisy_env, store, tmp_path):
    steps = replace_in(RECIPE, "STEPS = 60", "STEPS = 70")
    settings = Settings(str(noisy_env), trials=1, tracking_uri=store, workdir=tmp_path / "work")
    lines: list[str] = []
    summary = run_campaign(settings, {"opt": ScriptedAgent("opt", [("steps", steps)])},
                           echo=lines.append)
    s = MlflowStore(store)
    baseline = s.raw(summary.trials[0].run_id).metrics
    assert baseline[tags.NOISE_REPEATS] == 3 and baseline[tags.SCORE_STD] > 0
    margin, source = s.keep_margin(summary.experiment_id)
    assert source == "measured" and margin == pytest.approx(2 * baseline[tags.SCORE_STD], rel=1e-5)
    context = s.read_text(summary.trials[1].run_id, tags.CONTEXT)
    assert f"more than {margin:.4g} (measured from repeats of the baseline)" in context
    assert sum("measuring the noise" in line for line in lines) == 2
    again: list[str] = []
    lr = replace_in(RECIPE, "LR = 0.1", "LR = 0.11")  # applies whichever trial is the best
    run_campaign(dataclasses.replace(settings, trials=2),
                 {"opt": ScriptedAgent("opt", [("lr", lr)])}, echo=again.append)
    assert not any("measuring the noise" in line for line in again)  # measured once
    assert s.keep_margin(summary.experiment_id) == (margin, "measured")


def test_a_number_in_the_spec_is_the_margin_with_source_spec(toy_env, store, tmp_path):
    settings = Settings(str(toy_env), trials=0, tracking_uri=store, workdir=tmp_path / "work")
    summary = run_campaign(settings, {"opt": ScriptedAgent("opt", [])}, echo=lambda line: None)
    assert MlflowStore(store).keep_margin(summary.experiment_id) == (0.0001, "spec")


def test_noise_command_prints_the_margin_without_a_campaign(noisy_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = yaml.safe_load((noisy_env / "autoresearch.yaml").read_text())
    (noisy_env / "autoresearch.yaml").write_text(yaml.safe_dump({**spec, "confirm_seeds": [7]}))
    result = CliRunner().invoke(main, ["noise", str(noisy_env), "--repeats", "2"])
    assert result.exit_code == 0, result.output
    assert "std" in result.output and "keep margin 2 x std" in result.output
    assert "(the spec's min_delta: auto)" in result.output
    store = MlflowStore(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [name for _, name in store.campaigns()] == []
    evaluations = store.trials(store.client.get_experiment_by_name(
        "autoresearch/toy/evaluations").experiment_id)
    assert len(evaluations) == 2 and all(t.confirm == "" for t in evaluations)  # search seeds
