"""The surface audit: what an edit touched by owner, in or out of its specialist's domain, the
spec keys that declare ownership, `audit: enforce`, and the knobs every trial logs as params."""

from __future__ import annotations

import pytest

from mlflow_autoresearch import tags
from mlflow_autoresearch.audit import audit, knob_values
from mlflow_autoresearch.campaign import Settings, run_campaign
from mlflow_autoresearch.environment import load_environment
from mlflow_autoresearch.errors import EnvironmentSpecError
from mlflow_autoresearch.records import FailureLabel
from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.testing import ScriptedAgent, replace_in
from support import edit_spec

RECIPE = "recipe/toy.py"
ROSTER = {
    "opt": {"owns": "step size and the training loop", "edits": [RECIPE], "knobs": ["LR"],
            "symbols": ["main"]},
    "sched": {"owns": "the training length", "edits": [RECIPE], "knobs": ["STEPS", "LR"]},
}


def _declared(toy_env, **spec):
    edit_spec(toy_env, specialists=ROSTER, **spec)
    return load_environment(str(toy_env))


def _edit(env, *changes):
    before = {RECIPE: (env.root / RECIPE).read_text()}
    after = dict(before)
    for old, new in changes:
        assert after[RECIPE].count(old) == 1, old
        after[RECIPE] = after[RECIPE].replace(old, new)
    return before, after


@pytest.mark.parametrize("changes, owner, touched, in_domain", [
    ([("LR = 0.1", "LR = 0.2")], "opt", "opt+sched: LR", "true"),
    ([("LR = 0.1", "LR = 0.2")], "sched", "opt+sched: LR", "true"),
    ([("STEPS = 60", "STEPS = 90")], "opt", "sched: STEPS", "false"),
    ([("STEPS = 60", "STEPS = 90"), ("w = rng.normal", "w = 0.5 * rng.normal")], "opt",
     "sched: STEPS; opt: main", "false"),
    ([("client.set_tag(run_id, \"autoresearch.trial\", \"999\")", "pass")], "opt",
     "unowned: tamper", "false"),
    ([("import time\n", "import time\nimport math\n")], "sched",
     f"unowned: {RECIPE} (module code)", "false"),
    ([("LR = 0.1  # step size", "LR = 0.1  # the step size")], "opt",
     f"unowned: {RECIPE} (module code)", "false"),
])
def test_an_edit_is_audited_against_the_declared_surfaces(toy_env, changes, owner, touched,
                                                          in_domain):
    env = _declared(toy_env)
    result = audit(env, owner, *_edit(env, *changes))
    assert (result.describe(), result.in_domain) == (touched, in_domain)


def test_without_declarations_the_audit_is_unknown_and_still_lists_what_changed(toy_env):
    env = load_environment(str(toy_env))
    result = audit(env, "opt", *_edit(env, ("LR = 0.1", "LR = 0.3"), ("STEPS = 60", "STEPS = 9")))
    assert result.in_domain == "unknown"
    assert result.describe() == "unowned: LR, STEPS"
    assert audit(env, "opt", *_edit(env)).describe() == ""  # the baseline touches nothing


@pytest.mark.parametrize("entry, message", [
    ({"knobs": ["NOPE"]}, "declares knobs ['NOPE'], which are no top-level `NAME = ...`"),
    ({"symbols": ["LR"]}, "declares symbols ['LR'], which are no top-level def or class"),
    ({"files": ["recipe/other.py"]}, "declares files ['recipe/other.py'] it does not edit"),
    ({"knobs": "LR"}, "'knobs' must be a list of names"),
])
def test_a_broken_declaration_is_one_clear_error(toy_env, entry, message):
    edit_spec(toy_env, specialists={"opt": {"owns": "x", "edits": [RECIPE], **entry}})
    with pytest.raises(EnvironmentSpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_environment(str(toy_env))


def test_an_unknown_audit_mode_is_refused(toy_env):
    edit_spec(toy_env, audit="strict")
    with pytest.raises(EnvironmentSpecError, match="'audit' must be one of"):
        load_environment(str(toy_env))


def test_knob_values_are_the_profiles_entries():
    files = {"r.py": 'A = 3  # x\nB = {"tiny": 1, "real": 8}\nC = tuple(range(2))\nlow = 4\n'
                     'def f():\n    D = 5\n'}
    assert knob_values(files, "real") == {"A": "3", "B": "8"}


def _campaign(toy_env, tmp_path, store, script, **spec):
    edit_spec(toy_env, specialists=ROSTER, **spec)
    agents = {"opt": ScriptedAgent("opt", script)}
    settings = Settings(str(toy_env), trials=len(script), tracking_uri=store,
                        workdir=tmp_path / "work", sandbox="off")
    summary = run_campaign(settings, agents=agents, echo=lambda line: None)
    mlflow = MlflowStore(store)
    return mlflow, [mlflow.raw(t.run_id) for t in summary.trials]


SCRIPT = [("a smaller step", replace_in(RECIPE, "LR = 0.1", "LR = 0.08")),
          ("fewer steps", replace_in(RECIPE, "STEPS = 60", "STEPS = 50"))]


def test_every_trial_carries_its_audit_and_its_knobs_as_params(toy_env, tmp_path, store):
    mlflow, runs = _campaign(toy_env, tmp_path, store, list(SCRIPT))
    baseline, inside, outside = runs
    assert baseline.tags[tags.AUDIT_IN_DOMAIN] == "true"
    assert baseline.tags[tags.AUDIT_TOUCHED] == ""
    assert (inside.tags[tags.AUDIT_TOUCHED], inside.tags[tags.AUDIT_IN_DOMAIN]) == \
        ("opt+sched: LR", "true")
    assert (outside.tags[tags.AUDIT_TOUCHED], outside.tags[tags.AUDIT_IN_DOMAIN]) == \
        ("sched: STEPS", "false")
    assert outside.tags[tags.LABEL] == "ok"  # recorded, not blocked
    env = load_environment(str(toy_env))
    for run in runs:
        recipe = mlflow.load_recipe(run.run_id, env.editable)
        assert run.params == knob_values(recipe, env.profile)
        assert run.metrics[tags.KEPT_METRIC] in (0.0, 1.0)
    assert inside.params["LR"] == "0.08" and outside.params["STEPS"] == "50"


def test_enforce_turns_an_out_of_domain_edit_into_a_preflight_crash(toy_env, tmp_path, store):
    _, runs = _campaign(toy_env, tmp_path, store, list(SCRIPT), audit="enforce")
    _, inside, outside = runs
    assert inside.tags[tags.LABEL] == "ok"
    assert outside.tags[tags.LABEL] == FailureLabel.PREFLIGHT_CRASH.tag
    assert outside.tags[tags.EXCERPT].startswith("out of domain: opt may change only its own")
    assert "sched: STEPS" in outside.tags[tags.EXCERPT]
    assert outside.tags[tags.AUDIT_IN_DOMAIN] == "false"
    assert outside.params["STEPS"] == "60"  # the recipe that ran: the parent's, unchanged
