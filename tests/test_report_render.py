"""The campaign report renderer on hand-built runs: files, figures, tables, the lineage page."""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser

import pytest
from PIL import Image

from mlflow_autoresearch import tags
from mlflow_autoresearch.records import Direction
from mlflow_autoresearch.report import Campaign, best_score_steps, compare, write_report
from mlflow_autoresearch.store.base import StoredRun

BASE = "http://mlflow.test"
TOKENS_IN = tags.AGENT_METRIC_PREFIX + tags.LLM_INPUT_TOKENS
TOKENS_OUT = tags.AGENT_METRIC_PREFIX + tags.LLM_OUTPUT_TOKENS
COST = tags.AGENT_METRIC_PREFIX + tags.LLM_COST_USD
CRASH_RGB = (0xd6, 0x27, 0x28)  # the crash label's colour
EVIL = "<script>alert('x')</script> & wider"


def run(n, spec, label=None, decision=None, score=None, delta=None, parent=None,
        in_domain=None, status="FINISHED", hypothesis=None, **metrics) -> StoredRun:
    t = {tags.TRIAL: str(n), tags.SPECIALIST: spec,
         tags.HYPOTHESIS: hypothesis or f"hypothesis {n}"}
    m = {tags.TRIAL_NUMBER: float(n), **metrics}
    for key, value in [(tags.LABEL, label), (tags.DECISION, decision), (tags.PARENT, parent),
                       (tags.AUDIT_IN_DOMAIN, in_domain)]:
        if value is not None:
            t[key] = value
    for key, value in [(tags.SCORE, score), (tags.DELTA_VS_BEST, delta)]:
        if value is not None:
            m[key] = value
    return StoredRun(f"r{n}", f"t{n:04d}", status, t, m, ())


def campaign(name="toy", direction=Direction.MINIMIZE) -> Campaign:
    return Campaign(name, "7", direction, "val_loss",
                    lambda rid: f"{BASE}/#/experiments/7/runs/{rid}")


RUNS = [
    run(0, "baseline", "ok", "baseline", 1.0),
    run(1, "opt", "ok", "keep", 0.9, -0.1, "r0", "true"),
    run(2, "arch", "ok", "discard", 0.95, 0.05, "r1", "false"),
    run(3, "arch", "crash", parent="r1", in_domain="true"),
    run(4, "llm", "ok", "keep", 0.75, -0.15, "r1", "false", hypothesis=EVIL,
        **{TOKENS_IN: 1000.0, TOKENS_OUT: 200.0, COST: 0.0123}),
    run(5, "llm", "ok", "discard", 0.85, 0.1, "r4", "unknown",
        **{TOKENS_IN: 500.0, TOKENS_OUT: 100.0, COST: 0.01}),
    run(6, "opt", "preflight_crash", parent="r4"),  # from before the audit: no in_domain tag
    run(7, "opt", parent="r4", status="RUNNING"),
]


@pytest.fixture
def report(tmp_path):
    return write_report(campaign(), RUNS, tmp_path / "report")


