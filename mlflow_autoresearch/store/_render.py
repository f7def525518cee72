"""What the MLflow UI shows people: a trial's description and `trial/evaluation.json`, the
experiment's description and its saved view of the runs table."""

from __future__ import annotations

import json

from .. import tags
from ..environment import Environment
from ..records import Decision, Outcome, Proposal, Trial, TrialResult


DIFF_PREVIEW_LINES = 12  # of the diff's changed lines, in the description


def run_name(number: int, specialist: str, outcome: Outcome, decision: Decision | None) -> str:
    """`t0003-opt-keep`, `t0004-arch-crash`: the runs table tells keeps from the rest."""
    return f"t{number:04d}-{specialist}-{decision.value if decision else outcome.label.tag}"


def render_note(number: int, proposal: Proposal, outcome: Outcome, decision: Decision | None,
                delta: float | None,
                parent: tuple[int | None, str | None, str] = (None, None, "")) -> str:
    """The run page's Markdown description: the trial's story without opening artifacts, the
    verdict first (the page shows the first three lines until "Show more"). `parent` is (its
    trial number, its run id, the experiment id), for a link to its page."""
    verdict = f"**{decision.value if decision else outcome.label.tag}**"
    if outcome.score is not None:
        verdict += f", score {outcome.score:.6g}"
    if delta is not None:
        verdict += f" (delta vs best {delta:+.4g})"
    if decision is not None:
        verdict += f", label {outcome.label.tag}"
    number_of_parent, parent_id, experiment_id = parent
    if parent_id:
        verdict += (f"; parent [t{number_of_parent:04d}](#/experiments/{experiment_id}/runs/"
                    f"{parent_id})")
    retry = " (a re-run of an aborted trial's proposal)" if proposal.retry_of else ""
    lines = [f"Trial {number}: {verdict}.", "",
             f"`{proposal.specialist}`{retry}: {proposal.hypothesis}"]
    if outcome.excerpt:
        lines += ["", "```", outcome.excerpt[-600:], "```"]
    changed = [line for line in proposal.diff.splitlines()
               if line.startswith(("+", "-", "@@")) and not line.startswith(("+++", "---"))]
    if changed:
        more = len(changed) - DIFF_PREVIEW_LINES
        lines += ["", "```diff", *changed[:DIFF_PREVIEW_LINES],
                  *([f"... {more} more line(s)"] if more > 0 else []), "```"]
    lines += ["", "Diff: `trial/patch.diff.txt`; recipe: `trial/recipe/`; logs: `trial/logs/`; "
                  "what the specialist saw: `trial/context.md`."]
    return "\n".join(lines)


def render_replay_note(trial: Trial, outcome: Outcome, seeds: tuple[int, ...],
                       profile: str) -> str:
    """A replay run's description: what was measured again, and both scores."""
    new = f", score {outcome.score:.6g}" if outcome.score is not None else ""
    old = f"; the trial scored {trial.score:.6g}" if trial.score is not None else ""
    return (f"Trial {trial.number}'s recipe measured again on seeds {list(seeds)} ({profile} "
            f"profile): label **{outcome.label.tag}**{new}{old}.")


def render_banner(env: Environment, kind: str) -> str:
    """The experiment's description; its first line is plain text (the experiments list shows
    it raw)."""
    what = "campaign" if kind == tags.CAMPAIGN_KIND else "standalone evaluations"
    margin = "measured at the start" if env.min_delta_auto else f"{env.min_delta:g}"
    return (f"Auto-research {what} on {env.name} ({env.profile} profile): "
            f"{env.direction.value} {env.score_metric}, keep margin {margin}.\n\n"
            f"Each run is one trial, named `t0003-<specialist>-<decision or label>`; the run "
            f"tree is the lineage tree. The view `?viewStateShareKey={tags.VIEW_KEY}` lists the "
            f"trials in order with their score, decision, label, specialist, audit and "
            f"hypothesis, and charts score and best score against the trial number. The run "
            f"named `report` holds the campaign report (`autoresearch report`).")


# The columns and charts of the campaign's saved view, in MLflow 3.17's shared-view format.
VIEW_COLUMNS = ("metrics.`score`", f"tags.`{tags.DECISION}`", f"tags.`{tags.LABEL}`",
                f"tags.`{tags.SPECIALIST}`", "metrics.`delta_vs_best`",
                f"tags.`{tags.AUDIT_IN_DOMAIN}`", f"tags.`{tags.HYPOTHESIS}`")
_SECTION = "autoresearch-campaign"


def campaign_view(now_ms: int) -> str:
    """The `mlflow.sharedViewState.autoresearch` tag: trials flat in number order with the
    story's columns, every run charted, score against trial and the report's best_score."""
    charts = [
        {"uuid": "autoresearch-score", "type": "SCATTER", "runsCountToCompare": 1000,
         "metricSectionId": _SECTION, "xaxis": {"key": tags.TRIAL_NUMBER, "type": "METRIC"},
         "yaxis": {"key": tags.SCORE, "type": "METRIC"}, "deleted": False,
         "isGenerated": False},
        {"uuid": "autoresearch-best", "type": "LINE", "runsCountToCompare": 1000,
         "metricSectionId": _SECTION, "metricKey": tags.BEST_SCORE,
         "selectedMetricKeys": [tags.BEST_SCORE], "xAxisKey": "step", "scaleType": "linear",
         "lineSmoothness": 0, "selectedXAxisMetricKey": "", "deleted": False,
         "isGenerated": False}]
    state = {"orderByKey": f"metrics.`{tags.TRIAL_NUMBER}`", "orderByAsc": True,
             "selectedColumns": list(VIEW_COLUMNS), "columnOrder": list(VIEW_COLUMNS),
             "columnWidths": {**{c: 130 for c in VIEW_COLUMNS if c.startswith("tags.")},
                              f"tags.`{tags.HYPOTHESIS}`": 480},
             "runsHiddenMode": "SHOW_ALL",
             "compareRunSections": [{"uuid": _SECTION, "name": "Campaign", "display": True,
                                     "isReordered": False}],
             "compareRunCharts": charts}
    return json.dumps({"name": "Campaign", "createdAt": now_ms, "updatedAt": now_ms,
                       "state": json.dumps(state)})


def render_evaluation(outcome: Outcome, decision: Decision | None, delta: float | None,
                      result: TrialResult | None = None) -> str:
    """`trial/evaluation.json`: the verdict and the timings, readable without MLflow."""
    doc = {"label": outcome.label.tag, "failure_code": int(outcome.label),
           "score": outcome.score, "metrics": outcome.metrics, "gates": list(outcome.gates),
           "excerpt": outcome.excerpt, "evaluator_seconds": outcome.seconds,
           "decision": decision.value if decision else None, "delta_vs_best": delta}
    if result is not None:
        doc.update(trial_seconds=round(result.trial_seconds, 4),
                   recipe_seconds=round(result.recipe_seconds, 4),
                   harness_seconds=round(result.harness_seconds, 4))
    return json.dumps(doc, indent=1)
