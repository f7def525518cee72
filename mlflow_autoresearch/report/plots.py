"""The report's PNG figures, 900x500 px each.

Built with matplotlib's object API on the Agg canvas rather than pyplot: headless, no global
backend switch or figure registry in the host process, nothing left open after saving.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from ..records import Decision, Direction
from .data import Campaign, Row, best_steps, color, outcome_order, specialist_stats
from .text import better

SIZE = (9.0, 5.0)
DPI = 100
WINDOWS = 20  # the label-mix figure groups the trials into at most this many bars


def _figure() -> Figure:
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _stacked_bars(ax: Axes, names: list[str], counts: list[Counter[str]],
                  notes: list[str] | None = None) -> None:
    """One bar per name, its outcome counts stacked in the palette's order, a note on top."""
    xs = range(len(names))
    bottom = [0] * len(names)
    for outcome in outcome_order(o for c in counts for o in c):
        heights = [c[outcome] for c in counts]
        ax.bar(xs, heights, bottom=bottom, color=color(outcome), label=outcome, width=0.7)
        bottom = [b + h for b, h in zip(bottom, heights)]
    crowded = len(names) > 6 or sum(len(n) for n in names) > 40  # long campaign names too
    ax.set_xticks(list(xs), names, rotation=45 if crowded else 0,
                  ha="right" if crowded else "center", fontsize=8 if crowded else None)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for x, (note, total) in enumerate(zip(notes or [], bottom)):
        ax.annotate(note, (x, total), ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                    textcoords="offset points")
    ax.set_ylim(0, max([1, *bottom]) * 1.12)


def _best_line(ax: Axes, direction: Direction, rows: list[Row], **style) -> None:
    steps = best_steps(direction, rows)
    if steps:
        xs, ys = zip(*steps)
        ax.step(xs, ys, where="post", **style)


def progress(campaign: Campaign, rows: list[Row], path: Path) -> Path:
    """Best-so-far step line, every scored trial as a point, keeps ringed, the baseline dashed,
    and failures (no score) as crosses along the worse edge, one lane per label."""
    dense = len(rows) > 100  # smaller marks, so a long campaign's points stay apart
    fig = _figure()
    ax = fig.add_subplot()
    _best_line(ax, campaign.direction, rows, color=color(Decision.KEEP.value), lw=2,
               label="best so far", zorder=2)
    base = next((r for r in rows if r.decision == Decision.BASELINE.value
                 and r.score is not None), None)
    if base is not None:
        ax.axhline(base.score, ls="--", lw=1, color=color(Decision.BASELINE.value),
                   label=f"baseline {base.score:.6g}")
    scored = [r for r in rows if r.score is not None]
    for outcome in outcome_order(r.outcome for r in scored):
        group = [r for r in scored if r.outcome == outcome]
        ax.scatter([r.number for r in group], [r.score for r in group], s=10 if dense else 30,
                   zorder=3,
                   color=color(outcome), edgecolors="white", linewidths=0.5, label=outcome)
    kept = [r for r in scored if r.decision == Decision.KEEP.value]
    if kept:
        ax.scatter([r.number for r in kept], [r.score for r in kept], s=60 if dense else 170,
                   zorder=4,
                   facecolors="none", edgecolors=color(Decision.KEEP.value), linewidths=1.6,
                   label="kept (ring)")
    failed = [r for r in rows if r.score is None]
    top = campaign.direction is Direction.MINIMIZE
    on_edge = blended_transform_factory(ax.transData, ax.transAxes)
    for lane, outcome in enumerate(outcome_order(r.outcome for r in failed)):
        numbers = [r.number for r in failed if r.outcome == outcome]
        height = 0.97 - 0.035 * lane if top else 0.03 + 0.035 * lane
        ax.plot(numbers, [height] * len(numbers), "X", ms=5 if dense else 8, transform=on_edge,
                clip_on=False,
                color=color(outcome), label=f"{outcome} (no score)", zorder=3)
    ax.set_title(f"{campaign.name}: {campaign.score_metric} "
                 f"({campaign.direction.value}, {better(campaign.direction)})")
    ax.set_xlabel("trial")
    ax.set_ylabel(campaign.score_metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside right upper", fontsize=8)
    return _save(fig, path)


def specialists(campaign: Campaign, rows: list[Row], path: Path) -> Path:
    """Per specialist: its trials as one bar of stacked outcomes, keeps/trials written on top."""
    stats = specialist_stats(campaign.direction, rows)
    fig = _figure()
    ax = fig.add_subplot()
    _stacked_bars(ax, [s.name for s in stats], [s.outcomes for s in stats],
                  [f"{s.keeps}/{s.trials} kept" for s in stats])
    ax.set_title(f"{campaign.name}: trials per specialist by outcome")
    ax.set_ylabel("trials")
    if stats:
        fig.legend(loc="outside right upper", fontsize=8)
    return _save(fig, path)


def labels(campaign: Campaign, rows: list[Row], path: Path) -> Path:
    """The outcome mix over time: stacked counts per window of consecutive trials."""
    size = max(1, math.ceil(len(rows) / WINDOWS))
    windows = [rows[i:i + size] for i in range(0, len(rows), size)]
    names = [f"t{w[0].number}" if len(w) == 1 else f"t{w[0].number}-{w[-1].number}"
             for w in windows]
    fig = _figure()
    ax = fig.add_subplot()
    _stacked_bars(ax, names, [Counter(r.outcome for r in w) for w in windows])
    per = f"per {size} trials" if size > 1 else "of each trial"
    ax.set_title(f"{campaign.name}: outcome mix {per}")
    ax.set_xlabel("trials")
    ax.set_ylabel("count")
    if rows:
        fig.legend(loc="outside right upper", fontsize=8)
    return _save(fig, path)


def comparison(entries: list[tuple[Campaign, list[Row]]], path: Path) -> Path:
    """Campaigns side by side: best-so-far lines on one axes, stacked outcome bars beside."""
    fig = _figure()
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    for campaign, rows in entries:
        _best_line(left, campaign.direction, rows, lw=2, label=campaign.name)
    first = entries[0][0]
    metrics = sorted({c.score_metric for c, _ in entries})
    left.set_title(f"best so far ({better(first.direction)})")
    left.set_xlabel("trial")
    left.set_ylabel(", ".join(metrics))
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.grid(alpha=0.3)
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=8)
    counts = [Counter(r.outcome for r in rows) for _, rows in entries]
    _stacked_bars(right, [c.name for c, _ in entries], counts,
                  [f"{c[Decision.KEEP.value]} kept" for c in counts])
    right.set_title("trials by outcome")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=7)
    return _save(fig, path)
