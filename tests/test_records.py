import math
import pickle

import pytest

from mlflow_autoresearch.records import (Decision, Direction, FailureLabel, Outcome, Proposal,
                                         WouldKeep)


def test_failure_codes_never_change():
    assert {label.tag: int(label) for label in FailureLabel} == {
        "ok": 0, "crash": 1, "preflight_crash": 2, "train_budget_overrun": 3,
        "eval_budget_overrun": 4, "size_blocked": 5, "disqualified": 6, "illegal": 7,
        "harness_abort": 8}


def test_label_round_trips_through_its_tag():
    for label in FailureLabel:
        assert FailureLabel.from_tag(label.tag) is label
    with pytest.raises(ValueError, match="unknown label 'oops'"):
        FailureLabel.from_tag("oops")


@pytest.mark.parametrize("score", [None, math.nan, math.inf])
def test_ok_outcome_needs_a_finite_score(score):
    with pytest.raises(ValueError, match="finite score"):
        Outcome(FailureLabel.OK, score=score)


def test_failed_outcome_carries_no_score():
    with pytest.raises(ValueError, match="carries no score"):
        Outcome(FailureLabel.CRASH, score=1.0)
    assert Outcome(FailureLabel.CRASH, metrics={"accuracy": 0.5}).metrics == {"accuracy": 0.5}


def test_outcome_rejects_non_finite_metrics_and_caps_excerpt():
    with pytest.raises(ValueError, match="metric 'accuracy'"):
        Outcome(FailureLabel.CRASH, metrics={"accuracy": math.nan})
    assert len(Outcome(FailureLabel.CRASH, excerpt="x" * 5000).excerpt) == 2000


def test_proposal_needs_hypothesis_and_diff():
    with pytest.raises(ValueError, match="hypothesis"):
        Proposal("opt", "  ", "diff", "parent")
    with pytest.raises(ValueError, match="non-empty diff"):
        Proposal("opt", "try it", "", "parent")
    assert Proposal("baseline", "as shipped", "", None).parent_id is None


def test_direction_margin():
    assert Direction.MINIMIZE.better(4.0, 5.0, 0.5)
    assert not Direction.MINIMIZE.better(4.8, 5.0, 0.5)
    assert Direction.MAXIMIZE.better(0.3, 0.2, 0.05)
    assert not Direction.MAXIMIZE.better(0.2, 0.2)
    assert Decision("keep") is Decision.KEEP


def test_would_keep_is_the_keep_rule_as_a_value():
    ok = Outcome(FailureLabel.OK, score=1.0)
    assert WouldKeep(Direction.MINIMIZE, None, 0.1)(ok)  # no best yet: any ok outcome
    assert WouldKeep(Direction.MINIMIZE, 1.2, 0.1)(ok)
    assert not WouldKeep(Direction.MINIMIZE, 1.05, 0.1)(ok)  # inside the margin
    assert WouldKeep(Direction.MAXIMIZE, 0.8, 0.1)(ok)
    assert not WouldKeep(Direction.MINIMIZE, None, 0.1)(Outcome(FailureLabel.CRASH))
    assert pickle.loads(pickle.dumps(WouldKeep(Direction.MAXIMIZE, 0.8, 0.1)))(ok)
