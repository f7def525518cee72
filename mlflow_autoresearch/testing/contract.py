"""The trial contract (README, "The trial contract"), checked on one recorded run.

Every environment's tests call `check_trial_contract` on every trial they record, whatever its
label, so the contract is stated once.
"""

from __future__ import annotations

import json
import math

from .. import tags
from ..records import FailureLabel
from ..store import TrialStore

LABELS = {label.tag for label in FailureLabel}
TAGS = (tags.SCHEMA_VERSION, tags.ENVIRONMENT, tags.CAMPAIGN, tags.PROFILE, tags.SANDBOX,
        tags.TIME_BASIS, tags.TRIAL, tags.SPECIALIST, tags.HYPOTHESIS, tags.EXPECTED_DELTA, tags.NOTES, tags.LABEL,
        tags.EXCERPT, tags.DIFF_SHA, tags.LINEAGE_PATH, tags.MLFLOW_NOTE)
METRICS = (tags.TRIAL_NUMBER, tags.FAILURE_CODE, tags.DIFF_LINES, tags.TRIAL_SECONDS,
           tags.HARNESS_SECONDS, tags.KEPT_METRIC)
ARTIFACTS = (tags.PATCH, tags.PATCH_PREVIEW, tags.CONTEXT, tags.EVALUATION)


def check_trial_contract(store: TrialStore, run_id: str, environment: str | None = None,
                         campaign: str | None = None) -> FailureLabel:
    """Assert that the finished trial `run_id` carries the whole contract; returns its label.

    Every trial: the proposal's tags, label and excerpt, the run note, the harness metrics,
    the diff, the context, the evaluation and at least one log; `score` and a decision exactly
    on `ok` trials; parent tags on all but the baseline; the recipe on all but `harness_abort`
    trials (which the harness cannot vouch for); a status that matches the label.
    """
    run = store.raw(run_id)
    t, m = run.tags, run.metrics
    missing = [k for k in TAGS if k not in t] + [k for k in METRICS if k not in m]
    assert not missing, f"{run.name} lacks {missing}"
    assert t[tags.LABEL] in LABELS, t[tags.LABEL]
    label = FailureLabel.from_tag(t[tags.LABEL])
    number = int(t[tags.TRIAL])
    outcome = t.get(tags.DECISION) or label.tag
    assert run.name == f"t{number:04d}-{t[tags.SPECIALIST]}-{outcome}", run.name
    assert m[tags.TRIAL_NUMBER] == number and m[tags.FAILURE_CODE] == float(label)
    if environment is not None:
        assert t[tags.ENVIRONMENT] == environment
    if campaign is not None:
        assert t[tags.CAMPAIGN] == campaign
    has_score = tags.SCORE in m and not math.isnan(m[tags.SCORE])
    assert has_score == (label is FailureLabel.OK), f"{run.name}: score {m.get(tags.SCORE)}"
    assert (tags.DECISION in t) == (label is FailureLabel.OK), run.name
    if label is FailureLabel.OK:
        assert t[tags.DECISION] in {"baseline", "keep", "discard"}
    if t[tags.SPECIALIST] == "baseline":
        assert tags.PARENT not in t and tags.MLFLOW_PARENT not in t
    else:
        assert t[tags.PARENT] == t[tags.MLFLOW_PARENT]
        assert t[tags.LINEAGE_PATH].endswith(f"/{t[tags.PARENT]}/")
    assert t[tags.MLFLOW_NOTE].startswith(f"Trial {number}: **"), t[tags.MLFLOW_NOTE][:80]
    if label is not FailureLabel.HARNESS_ABORT:  # the harness got as far as the edit
        assert t[tags.AUDIT_IN_DOMAIN] in ("true", "false", "unknown"), run.name
        assert tags.AUDIT_TOUCHED in t, run.name
    expected_status = {FailureLabel.HARNESS_ABORT: ("FAILED", "KILLED")}.get(label, ("FINISHED",))
    assert run.status in expected_status, f"{run.name}: {run.status} for {label.tag}"
    absent = [a for a in ARTIFACTS if a not in run.artifacts]
    assert not absent, f"{run.name} lacks artifacts {absent}"
    assert any(a.startswith(tags.LOGS_DIR + "/") for a in run.artifacts), f"{run.name}: no logs"
    if label is not FailureLabel.HARNESS_ABORT:
        assert any(a.startswith(tags.RECIPE_DIR + "/") for a in run.artifacts), \
            f"{run.name}: no recipe"
    if tags.CONFIRM in t:  # a would-be keep re-run on the confirmation seeds
        assert tags.SCORE_SEARCH in m, f"{run.name}: confirmed without {tags.SCORE_SEARCH}"
        kept = t.get(tags.DECISION) in ("baseline", "keep")
        assert t[tags.CONFIRM] == ("passed" if kept else "failed"), run.name
        if kept:
            assert tags.SCORE_CONFIRM in m, f"{run.name}: kept without {tags.SCORE_CONFIRM}"
    evaluation = json.loads(store.read_text(run_id, tags.EVALUATION))
    assert evaluation["label"] == label.tag and evaluation["failure_code"] == int(label)
    return label
