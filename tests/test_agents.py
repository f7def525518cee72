"""The offline specialist: real edits from the technique table, shaped by lineage."""

import dataclasses
import random

import pytest

from mlflow_autoresearch.agents import AgentContext, OfflineAgent, offline_roster
from mlflow_autoresearch.agents.knob_model import KnobModel, declared_space, owned_knobs
from mlflow_autoresearch.agents.offline import ranked
from mlflow_autoresearch.agents.strategies.space import set_knobs
from mlflow_autoresearch.agents.turns import choose_turn
from mlflow_autoresearch.agents.techniques import Technique, apply_technique
from mlflow_autoresearch.diffs import diff_sha
from mlflow_autoresearch.environment import load_environment
from mlflow_autoresearch.errors import ProposalError
from mlflow_autoresearch.lineage import LineageView
from mlflow_autoresearch.records import Decision, Direction, FailureLabel, Trial
from mlflow_autoresearch.execution.workspace import read_editable

SRC = 'EPOCHS = {"tiny": 8, "real": 45}  # epochs\nLR = 9.0  # peak lr\nTTA = True\n'


def test_relative_and_literal_changes_keep_the_line_shape():
    files = {"r.py": SRC}
    t = Technique("t", {"EPOCHS": "-1", "LR": "*1.15", "TTA": False}, "h", -0.1)
    out, notes = apply_technique(files, ("r.py",), t, "tiny")
    assert out["r.py"] == ('EPOCHS = {"tiny": 7, "real": 45}  # epochs\nLR = 10.35  # peak lr\n'
                           'TTA = False\n')
    assert notes == ["EPOCHS 8->7", "LR 9.0->10.35", "TTA True->False"]
    with pytest.raises(KeyError, match="MISSING"):
        apply_technique(files, ("r.py",), Technique("t", {"MISSING": 1}, "h", 0.0), "tiny")


def trial(n, run_id, label="ok", parent=None, decision=None, spec="opt", sha=""):
    lab = FailureLabel.from_tag(label)
    return Trial(run_id, n, spec, "h", parent, "FINISHED", lab,
                 1.0 if lab is FailureLabel.OK else None, decision, diff_sha=sha)


@pytest.fixture
def env(toy_env):
    return load_environment(str(toy_env))


def _ctx(env, view, recipes, children=(), number=1, spec="sched"):
    return AgentContext(env, env.specialist(spec), number, view, "", lambda rid: recipes[rid],
                        lambda rid: [c for c in children if c.parent_id == rid])


def test_offline_agent_edits_the_parent_and_skips_edits_tried_on_it(env):
    base = trial(0, "r0", decision=Decision.BASELINE, spec="baseline")
    view = LineageView(base, (base,), (base,), (), (), ())
    recipes = {"r0": read_editable(env, env.root)}
    agent = dataclasses.replace(offline_roster(env, seed=0)["sched"], model=None)
    first = agent.ask(_ctx(env, view, recipes))
    assert first.parent_id == "r0" and "STEPS" in first.diff
    tried = trial(1, "r1", parent="r0", sha=diff_sha(first.diff))
    second = agent.ask(_ctx(env, view, recipes, [tried]))
    assert diff_sha(second.diff) != diff_sha(first.diff)
    both = [tried, trial(2, "r2", parent="r0", sha=diff_sha(second.diff))]
    with pytest.raises(ProposalError, match="is exhausted"):
        agent.ask(_ctx(env, view, recipes, both))


def test_offline_agent_is_deterministic_per_seed_and_seeds_differ(env):
    base = trial(0, "r0", decision=Decision.BASELINE, spec="baseline")
    view = LineageView(base, (base,), (base,), (), (), ())
    recipes = {"r0": read_editable(env, env.root)}
    techniques = [Technique(f"t{i}", {"STEPS": f"+{i}"}, f"{i} more steps", -0.01)
                  for i in range(1, 9)]

    def first_choice(seed):
        return OfflineAgent("opt", techniques, seed=seed).ask(_ctx(env, view, recipes, spec="opt")).diff

    assert first_choice(7) == first_choice(7)
    assert len({first_choice(seed) for seed in range(6)}) > 1  # the seed changes the draw


