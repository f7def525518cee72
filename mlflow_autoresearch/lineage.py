"""The lineage view every specialist receives, and its text rendering: pure functions over Trials.

The store fills a `LineageView` from bounded MLflow queries; this module only shapes and
renders it (and a trial as one line), with the reference system's size caps: leaderboard <= 4 KB,
knowledge (best chain, the best's children, recent activity) <= 8 KB, last 10 trials with notes.
`harness_abort` trials never appear: an infrastructure fault does not count as an idea tried.
"""

from __future__ import annotations

from dataclasses import dataclass

from .records import FailureLabel, Trial

LEADERBOARD_BYTES = 4000
KNOWLEDGE_BYTES = 8000
SATURATION_WINDOW = 5


@dataclass(frozen=True)
class LineageView:
    """What is known when a specialist proposes. Lists are newest first unless stated."""

    baseline: Trial | None
    leaderboard: tuple[Trial, ...]      # kept trials and the baseline, best first
    best_chain: tuple[Trial, ...]       # root first, ending at the best
    best_children: tuple[Trial, ...]    # every child of the best, failures included
    recent: tuple[Trial, ...]           # all specialists
    mine: tuple[Trial, ...]             # this specialist's own last trials
    in_flight: tuple[Trial, ...] = ()   # running now (RUNNING runs), any specialist's

    @property
    def best(self) -> Trial | None:
        return self.leaderboard[0] if self.leaderboard else None

    @property
    def root(self) -> Trial | None:
        """The parent of last resort: the best, else the measured baseline."""
        return self.best or self.baseline


def visible(trials: tuple[Trial, ...] | list[Trial]) -> tuple[Trial, ...]:
    """Trials specialists may see: everything but harness faults and unfinished runs."""
    return tuple(t for t in trials
                 if t.label is not None and t.label is not FailureLabel.HARNESS_ABORT)


def lineage_path(parent_id: str | None, parent_path: str) -> str:
    """`/<root id>/.../<parent id>/` for a child of `parent_id` (whose own path is `parent_path`):
    one `IN` query then fetches every ancestor."""
    if parent_id is None:
        return ""
    return (parent_path or "/") + parent_id + "/"


def saturated(mine: tuple[Trial, ...], margin: float) -> bool:
    """True when a specialist's last few trials all failed or moved the score by <= margin."""
    window = mine[:SATURATION_WINDOW]
    if len(window) < SATURATION_WINDOW:
        return False
    return all(t.label is not FailureLabel.OK or t.delta_vs_best is None
               or abs(t.delta_vs_best) <= margin for t in window)


def trial_line(t: Trial, hypothesis_chars: int = 100) -> str:
    """One trial as a line: `t0007 [opt, ok, score=4.12, delta=-0.18, keep] hypothesis`."""
    parts = [t.specialist, t.verdict]
    if t.score is not None:
        parts.append(f"score={t.score:.6g}")
    if t.delta_vs_best is not None:
        parts.append(f"delta={t.delta_vs_best:+.4g}")
    if t.decision is not None:
        parts.append(t.decision.value)
    if t.confirm == "failed":
        parts.append("confirmation failed")
    return f"t{t.number:04d} [{', '.join(parts)}] {clip(t.hypothesis, hypothesis_chars)}"


def render_context(view: LineageView, specialist: str, margin: float,
                   metric: str, direction: str, margin_source: str = "spec") -> str:
    """The lineage part of a specialist's prompt, as Markdown, size-capped section by section."""
    best = view.best
    head = [f"# Lineage for `{specialist}`", ""]
    if best is not None:
        head.append(f"Current best: t{best.number:04d} by {best.specialist}, "
                    f"{metric} = {best.score:.6g} ({direction}).")
    elif view.baseline is not None:
        head.append(f"No valid score yet; the baseline t0000 ended {view.baseline.verdict}.")
    head.append(f"Keep margin: a trial must beat the best by more than {margin:.4g} "
                f"({'measured from repeats of the baseline' if margin_source == 'measured' else 'from the spec'}).")
    board = ["## Leaderboard (kept trials, best first)", ""]
    board += [trial_line(t, 100) for t in view.leaderboard[:20]]
    knowledge = ["## Chain from the baseline to the best", ""]
    knowledge += [trial_line(t, 100) for t in visible(view.best_chain)]
    knowledge += ["", "## Children of the best (failures included)", ""]
    knowledge += [trial_line(t, 100) for t in visible(view.best_children)] or ["(none yet)"]
    knowledge += ["", "## Recent activity (all specialists)", ""]
    knowledge += [trial_line(t, 80) for t in visible(view.recent)[:30]]
    last = ["## Last 10 trials, with notes and crash excerpts", ""]
    for t in visible(view.recent)[:10]:
        last.append(trial_line(t, 140))
        failed = t.label is not FailureLabel.OK or t.confirm == "failed"
        note = t.excerpt if failed and t.excerpt else t.notes
        if note:
            last.append(f"    notes: {clip(' '.join(note.split()), 160)}")
    running = in_flight_lines(view)
    nudge = []
    if saturated(visible(view.mine), margin):
        nudge = ["## Saturation warning", "",
                 f"Your last {SATURATION_WINDOW} trials all failed or moved the score by at most "
                 f"{margin:g}. Go structural: try a mechanism not yet tried, or start from "
                 f"another kept trial."]
    sections = ["\n".join(head), _cap("\n".join(board), LEADERBOARD_BYTES),
                _cap("\n".join(knowledge), KNOWLEDGE_BYTES), "\n".join(last)]
    if running:
        sections.append(_cap("\n".join(running), KNOWLEDGE_BYTES))
    if nudge:
        sections.append("\n".join(nudge))
    return "\n\n".join(sections) + "\n"


