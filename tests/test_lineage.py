from mlflow_autoresearch.lineage import (LineageView, lineage_path, render_context, saturated,
                                         tree_rows, visible)
from mlflow_autoresearch.records import Decision, FailureLabel, Trial


def trial(n, label="ok", parent=None, score=1.0, decision=None, delta=None, spec="opt",
          excerpt="", notes=""):
    lab = FailureLabel.from_tag(label)
    return Trial(f"r{n}", n, spec, f"hypothesis {n}", parent, "FINISHED", lab,
                 score if lab is FailureLabel.OK else None, decision, delta, notes, excerpt)


def test_harness_aborts_and_running_trials_are_hidden():
    running = Trial("r9", 9, "opt", "h", "r0", "RUNNING")
    shown = visible([trial(1), trial(2, "harness_abort"), running, trial(3, "crash")])
    assert [t.number for t in shown] == [1, 3]


def test_context_has_leaderboard_chain_children_and_notes():
    base = trial(0, decision=Decision.BASELINE, spec="baseline", score=5.0)
    best = trial(2, parent="r0", score=4.0, decision=Decision.KEEP, delta=-1.0)
    crash = trial(3, "crash", parent="r2", excerpt="RuntimeError: deliberate crash")
    abort = trial(4, "harness_abort", parent="r2", excerpt="evaluator exploded")
    view = LineageView(base, (best, base), (base, best), (abort, crash), (abort, crash, best),
                       ())
    text = render_context(view, "opt", 0.1, "train_seconds", "minimize")
    assert "Current best: t0002 by opt, train_seconds = 4" in text
    assert "t0003 [opt, crash] hypothesis 3" in text
    assert "notes: RuntimeError: deliberate crash" in text
    assert "t0004" not in text and "evaluator exploded" not in text
    assert text.index("## Leaderboard") < text.index("## Chain") < text.index("## Children")


def test_trials_in_flight_are_listed_with_their_parents():
    base = trial(0, decision=Decision.BASELINE, spec="baseline", score=5.0)
    best = trial(2, parent="r0", score=4.0, decision=Decision.KEEP, delta=-1.0)
    running = (Trial("r7", 7, "sched", "longer warmup", "r2", "RUNNING"),
               Trial("r6", 6, "arch", "wider blocks", "rGONE1234", "RUNNING"))
    view = LineageView(base, (best, base), (base, best), (), (best,), (), running)
    text = render_context(view, "opt", 0.1, "score", "minimize")
    section = text[text.index("## In flight"):]
    assert "t0007 [sched, on t0002] longer warmup" in section
    assert "t0006 [arch, on run rGONE123] wider blocks" in section
    assert "## In flight" not in render_context(
        LineageView(base, (best, base), (base, best), (), (best,), ()), "opt", 0.1, "score",
        "minimize")


def test_context_sections_are_size_capped():
    many = tuple(trial(n, parent="r0", notes="x" * 300) for n in range(1, 400))
    view = LineageView(trial(0), many[:20], many[:1], many, many, ())
    text = render_context(view, "opt", 0.1, "score", "minimize")
    assert "truncated to fit the context budget" in text
    assert len(text.encode()) < 4000 + 8000 + 10 * 400 + 1000


def test_saturation_needs_five_flat_or_failed_trials():
    flat = tuple(trial(n, delta=0.01) for n in range(5))
    assert saturated(flat, 0.05)
    assert not saturated(flat[:4], 0.05)
    assert not saturated((trial(9, delta=-0.5),) + flat[:4], 0.05)
    assert saturated(tuple(trial(n, "crash") for n in range(5)), 0.05)


def test_lineage_path_and_tree_rows():
    assert lineage_path(None, "") == ""
    assert lineage_path("r0", "") == "/r0/"
    assert lineage_path("r1", "/r0/") == "/r0/r1/"
    rows = tree_rows([trial(0), trial(1, parent="r0"), trial(2, parent="r1"),
                      trial(3, parent="r0")])
    assert [(d, t.number) for d, t in rows] == [(0, 0), (1, 1), (2, 2), (1, 3)]