@pytest.mark.parametrize("label, effect", [("train_budget_overrun", "cost"),
                                           ("disqualified", "quality")])
def test_offline_agent_compensates_its_last_failure(env, label, effect):
    base = trial(0, "r0", decision=Decision.BASELINE, spec="baseline")
    failed = dataclasses.replace(trial(1, "r1", label=label, parent="r0", spec="sched"),
                                 notes="offline technique 'hot'")
    view = LineageView(base, (base,), (base,), (failed,), (failed,), (failed,))
    recipe = read_editable(env, env.root)
    failed_recipe = {k: v.replace("LR = 0.1", "LR = 0.3") for k, v in recipe.items()}
    techniques = [Technique("cheap", {"STEPS": "-20"}, "Fewer steps", 0.1, "down", "down"),
                  Technique("better", {"STEPS": "*2"}, "More steps", -0.1, "up", "up"),
                  Technique("hot", {"LR": 0.3}, "A hot LR", -0.1, "up", "down")]
    proposal = OfflineAgent("sched", techniques).ask(
        _ctx(env, view, {"r0": recipe, "r1": failed_recipe}))
    assert proposal.parent_id == "r0"
    assert "LR = 0.3" in proposal.diff  # the failed edit is kept ...
    assert ("STEPS = 40" if effect == "cost" else "STEPS = 120") in proposal.diff  # ... and fixed
    assert "t0001" in proposal.hypothesis and "builds on failed trial" in proposal.notes


def test_techniques_are_tried_by_prior_until_measured_and_failures_go_last(env):
    table = [Technique("small", {"STEPS": "+1"}, "h", -0.01),
             Technique("big", {"STEPS": "+2"}, "h", -0.5),
             Technique("harmful", {"STEPS": "+3"}, "h", 0.2),
             Technique("crashy", {"STEPS": "+4"}, "h", -0.9)]

    def order(deltas, direction=Direction.MINIMIZE):
        return [t.name for t in ranked(table, deltas, direction, random.Random(0))]

    assert order({}) == ["crashy", "big", "small", "harmful"]  # the prior alone
    assert order({}, Direction.MAXIMIZE) == ["harmful", "small", "big", "crashy"]
    # measured: "crashy" failed, "small" was kept on another branch with a large gain
    assert order({"crashy": None, "small": -0.7}) == ["small", "big", "harmful", "crashy"]


def test_a_kept_technique_is_what_the_specialist_tries_first_on_the_new_best(env):
    """A constructed lineage: the technique kept as t1 ranks first; the one that failed last."""
    base = trial(0, "r0", decision=Decision.BASELINE, spec="baseline")
    kept = dataclasses.replace(trial(1, "r1", parent="r0", decision=Decision.KEEP, spec="opt"),
                               notes="offline technique 'lr_down'", delta_vs_best=-0.002)
    failed = dataclasses.replace(trial(2, "r2", label="crash", parent="r1", spec="opt"),
                                 notes="offline technique 'lr_up'")
    view = LineageView(base, (kept, base), (base, kept), (failed,), (failed, kept), (failed, kept))
    recipe = read_editable(env, env.root)
    recipes = {"r0": recipe, "r1": {k: v.replace("LR = 0.1", "LR = 0.05") for k, v in recipe.items()}}
    proposal = offline_roster(env, seed=0)["opt"].ask(_ctx(env, view, recipes, spec="opt"))
    assert proposal.parent_id == "r1" and "lr_down" in proposal.notes
    assert "LR = 0.025" in proposal.diff


