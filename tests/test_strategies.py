"""Search strategies: random and Optuna TPE propose ordinary trials inside the declared space, and
Optuna's study is rebuilt from the campaign's MLflow runs when a loop resumes."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
import yaml
from click.testing import CliRunner

from mlflow_autoresearch import tags
from mlflow_autoresearch.agents.strategies import load_search_space, strategy_roster
from mlflow_autoresearch.agents.strategies.space import knob_values
from mlflow_autoresearch.campaign import Settings, run_campaign
from mlflow_autoresearch.cli import main
from mlflow_autoresearch.environment import load_environment
from mlflow_autoresearch.errors import EnvironmentSpecError
from mlflow_autoresearch.records import FailureLabel, Trial
from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.testing import check_trial_contract

KNOBS = ["STEPS", "LR"]


def _recorded(store: MlflowStore, env, trial) -> dict:
    return knob_values(store.load_recipe(trial.run_id, env.editable), env, KNOBS)


@pytest.mark.parametrize("strategy", ["random", "optuna"])
def test_a_strategy_proposes_ordinary_trials_inside_its_space(strategy, toy_env, store, tmp_path):
    env = load_environment(str(toy_env))
    space = {k.name: k for k in load_search_space(env)}
    settings = Settings(str(toy_env), trials=4, tracking_uri=store, workdir=tmp_path / "work",
                        strategy=strategy, seed=3)
    summary = run_campaign(settings, echo=lambda line: None)
    s = MlflowStore(store)
    baseline, *proposed = summary.trials
    assert len(proposed) == 4
    for trial in summary.trials:
        check_trial_contract(s, trial.run_id, "toy")
        assert s.raw(trial.run_id).tags[tags.STRATEGY] == strategy
    for trial in proposed:
        assert trial.specialist == strategy and trial.parent_id == baseline.run_id
        values = _recorded(s, env, trial)
        assert all(space[k].contains(v) for k, v in values.items()), values
        assert values != {"STEPS": 60, "LR": 0.1}
    assert s.direction(summary.experiment_id).value == "minimize"


def test_optuna_resumes_from_mlflow_with_the_same_study_history(toy_env, store, tmp_path):
    env = load_environment(str(toy_env))
    settings = Settings(str(toy_env), trials=3, tracking_uri=store, workdir=tmp_path / "work",
                        strategy="optuna")
    first = strategy_roster(env, "optuna", 0)
    run_campaign(settings, first, echo=lambda line: None)
    told = [(t.params, t.state, t.value) for t in first["optuna"].study.trials]
    assert len(told) == 3 and all(state.is_finished() for _, state, _ in told)

    again = strategy_roster(env, "optuna", 0)  # a new loop process: no Optuna database
    summary = run_campaign(dataclasses.replace(settings, trials=5), again, echo=lambda line: None)
    rebuilt = again["optuna"].study.trials
    assert [t.number for t in summary.trials] == [4, 5]
    s = MlflowStore(store)
    for (params, state, value), trial in zip(told, rebuilt[:3]):
        assert trial.state == state and trial.value == value
        assert trial.params == pytest.approx(params, rel=1e-3)
    # The same seed draws trial 1's point again first: told its score, never run twice.
    for recorded in summary.trials:
        values = _recorded(s, env, recorded)
        assert any(t.params == pytest.approx(values, rel=1e-3) for t in rebuilt[3:])
    shas = [t.diff_sha for t in s.trials(summary.experiment_id)]
    assert len(shas) == len(set(shas))


def test_optuna_tells_failures_as_failed_and_withdraws_harness_faults(toy_env):
    env = load_environment(str(toy_env))
    agent = strategy_roster(env, "optuna", 0)["optuna"]
    agent.study = optuna.create_study()
    asked = agent.study.ask(agent.distributions)
    agent.pending["sha"] = asked
    trial = _trial(FailureLabel.HARNESS_ABORT)
    agent.tell(trial)
    assert "sha" in agent.pending  # the retry of the same diff is told instead
    agent.tell(dataclasses.replace(trial, label=FailureLabel.DISQUALIFIED))
    assert agent.study.trials[0].state is optuna.trial.TrialState.FAIL and not agent.pending


def _trial(label: FailureLabel) -> Trial:
    return Trial("run", 1, "optuna", "h", "base", "FINISHED", label, diff_sha="sha")


@pytest.mark.parametrize("space, problem", [
    (None, "declares no search_space"),
    ({"STEPS": {"type": "int", "low": 100, "high": 200}}, "STEPS = 60 in the recipe lies outside"),
    ({"LR": {"type": "float", "low": 0, "high": 1, "log": True}}, "low > 0 on a log scale"),
    ({"NOPE": {"type": "int", "low": 0, "high": 2}}, "NOPE is not a top-level constant"),
    ({"LR": {"type": "complex"}}, "'type' must be one of"),
])
def test_a_broken_search_space_is_one_line_naming_the_knob(toy_env, space, problem):
    path = toy_env / "techniques.yaml"
    table = yaml.safe_load(path.read_text())
    table.pop("search_space")
    if space is not None:
        table["search_space"] = space
    path.write_text(yaml.safe_dump(table))
    with pytest.raises(EnvironmentSpecError, match=problem):
        load_search_space(load_environment(str(toy_env)))


def test_a_strategy_cannot_be_mixed_with_a_roster_control(toy_env, store, tmp_path):
    result = CliRunner().invoke(main, ["run", str(toy_env), "--strategy", "random", "--roster",
                                       "single", "--tracking-uri", store])
    assert result.exit_code == 2 and "without --specialists, --roster and --lineage" in result.output


@pytest.mark.parametrize("environment", ["airbench96", "parameter_golf", "nanochat_d12"])
@pytest.mark.parametrize("profile", ["tiny", "search"])
def test_the_shipped_search_spaces_hold_their_recipes(environment, profile):
    knobs = load_search_space(load_environment(environment, profile))
    assert len(knobs) >= 4 and all(k.kind in ("float", "int", "categorical") for k in knobs)
