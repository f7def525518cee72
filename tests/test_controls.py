"""The paper's controls as flags of a campaign: no lineage, one generalist, generic copies of it.
Each changes exactly what a specialist sees (trial/context.md) and tags the campaign and every
trial."""

from __future__ import annotations

import dataclasses

import pytest

from mlflow_autoresearch import tags
from mlflow_autoresearch.campaign import Settings, run_campaign
from mlflow_autoresearch.errors import AutoresearchError
from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.testing import ScriptedAgent, replace_in

RECIPE = "recipe/toy.py"


def _context(store: MlflowStore, trial) -> str:
    return store.read_text(trial.run_id, tags.CONTEXT)


def _script(n: int) -> list:
    """Edits that leave the score as it is: every one is discarded, the baseline stays best."""
    return [(f"pause {i + 1} centiseconds first", replace_in(RECIPE, "SLEEP = 0.0",
                                                            f"SLEEP = 0.0{i + 1}"))
            for i in range(n)]


@pytest.mark.parametrize("lineage", ["on", "off"])
def test_lineage_off_shows_the_best_and_no_history(toy_env, store, tmp_path, lineage):
    settings = Settings(str(toy_env), trials=3, tracking_uri=store, workdir=tmp_path / "work",
                        lineage=lineage)
    summary = run_campaign(settings, {"opt": ScriptedAgent("opt", _script(3))},
                           echo=lambda line: None)
    s = MlflowStore(store)
    context = _context(s, summary.trials[-1])
    baseline = summary.trials[0]
    earlier = [t.hypothesis for t in summary.trials[1:-1]]
    assert "Current best: t0000" in context
    if lineage == "off":
        assert "Lineage is off" in context and baseline.run_id in context
        assert not any(h in context for h in earlier), context
        assert "## Leaderboard" not in context and "## Recent activity" not in context
    else:
        assert all(h in context for h in earlier), context
    for trial in summary.trials:
        raw = s.raw(trial.run_id).tags
        assert raw[tags.CONTROL_LINEAGE] == lineage
        assert raw[tags.CONTROL_ROSTER] == "specialists"


def test_rosters_single_and_generic_replace_the_specialists(toy_env, store, tmp_path):
    """The generalists draw from every specialist's techniques (the offline roster)."""
    for roster, names in (("single", ["generalist"]),
                          ("generic", ["generalist1", "generalist2"])):
        settings = Settings(str(toy_env), trials=2, tracking_uri=store, roster=roster,
                            workdir=tmp_path / roster, experiment=f"toy-{roster}")
        summary = run_campaign(settings, echo=lambda line: None)
        s = MlflowStore(store)
        turns = [t.specialist for t in summary.trials[1:]]
        assert turns[0] == names[0] and set(turns) <= set(names), turns  # turns by payoff
        for trial in summary.trials:
            assert s.raw(trial.run_id).tags[tags.CONTROL_ROSTER] == roster
        assert "# Lineage for `generalist" in _context(s, summary.trials[-1])
        experiment = s.client.get_experiment_by_name(f"toy-{roster}")
        assert experiment.tags[tags.CONTROL_ROSTER] == roster
        assert experiment.tags[tags.CONTROL_LINEAGE] == "on"


def test_a_campaign_keeps_the_controls_it_started_with(toy_env, store, tmp_path):
    settings = Settings(str(toy_env), trials=0, tracking_uri=store, workdir=tmp_path / "work",
                        lineage="off")
    run_campaign(settings, {"opt": ScriptedAgent("opt", [])}, echo=lambda line: None)
    with pytest.raises(AutoresearchError, match="ran with --lineage off, not --lineage on: continue it"):
        run_campaign(dataclasses.replace(settings, lineage="on", trials=1),
                     {"opt": ScriptedAgent("opt", [])}, echo=lambda line: None)