def test_turns_go_to_the_specialist_whose_trials_pay_with_a_floor():
    def t(n, spec, decision=Decision.DISCARD):
        return Trial(f"r{n}", n, spec, "h", "r0", "FINISHED", FailureLabel.OK, 1.0, decision)

    names = ["a", "b", "c"]
    assert choose_turn(names, [])[0] == "a"  # nobody has had a turn: the first in the roster
    name, why = choose_turn(names, [t(2, "b"), t(1, "a")])
    assert name == "c" and why.startswith("not tried yet")  # a and b kept nothing
    # a kept on its first trial: it goes on before b and c are tried
    assert choose_turn(names, [t(1, "a", Decision.KEEP)])[0] == "a"
    # ... until b and c have waited twice the roster since the campaign began
    keeps = [t(n, "a", Decision.KEEP) for n in range(6, 0, -1)]
    assert choose_turn(names, keeps) == ("b", "the floor: no turn in the 6 trials so far")
    # a kept twice in its last three, b and c never: a gets the turn while no one is starved
    recent = [t(6, "a", Decision.KEEP), t(5, "c"), t(4, "b"), t(3, "a", Decision.KEEP),
              t(2, "a")]
    name, why = choose_turn(names, recent)
    assert name == "a" and "2 keep(s) in its last 3 trials" in why
    # b has waited six trials (twice the roster): the floor gives it the turn
    recent = [t(9, "a", Decision.KEEP), t(8, "c"), t(7, "a", Decision.KEEP), t(6, "c"),
              t(5, "a", Decision.KEEP), t(4, "c"), t(3, "b")]
    assert choose_turn(names, recent) == ("b", "the floor: no turn in the last 6 trials")


def test_a_kept_trial_that_cannot_win_is_never_a_parent(env):
    """Best 1.0; a keep at 1.00005 is within the margin (1e-4); one at 1.5 and the baseline
    at 2.0 are not."""
    base = dataclasses.replace(trial(0, "r0", decision=Decision.BASELINE, spec="baseline"),
                               score=2.0)
    far = dataclasses.replace(trial(1, "r1", parent="r0", decision=Decision.KEEP), score=1.5)
    near = dataclasses.replace(trial(2, "r2", parent="r0", decision=Decision.KEEP),
                               score=1.00005)
    best = dataclasses.replace(trial(3, "r3", parent="r0", decision=Decision.KEEP), score=1.0)
    view = LineageView(base, (best, near, far, base), (base, best), (), (), ())
    recipe = read_editable(env, env.root)
    recipes = {r: recipe for r in ("r0", "r1", "r2", "r3")}
    agent = offline_roster(env, seed=0)["sched"]
    parents = {agent.ask(_ctx(env, view, recipes, number=n)).parent_id for n in range(1, 40)}
    assert parents == {"r3", "r2"}


# -------------------------------------------------------------------------------------------------
# The rules a specialist's turn goes through, on a constructed lineage (minimize, margin 0.01)
# -------------------------------------------------------------------------------------------------

RULE_TABLE = [Technique("lr_up", {"LR": "*1.2"}, "a higher LR", -0.01),
              Technique("steps_up", {"STEPS": "+10"}, "more steps", -0.005),
              Technique("lr_down", {"LR": "*0.5"}, "a lower LR", 0.02)]


def _measured(n, run_id, technique, delta, parent="r0", label="ok", sha="", spec="opt"):
    t = trial(n, run_id, label=label, parent=parent, spec=spec, sha=sha)
    score = None if t.score is None else 1.0 + delta
    return dataclasses.replace(t, score=score, delta_vs_best=None if score is None else delta,
                               decision=Decision.DISCARD if score is not None else None,
                               notes=f"offline technique {technique!r}")


def _rule_agent(env, model=True):
    knobs = owned_knobs(declared_space(env), RULE_TABLE)
    return OfflineAgent("opt", RULE_TABLE, 0, KnobModel(knobs, env.direction) if model else None)


def _asked(env, agent, children, number=5):
    base = trial(0, "r0", decision=Decision.BASELINE, spec="baseline")
    base = dataclasses.replace(base, score=1.0)
    view = LineageView(base, (base,), (base,), tuple(children), tuple(children), tuple(children))
    recipes = {c.run_id: read_editable(env, env.root) for c in children}
    recipes["r0"] = read_editable(env, env.root)
    return agent.ask(_ctx(env, view, recipes, children, number=number, spec="opt"))