def table_row(markdown: str, first: str) -> list[str]:
    line = next(x for x in markdown.splitlines() if x.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def check_png(path, rgb=None):
    with Image.open(path) as img:
        assert img.size == (900, 500)
        colours = {c for _, c in img.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert len(colours) > 10, f"{path.name} looks blank"
    if rgb is not None:
        assert rgb in colours


def test_every_file_is_written_and_figures_are_images(report, tmp_path):
    folder = tmp_path / "report"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["progress.png", "specialists.png", "labels.png", "report.md", "lineage.html"])
    assert all(p.parent == folder and p.exists() for p in report.files)
    check_png(report.progress, CRASH_RGB)  # failures without a score are still drawn
    check_png(report.specialists, CRASH_RGB)
    check_png(report.labels, CRASH_RGB)
    s = report.summary
    assert (s.trials, s.keeps, s.in_flight, s.best_score, s.best_trial) == (7, 2, 1, 0.75, 4)
    assert (s.baseline_score, s.baseline_trial) == (1.0, 0)


def test_markdown_summary_table_and_leaderboard(report):
    md = report.markdown.read_text()
    assert md.startswith("# Campaign report: toy")
    assert "- Trials: 7 (1 more in flight, not counted)" in md
    assert "- Keeps: 2" in md
    assert f"- Best score: 0.75 at [t0004]({BASE}/#/experiments/7/runs/r4) (llm)" in md
    assert "- Improvement: 0.25 better than the baseline (25%)" in md
    for name in ("progress.png", "specialists.png", "labels.png"):
        assert f"]({name})" in md
    assert table_row(md, "opt") == ["opt", "2", "1", "50%", "-0.1", "ok 1, preflight_crash 1",
                                    "0%", "-", "-"]
    assert table_row(md, "arch") == ["arch", "2", "0", "0%", "-", "crash 1, ok 1", "50%", "-",
                                     "-"]
    assert table_row(md, "llm") == ["llm", "2", "1", "50%", "-0.15", "ok 2", "100%", "1,800",
                                    "$0.0223"]
    assert table_row(md, "baseline")[1:5] == ["1", "0", "0%", "-"]
    board = [x for x in md.splitlines() if x.startswith("| 1 |") or x.startswith("| 2 |")
             or x.startswith("| 3 |")]
    assert [x.split("|")[2].strip()[:7] for x in board] == ["[t0004]", "[t0001]", "[t0000]"]
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert "t0007" not in md


class Tree(HTMLParser):
    """Checks that tags nest, and records each node's class, link and nearest node ancestor."""

    VOID = {"meta", "br", "img", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, str | None]] = []
        self.nodes: dict[str, dict] = {}
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.scripts += tag == "script"
        node = a.get("data-run-id")
        owner = next((rid for _, rid in reversed(self.stack) if rid), None)
        if node:
            assert node not in self.nodes, f"two nodes for {node}"
            self.nodes[node] = {"class": a.get("class", "").split(), "parent": owner,
                                "tag": tag, "links": []}
        if tag == "a" and owner:
            self.nodes[owner]["links"].append((a.get("href"), a.get("target")))
        if tag not in self.VOID:
            self.stack.append((tag, node))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1][0] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def test_lineage_page_nests_kept_trials_and_lists_children(report):
    page = report.lineage.read_text()
    tree = Tree()
    tree.feed(page)
    tree.close()
    assert tree.stack == [] and tree.scripts == 0
    nodes = tree.nodes
    assert sorted(r for r, n in nodes.items() if "kept" in n["class"]) == ["r0", "r1", "r4"]
    assert sorted(r for r, n in nodes.items() if "child" in n["class"]) == ["r2", "r3", "r5",
                                                                             "r6"]
    assert "r7" not in nodes
    assert {r: n["parent"] for r, n in nodes.items()} == {
        "r0": None, "r1": "r0", "r2": "r1", "r3": "r1", "r4": "r1", "r5": "r4", "r6": "r4"}
    for rid, node in nodes.items():
        assert node["links"][0] == (f"{BASE}/#/experiments/7/runs/{rid}", "_top")
    assert page.count("<details>") == 2  # r1's and r4's other children
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; wider" in page
    assert "http" not in page.replace(BASE, "")  # nothing external but the run links
    assert "t0004" in page and "preflight_crash" in page and "in_domain false" in page


def test_best_score_steps_both_directions():
    assert best_score_steps(Direction.MINIMIZE, RUNS) == [
        (0, 1.0), (1, 0.9), (2, 0.9), (3, 0.9), (4, 0.75), (5, 0.75), (6, 0.75)]
    up = [run(0, "baseline", "crash"), run(1, "baseline", "ok", "baseline", 0.5),
          run(2, "opt", "ok", "keep", 0.6, 0.1, "r1"), run(3, "opt", "ok", "discard", 0.9),
          run(4, "opt", "ok", "keep", 0.7, 0.1, "r2"), run(5, "opt", status="RUNNING")]
    assert best_score_steps(Direction.MAXIMIZE, up) == [(1, 0.5), (2, 0.6), (3, 0.6), (4, 0.7)]


def test_compare_table_png_and_mixed_directions(tmp_path):
    longer = [run(0, "baseline", "ok", "baseline", 2.0)] + [
        run(n, "opt", "ok", "keep", 2.0 - n / 10, -0.1, f"r{n - 1}") for n in range(1, 10)]
    out = tmp_path / "compare.png"
    table = compare([(campaign("short"), RUNS), (campaign("long"), longer)], out)
    head, short, long_ = table.splitlines()
    assert head.split() == ["campaign", "trials", "keeps", "best", "best@t8", "best@t16",
                            "best@t24", "labels"]
    assert short.split() == ["short", "7", "2", "0.75", "-", "-", "-", "ok", "5,", "crash",
                             "1,", "preflight_crash", "1"]
    assert long_.split() == ["long", "10", "9", "1.1", "1.2", "-", "-", "ok", "10"]
    check_png(out)
    with pytest.raises(ValueError, match="different directions: a .minimize., b .maximize."):
        compare([(campaign("a"), RUNS), (campaign("b", Direction.MAXIMIZE), RUNS)],
                tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_empty_and_failed_only_campaigns_still_render(tmp_path):
    empty = write_report(campaign(), [run(0, "opt", status="RUNNING")], tmp_path / "empty")
    assert (empty.summary.trials, empty.summary.best_score) == (0, None)
    assert "- Best score: -" in empty.markdown.read_text()
    crashed = write_report(campaign(), [run(0, "baseline", "crash")], tmp_path / "crashed")
    check_png(crashed.progress, CRASH_RGB)
    assert 'class="node child"' in crashed.lineage.read_text()


def test_the_renderers_do_not_import_mlflow():
    """Only `report/publish.py` reaches MLflow, through the store; the figures, the page and the
    Markdown render from plain values."""
    code = ("import sys; import mlflow_autoresearch.report.write, mlflow_autoresearch.report"
            ".compare; assert 'mlflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
