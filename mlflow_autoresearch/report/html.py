"""lineage.html: the campaign's lineage tree as one self-contained page (inline CSS, no JS).

The baseline is the root; each kept trial nests under its parent, and each kept trial lists its
other children (discarded or failed) in a collapsed `<details>`. Every node is an
`<li class="node kept|child" data-run-id=...>` linking to its MLflow run page with
`target="_top"`, so the link leaves the MLflow UI's artifact iframe as well as a plain tab.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from html import escape

from . import text
from .data import Campaign, Row, Summary, color, outcome_order

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .3em; }
.meta { color: #555; margin: 0 0 .8em; }
.chip { display: inline-block; padding: 0 .45em; border-radius: .6em; color: #fff;
        text-shadow: 0 0 2px #000; font-size: .85em; margin-right: .3em; }
ul { list-style: none; margin: 0; padding-left: 1.1em; border-left: 1px dotted #bbb; }
ul.tree { padding-left: 0; border-left: none; }
.card { border: 1px solid #ddd; border-left: 6px solid #999; border-radius: 4px;
        padding: .3em .6em; margin: .35em 0; background: #fafafa; max-width: 70em; }
.child .card { background: #fff; font-size: .92em; }
.card a { font-weight: 600; font-family: ui-monospace, monospace; }
.spec { font-weight: 600; margin: 0 .4em; }
.facts { color: #444; }
.hyp { color: #333; margin-top: .15em; white-space: pre-wrap; overflow-wrap: anywhere; }
summary { cursor: pointer; color: #555; margin-left: .3em; }
"""


def _card(row: Row, campaign: Campaign) -> str:
    facts = [] if row.score is None else [f"{campaign.score_metric} {text.score(row.score)}"]
    if row.decision:
        facts.append(row.decision)
    if row.delta is not None:
        facts.append(f"delta {text.delta(row.delta)}")
    facts.append(f"in_domain {row.in_domain or text.NONE}")
    hue = color(row.outcome)
    return (f'<div class="card" style="border-left-color:{hue}">'
            f'<a href="{escape(campaign.run_url(row.run_id))}" target="_top">{row.name}</a>'
            f'<span class="spec">{escape(row.specialist)}</span>'
            f'<span class="chip" style="background:{hue}">{escape(row.label)}</span>'
            f'<span class="facts">{escape(" · ".join(facts))}</span>'
            f'<div class="hyp">{escape(row.hypothesis)}</div></div>')


def _details(rows: list[Row], campaign: Campaign, what: str) -> str:
    """A collapsed listing of non-kept trials, their outcome counts in the summary line."""
    if not rows:
        return ""
    mix = Counter(r.outcome for r in rows)
    tally = ", ".join(f"{mix[o]} {o}" for o in outcome_order(mix))
    items = "\n".join(f'<li class="node child" data-run-id="{escape(r.run_id)}">'
                    f"{_card(r, campaign)}</li>" for r in rows)
    return (f"<details><summary>{len(rows)} {what} ({escape(tally)})</summary>"
            f"<ul>\n{items}</ul></details>")


def _tree(rows: list[Row], campaign: Campaign) -> tuple[str, list[Row]]:
    """The nested kept trials, and the non-kept trials no kept trial parents."""
    kept = {r.run_id: r for r in rows if r.kept}
    kept_kids: dict[str | None, list[Row]] = defaultdict(list)
    other_kids: dict[str | None, list[Row]] = defaultdict(list)
    for row in rows:
        parent = kept.get(row.parent_id or "")
        # A parent must come first; anything else is a root, so a bad tag cannot hide a node.
        key = parent.run_id if parent is not None and parent.number < row.number else None
        (kept_kids if row.kept else other_kids)[key].append(row)
    out: list[str] = []
    stack: list[Row | None] = list(reversed(kept_kids[None]))  # None closes a nested <ul>
    while stack:
        row = stack.pop()
        if row is None:
            out.append("</ul></li>")
            continue
        out.append(f'<li class="node kept" data-run-id="{escape(row.run_id)}">'
                   + _card(row, campaign) + _details(other_kids[row.run_id], campaign,
                                                     "other children"))
        if kept_kids[row.run_id]:
            out.append("<ul>")
            stack.append(None)
            stack.extend(reversed(kept_kids[row.run_id]))
        else:
            out.append("</li>")
    return "\n".join(out), other_kids[None]


def lineage_html(campaign: Campaign, rows: list[Row], summary: Summary) -> str:
    tree, loose = _tree(rows, campaign)
    legend = "".join(f'<span class="chip" style="background:{color(o)}">{escape(o)}</span>'
                     for o in outcome_order(r.outcome for r in rows))
    best = (f"best {text.score(summary.best_score)} at t{summary.best_trial:04d}"
            if summary.best_trial is not None else "no kept score yet")
    title = escape(f"Lineage: {campaign.name}")
    meta = escape(f"{campaign.score_metric}, {campaign.direction.value} · {summary.trials} "
                  f"trials · {summary.keeps} keeps · {best}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}'
            f"</title><style>{CSS}</style></head>\n<body><h1>{title}</h1>\n"
            f'<p class="meta">{meta}</p>\n<p>{legend}</p>\n<ul class="tree">\n{tree}\n</ul>\n'
            f"{_details(loose, campaign, 'trials outside the kept tree')}\n</body></html>\n")