def test_a_turn_takes_strong_priors_stack_model_small_priors_then_last_resort(env):
    env = dataclasses.replace(env, min_delta=0.01)
    agent, plain = _rule_agent(env), _rule_agent(env, model=False)
    first = _asked(env, agent, [])  # lr_up's prior gain (0.01) reaches the margin
    assert first.hypothesis.startswith("[prior] a higher LR") and "LR" in first.diff
    near = [_measured(1, "r1", "lr_up", -0.006, sha=diff_sha(first.diff))]
    modelled = _asked(env, agent, near)  # no strong technique left, one near-miss: the model
    assert modelled.hypothesis.startswith("[model] TPE over opt's knobs (STEPS, LR)")
    assert "fitted to 2 measured trials" in modelled.hypothesis
    second = _asked(env, plain, near)  # without a model: the small prior
    assert second.hypothesis.startswith("[prior] more steps")
    near.append(_measured(2, "r2", "steps_up", -0.004, sha=diff_sha(second.diff)))
    stacked = _asked(env, agent, near)  # two near-misses: stacked before the model
    assert stacked.hypothesis.startswith("[stack] near-misses lr_up, steps_up")
    assert "LR" in stacked.diff and "STEPS" in stacked.diff
    near.append(dataclasses.replace(_measured(3, "r3", "x", -0.002, sha=diff_sha(stacked.diff)),
                                    notes="offline stack 'lr_up' + 'steps_up'"))
    assert _asked(env, agent, near).hypothesis.startswith("[model]")
    last = _asked(env, plain, near)
    assert last.hypothesis.startswith("[last resort] a lower LR")


def test_react_cuts_cost_only_after_an_edit_that_raised_it(env):
    env = dataclasses.replace(env, min_delta=0.01)
    table = [Technique("wider", {"STEPS": "*2"}, "twice the steps", -0.05, cost="up"),
             Technique("lr_up", {"LR": "*1.2"}, "a higher LR", -0.02),
             Technique("undo", {"STEPS": "-10"}, "fewer steps", 0.01, cost="down"),
             Technique("lighter", {"LR": "*0.9"}, "a lighter LR", 0.01, cost="down")]
    agent = OfflineAgent("opt", table, 0)
    for technique, expected in (("wider", "[react] t0001 hit train_budget_overrun; cut cost: "
                                          "a lighter LR"),  # never the cut that undoes it
                                ("lr_up", "[prior]")):
        failed = _measured(1, "r1", technique, 0.0, label="train_budget_overrun", sha="x")
        proposal = _asked(env, agent, [failed])
        assert proposal.hypothesis.startswith(expected), proposal.hypothesis


def test_a_kept_technique_is_measured_first_on_the_new_best(env):
    env = dataclasses.replace(env, min_delta=0.01)
    kept = _measured(1, "r1", "steps_up", -0.05)
    again = _asked(env, _rule_agent(env), [kept])
    assert again.hypothesis.startswith("[measured] more steps")


def test_the_knob_model_stays_in_its_space_and_steps_back_from_overruns(env):
    """Small LRs scored best and the largest overran: TPE's proposals stay low."""
    agent = _rule_agent(env)
    recipes = {"r0": read_editable(env, env.root)}
    points = [(0.02, 0.90), (0.03, 0.92), (0.05, 1.0), (0.1, 1.1), (0.3, None), (0.45, None)]
    history = []
    for i, (lr, score) in enumerate(points, 1):
        files, _ = set_knobs(recipes["r0"], env, {"LR": lr})
        recipes[f"r{i}"] = files
        label = FailureLabel.OK if score is not None else FailureLabel.TRAIN_BUDGET_OVERRUN
        history.append(Trial(f"r{i}", i, "opt", "h", "r0", "FINISHED", label, score))
    proposed = [agent.model.propose(history, recipes.__getitem__, env, n, lambda v: True)[0]
                for n in range(10)]
    space = {k.name: k for k in agent.model.knobs}
    assert all(space[k].contains(v) for values in proposed for k, v in values.items())
    assert sum(values["LR"] < 0.1 for values in proposed) >= 8
