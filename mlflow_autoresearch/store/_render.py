"""What a trial's run shows people: its Markdown description and `trial/evaluation.json`."""

from __future__ import annotations

import json

from ..records import Decision, Outcome, Proposal, TrialResult


def render_note(number: int, proposal: Proposal, outcome: Outcome, decision: Decision | None,
                delta: float | None) -> str:
    """The run page's Markdown description: the trial's story without opening artifacts."""
    retry = " (a re-run of an aborted trial's proposal)" if proposal.retry_of else ""
    lines = [f"**Trial {number}** by `{proposal.specialist}`{retry}: {proposal.hypothesis}", ""]
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
