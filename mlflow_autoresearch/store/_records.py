"""MLflow runs to `Trial` records, and the pieces of filter strings every query shares."""

from __future__ import annotations

from mlflow.entities import Run

from .. import tags
from ..records import Decision, FailureLabel, Trial


def quote(value: str) -> str:
    """`value` as a filter-string literal. MLflow has no escape inside quotes, so a value holding
    a single quote is double-quoted; one holding both kinds cannot be searched for."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot search for {value!r}: names may hold ' or \", not both")


def tag_is(key: str, value: str) -> str:
    return f"tags.`{key}` = {quote(value)}"


def trial_from_run(run: Run) -> Trial:
    """A `Trial` from an MLflow run. Schema-1 runs read the same. A RUNNING run is a trial in
    flight (or one a dead loop left, until recovery): whatever verdict it holds is not one yet."""
    t, m = run.data.tags, run.data.metrics
    final = run.info.status != "RUNNING"
    label = t.get(tags.LABEL) if final else None
    decision = t.get(tags.DECISION) if final else None
    return Trial(
        run_id=run.info.run_id,
        number=int(t.get(tags.TRIAL, "-1")),
        specialist=t.get(tags.SPECIALIST, ""),
        hypothesis=t.get(tags.HYPOTHESIS, ""),
        parent_id=t.get(tags.PARENT),
        status=run.info.status,
        label=FailureLabel.from_tag(label) if label else None,
        score=m.get(tags.SCORE) if label == FailureLabel.OK.tag else None,
        decision=Decision(decision) if decision else None,
        delta_vs_best=m.get(tags.DELTA_VS_BEST),
        notes=t.get(tags.NOTES, ""),
        excerpt=t.get(tags.EXCERPT, ""),
        diff_sha=t.get(tags.DIFF_SHA, ""),
        start_time=run.info.start_time or 0,
        retry_of=t.get(tags.RETRY_OF),
        confirm=t.get(tags.CONFIRM, "") if final else "",
    )


def cap(text: str) -> str:
    """A tag value within MLflow's limit (longer values are cut, marked with an ellipsis)."""
    return text if len(text) <= tags.MAX_TAG_CHARS else text[: tags.MAX_TAG_CHARS - 1] + "…"


def cap_path(path: str) -> str:
    """Keep the newest ancestors when a lineage path would overflow a tag."""
    if len(path) <= tags.MAX_TAG_CHARS:
        return path
    ids = [p for p in path.split("/") if p]
    while len("/" + "/".join(ids) + "/") > tags.MAX_TAG_CHARS:
        ids.pop(0)
    return "/" + "/".join(ids) + "/"
