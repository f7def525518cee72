"""report.md: the campaign's summary, per-specialist table and leaderboard, figures linked."""

from __future__ import annotations

from html import escape

from . import text
from .data import Campaign, Row, SpecialistStats, Summary, leaderboard, specialist_stats

HYPOTHESIS_CHARS = 160


def _cell(value: str, limit: int | None = None) -> str:
    """Table-safe text: one line, pipes escaped, no raw HTML."""
    flat = " ".join(value.split())
    if limit is not None and len(flat) > limit:
        flat = flat[:limit - 1] + "…"
    return escape(flat, quote=False).replace("|", "\\|")


def _link(row: Row, campaign: Campaign) -> str:
    return f"[{row.name}]({campaign.run_url(row.run_id)})"


def _summary(campaign: Campaign, rows: list[Row], s: Summary) -> list[str]:
    by_number = {r.number: r for r in rows}
    flight = f" ({s.in_flight} more in flight, not counted)" if s.in_flight else ""
    lines = [f"- Trials: {s.trials}{flight}", f"- Keeps: {s.keeps}"]
    if s.best_trial is not None:
        best = by_number[s.best_trial]
        lines.append(f"- Best score: {text.score(s.best_score)} at {_link(best, campaign)} "
                     f"({_cell(best.specialist)})")
    else:
        lines.append("- Best score: -")
    if s.baseline_trial is not None:
        base = by_number[s.baseline_trial]
        lines.append(f"- Baseline: {text.score(s.baseline_score)} at {_link(base, campaign)}")
    else:
        lines.append("- Baseline: -")
    gain = s.improvement(campaign.direction)
    if gain is not None and gain <= 0:
        lines.append("- Improvement: none yet (the best is the baseline)")
    elif gain is not None:
        share = (f" ({text.percent(gain / abs(s.baseline_score))})"
                 if s.baseline_score else "")
        lines.append(f"- Improvement: {text.score(gain)} better than the baseline{share}")
    return lines


def _stats_row(s: SpecialistStats) -> str:
    tokens = text.NONE if s.tokens is None else f"{s.tokens:,.0f}"
    cost = text.NONE if s.cost_usd is None else f"${s.cost_usd:.4f}"
    cells = [_cell(s.name), str(s.trials), str(s.keeps), text.percent(s.keep_rate),
             text.delta(s.best_delta), _cell(text.counts(s.labels)),
             text.percent(s.out_of_domain_rate), tokens, cost]
    return "| " + " | ".join(cells) + " |"


def report_md(campaign: Campaign, rows: list[Row], summary: Summary) -> str:
    lines = [f"# Campaign report: {_cell(campaign.name)}", "",
             f"Score: `{campaign.score_metric}`, {campaign.direction.value} "
             f"({text.better(campaign.direction)}). Lineage tree: [lineage.html](lineage.html).",
             "", "## Summary", "",
             *_summary(campaign, rows, summary), "", "![progress](progress.png)", "",
             "## Specialists", "",
             "| specialist | trials | keeps | keep rate | best delta | labels | out-of-domain "
             "| tokens (in+out) | cost |",
             "|---|--:|--:|--:|--:|---|--:|--:|--:|",
             *(_stats_row(s) for s in specialist_stats(campaign.direction, rows)), "",
             "![specialists](specialists.png)", "", "## Leaderboard", "",
             "| rank | trial | specialist | score | delta | hypothesis |",
             "|--:|---|---|--:|--:|---|"]
    for rank, row in enumerate(leaderboard(campaign.direction, rows), 1):
        lines.append(f"| {rank} | {_link(row, campaign)} | {_cell(row.specialist)} | "
                     f"{text.score(row.score)} | {text.delta(row.delta)} | "
                     f"{_cell(row.hypothesis, HYPOTHESIS_CHARS)} |")
    lines += ["", "## Label mix", "", "![label mix](labels.png)", ""]
    return "\n".join(lines)
