"""Benchmark: the loop's lineage queries on a store of N synthetic trials, before and after ANALYZE.

Each trial run is written the way `MlflowStore` writes one (the trial contract's tags, the
`trial` and `diff_lines` metrics, the label tag on every recorded run, a lineage path) in a random
lineage tree, ~20% failures (some harness_abort). Times each query the loop makes, then the
store's whole lineage view for one turn and that turn with the best read at record time. Prints a
table of median milliseconds and logs it to MLflow (the store given by --tracking-uri, experiment
`benchmarks`). The loop runs ANALYZE at every start; this shows why.

    python benchmarks/lineage_queries.py --runs 10000     # ~5 min to load on a 2-core machine
    python benchmarks/lineage_queries.py --runs 10000 --db /tmp/bench10k.db   # load once, reuse
"""

from __future__ import annotations

import argparse
import random
import re
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from mlflow_autoresearch import tags
from mlflow_autoresearch.records import Direction, FailureLabel
from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.store import _search

SPECIALISTS = ("arch", "opt", "aug", "loss", "reg")
FAILURES = (FailureLabel.CRASH, FailureLabel.DISQUALIFIED, FailureLabel.TRAIN_BUDGET_OVERRUN,
            FailureLabel.HARNESS_ABORT)
EXPERIMENT = "bench"


def load(client: MlflowClient, experiment_id: str, n: int, rng: random.Random) -> list[str]:
    """N recorded trials: trial 0 is the baseline, every other one a child of a recent kept one."""
    ids: list[str] = []
    paths: dict[str, str] = {}
    kept: list[str] = []
    for number in range(n):
        parent = rng.choice(kept[-20:]) if kept else None
        label = FailureLabel.OK if number == 0 or rng.random() > 0.2 else rng.choice(FAILURES)
        path = "" if parent is None else (paths[parent] or "/") + parent + "/"
        specialist = "baseline" if number == 0 else rng.choice(SPECIALISTS)
        run_tags = {tags.SCHEMA_VERSION: tags.SCHEMA, tags.TRIAL: str(number),
                    tags.SPECIALIST: specialist, tags.HYPOTHESIS: f"hypothesis {number}",
                    tags.LINEAGE_PATH: path, tags.MLFLOW_RUN_NAME: f"t{number:04d}-{specialist}"}
        if parent:
            run_tags.update({tags.PARENT: parent, tags.MLFLOW_PARENT: parent})
        diff_lines = 0.0 if number == 0 else float(rng.randint(1, 80))
        # create_trial: the proposal's tags, then the `trial` and `diff_lines` metrics
        run = client.create_run(experiment_id, run_name=run_tags[tags.MLFLOW_RUN_NAME],
                                tags=run_tags)
        run_id = run.info.run_id
        client.log_batch(run_id, metrics=[Metric(tags.TRIAL_NUMBER, float(number), 0, 0),
                                          Metric(tags.DIFF_LINES, diff_lines, 0, 0)])
        # finish_trial: one final batch, metrics then tags with the label, then the status
        metrics = [Metric(tags.FAILURE_CODE, float(label), 0, 0),
                   Metric(tags.TRIAL_NUMBER, float(number), 0, 0),
                   Metric(tags.DIFF_LINES, diff_lines, 0, 0)]
        final = {tags.LABEL: label.tag}
        if label is FailureLabel.OK:
            score = 5.0 - 0.0001 * number + rng.random() * 0.1
            keep = number == 0 or rng.random() < 0.1
            final[tags.DECISION] = "baseline" if number == 0 else "keep" if keep else "discard"
            metrics.append(Metric(tags.SCORE, score, 0, 0))
        client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in final.items()])
        failed = label is FailureLabel.HARNESS_ABORT
        client.set_terminated(run_id, RunStatus.to_string(
            RunStatus.FAILED if failed else RunStatus.FINISHED))
        ids.append(run_id)
        paths[run_id] = path
        if final.get(tags.DECISION) in ("baseline", "keep"):
            kept.append(run_id)
    return ids