def in_flight_lines(view: LineageView) -> list[str]:
    """The "In flight" section: trials running now, with their parents, so parallel
    specialists build on each other's open ideas instead of proposing them again."""
    if not view.in_flight:
        return []
    known = {t.run_id: t for t in (*view.leaderboard, *view.best_chain, *view.recent,
                                   *((view.baseline,) if view.baseline else ()))}
    lines = ["## In flight (running now: do not propose the same edit on the same parent)", ""]
    for t in view.in_flight:
        parent = known.get(t.parent_id or "")
        on = (f"on t{parent.number:04d}" if parent else
              f"on run {t.parent_id[:8]}" if t.parent_id else "the baseline")
        lines.append(f"t{t.number:04d} [{t.specialist}, {on}] {clip(t.hypothesis, 120)}")
    return lines


def blind_view(view: LineageView) -> LineageView:
    """What a specialist sees with lineage off (the paper's no-lineage control): the current
    best (the baseline while there is none), and no trial history of anyone."""
    best = view.best
    return LineageView(view.baseline if best is None else None, (best,) if best else (),
                       (), (), (), ())


def render_blind(view: LineageView, specialist: str, metric: str, direction: str) -> str:
    """The lineage part of a prompt with lineage off: the best's id and score, nothing else."""
    head = [f"# Lineage for `{specialist}`: off", ""]
    if view.best is not None:
        head.append(f"Current best: t{view.best.number:04d} (run {view.best.run_id}), "
                    f"{metric} = {view.best.score:.6g} ({direction}).")
    elif view.baseline is not None:
        head.append(f"No valid score yet; the baseline t0000 ended {view.baseline.verdict}.")
    head += ["", "Lineage is off for this campaign (a control): no trial history of any "
                 "specialist is shown, your own included. Propose from the task and your "
                 "knowledge, building on the current best."]
    return "\n".join(head) + "\n"


def tree_rows(trials: list[Trial]) -> list[tuple[int, Trial]]:
    """Trials in preorder with their depth: the lineage tree as `autoresearch lineage` prints it."""
    children: dict[str | None, list[Trial]] = {}
    ids = {t.run_id for t in trials}
    for t in sorted(trials, key=lambda t: t.number):
        children.setdefault(t.parent_id if t.parent_id in ids else None, []).append(t)
    rows: list[tuple[int, Trial]] = []
    stack = [(0, t) for t in reversed(children.get(None, []))]
    while stack:
        depth, t = stack.pop()
        rows.append((depth, t))
        stack += [(depth + 1, c) for c in reversed(children.get(t.run_id, []))]
    return rows


def clip(text: str, n: int) -> str:
    """One line of at most `n` characters."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _cap(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    marker = "\n[... truncated to fit the context budget]"
    return data[: limit - len(marker)].decode(errors="ignore") + marker


def progress_line(trial: Trial, best: Trial | None) -> str:
    """`t0003 opt        ok                    4.1200 keep     best 4.1200  hypothesis`"""
    score = f"{trial.score:.4f}" if trial.score is not None else "-"
    decision = trial.decision.value if trial.decision else ""
    best_s = f"{best.score:.4f}" if best and best.score is not None else "-"
    why = "confirmation failed: " if trial.confirm == "failed" else ""
    return (f"t{trial.number:04d} {trial.specialist:<9} {trial.verdict:<21} {score:>9} "
            f"{decision:<8} best {best_s:>9}  {why}{clip(trial.hypothesis, 70)}")
