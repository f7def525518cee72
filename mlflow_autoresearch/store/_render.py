"""What a trial's run shows people: its Markdown description and `trial/evaluation.json`."""

from __future__ import annotations

import json

from ..records import Decision, Outcome, Proposal, TrialResult


DIFF_PREVIEW_LINES = 12  # of the diff's changed lines, in the description


def run_name(number: int, specialist: str, outcome: Outcome, decision: Decision | None) -> str:
    """`t0003-opt-keep`, `t0004-arch-crash`: the runs table tells keeps from the rest."""
    return f"t{number:04d}-{specialist}-{decision.value if decision else outcome.label.tag}"


def render_note(number: int, proposal: Proposal, outcome: Outcome, decision: Decision | None,
                delta: float | None,
                parent: tuple[int | None, str | None, str] = (None, None, "")) -> str:
    """The run page's Markdown description: the trial's story without opening artifacts.
    `parent` is (its trial number, its run id, the experiment id), for a link to its page."""
    retry = " (a re-run of an aborted trial's proposal)" if proposal.retry_of else ""
    lines = [f"**Trial {number}** by `{proposal.specialist}`{retry}: {proposal.hypothesis}", ""]
    number_of_parent, parent_id, experiment_id = parent
    if parent_id:
        lines += [f"Parent: [t{number_of_parent:04d}](#/experiments/{experiment_id}/runs/"
                  f"{parent_id}).", ""]
    verdict = f"Label **{outcome.label.tag}**"
    if outcome.score is not None:
        verdict += f", score {outcome.score:.6g}"
    if decision is not None:
        verdict += f", decision **{decision.value}**"
    if delta is not None:
        verdict += f" (delta vs best {delta:+.4g})"
    lines.append(verdict + ".")
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