def open_bench(path: Path, n: int) -> tuple[MlflowStore, str, float | None]:
    """The benchmark store at `path`, loaded with `n` trials unless it already holds them."""
    store = MlflowStore(f"sqlite:///{path}")
    found = store.client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        newest = store.client.search_runs([found.experiment_id], "", max_results=1)
        held = int(newest[0].data.tags[tags.TRIAL]) + 1 if newest else 0
        if held != n:
            raise SystemExit(f"{path} holds {held} trials, not {n}: pass --runs {held}")
        return store, found.experiment_id, None
    experiment_id = store.client.create_experiment(
        EXPERIMENT, tags={tags.KIND: tags.CAMPAIGN_KIND, tags.DIRECTION: "minimize"})
    started = time.perf_counter()
    load(store.client, experiment_id, n, random.Random(0))
    return store, experiment_id, time.perf_counter() - started


def forget_statistics(path: Path) -> None:
    """Drop what ANALYZE left in a reused store, so "before ANALYZE" means it again."""
    with sqlite3.connect(path) as db:
        for table in ("sqlite_stat1", "sqlite_stat4"):
            db.execute(f"DROP TABLE IF EXISTS {table}")


def time_queries(store: MlflowStore, experiment_id: str, repeats: int) -> dict[str, float]:
    """Median milliseconds of each query the loop makes, then of the store's view for one turn
    and of that turn with the best read at record time."""
    client, minimize, spec = store.client, Direction.MINIMIZE, "opt"
    best = store.best(experiment_id, minimize)
    baseline = store.baseline(experiment_id)
    queries = {
        "leaderboard top 20": lambda: _search.leaderboard(client, experiment_id, minimize),
        "ancestors of the best": lambda: _search.ancestors(client, best.run_id),
        "children of the best": lambda: _search.children(client, experiment_id, best.run_id, 50),
        "recent 30": lambda: _search.recent(client, experiment_id),
        "a specialist's last 5": lambda: _search.recent(client, experiment_id, 5, spec),
        "recent + last 5, one read": lambda: _search.recent_and_mine(client, experiment_id,
                                                                      spec, 5),
        "next trial number": lambda: _search.next_number(client, experiment_id),
        "baseline": lambda: store.baseline(experiment_id),
        "best": lambda: store.best(experiment_id, minimize),
        "view (one turn)": lambda: store.view(experiment_id, minimize, spec, baseline),
        "one turn: view + best": lambda: (store.view(experiment_id, minimize, spec, baseline),
                                          store.best(experiment_id, minimize)),
    }
    out = {}
    for name, query in queries.items():
        query()  # warm: the first call pays for connections and imports
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            query()
            times.append((time.perf_counter() - start) * 1000)
        out[name] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--db", type=Path, default=None,
                        help="the benchmark store: loaded on first use, reused after "
                             "[default: a temporary one]")
    parser.add_argument("--tracking-uri", default=None,
                        help="where to log the results [default: ./mlflow.db]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db.resolve() if args.db else Path(tmp) / "bench.db"
        if path.exists():
            forget_statistics(path)
        store, experiment_id, load_s = open_bench(path, args.runs)
        before = time_queries(store, experiment_id, args.repeats)
        store.analyze()  # as the loop does at every start, on the same client
        after = time_queries(store, experiment_id, args.repeats)
    if load_s is not None:
        print(f"{args.runs} trials loaded in {load_s:.1f} s "
              f"({1000 * load_s / args.runs:.1f} ms/trial)")
    else:
        print(f"{args.runs} trials reused from {path}")
    print(f"{'query':<28}{'ms before ANALYZE':>19}{'ms after':>10}")
    for name in before:
        print(f"{name:<28}{before[name]:>19.1f}{after[name]:>10.1f}")
    log = MlflowStore(args.tracking_uri).client
    exp = log.get_experiment_by_name("benchmarks")
    exp_id = exp.experiment_id if exp else log.create_experiment("benchmarks")
    run = log.create_run(exp_id, run_name=f"lineage-queries-{args.runs}",
                         tags={"benchmark": "lineage_queries"})
    metrics = [Metric("runs", args.runs, 0, 0)]
    if load_s is not None:
        metrics.append(Metric("load_ms_per_trial", 1000 * load_s / args.runs, 0, 0))
    for name in before:
        key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        metrics += [Metric(f"{key}_ms_before_analyze", before[name], 0, 0),
                    Metric(f"{key}_ms", after[name], 0, 0)]
    log.log_batch(run.info.run_id, metrics=metrics, tags=[RunTag("runs", str(args.runs))])
    log.set_terminated(run.info.run_id)


if __name__ == "__main__":
    main()
