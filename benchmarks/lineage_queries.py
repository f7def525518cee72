"""Benchmark: the loop's lineage queries on a store of N synthetic trials, before and after ANALYZE.

Each trial run carries the real trial contract (tags, metrics, lineage path) in a random lineage
tree, ~20% failures. Prints a table of median milliseconds and logs it to MLflow (the store given
by --tracking-uri, experiment `benchmarks`). The loop runs ANALYZE at every start; this shows why.

    python benchmarks/lineage_queries.py --runs 10000     # ~2 min to load on a 2-core machine
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from mlflow_autoresearch import tags, tracking
from mlflow_autoresearch.records import Direction, FailureLabel

SPECIALISTS = ("arch", "opt", "aug", "loss", "reg")


def load(client: MlflowClient, experiment_id: str, n: int, rng: random.Random) -> list[str]:
    ids: list[str] = []
    paths: dict[str, str] = {}
    kept: list[str] = []
    for number in range(n):
        parent = rng.choice(kept[-20:]) if kept else None
        label = FailureLabel.OK if number == 0 or rng.random() > 0.2 else rng.choice(
            [FailureLabel.CRASH, FailureLabel.DISQUALIFIED, FailureLabel.TRAIN_BUDGET_OVERRUN])
        path = "" if parent is None else (paths[parent] or "/") + parent + "/"
        run_tags = {tags.TRIAL: str(number), tags.SPECIALIST: rng.choice(SPECIALISTS),
                    tags.HYPOTHESIS: f"hypothesis {number}", tags.LABEL: label.tag,
                    tags.LINEAGE_PATH: path}
        if parent:
            run_tags.update({tags.PARENT: parent, tags.MLFLOW_PARENT: parent})
        metrics = [Metric(tags.FAILURE_CODE, float(label), 0, 0)]
        if label is FailureLabel.OK:
            score = 5.0 - 0.0001 * number + rng.random() * 0.1
            keep = number == 0 or rng.random() < 0.1
            run_tags[tags.DECISION] = "baseline" if number == 0 else "keep" if keep else "discard"
            metrics.append(Metric(tags.SCORE, score, 0, 0))
        run = client.create_run(experiment_id, tags=run_tags)
        client.log_batch(run.info.run_id, metrics=metrics)
        client.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
        paths[run.info.run_id] = path
        if run_tags.get(tags.DECISION) in ("baseline", "keep"):
            kept.append(run.info.run_id)
    return ids


def time_queries(client: MlflowClient, experiment_id: str, probe: str,
                 repeats: int) -> dict[str, float]:
    queries = {
        "leaderboard top 20": lambda: tracking.search_leaderboard(
            client, experiment_id, Direction.MINIMIZE),
        "ancestors (path + IN)": lambda: tracking.search_ancestors(client, probe),
        "children of a trial": lambda: tracking.search_children(client, experiment_id, probe),
        "recent 30": lambda: tracking.search_recent(client, experiment_id),
        "a specialist's last 5": lambda: tracking.search_recent(client, experiment_id, 5, "opt"),
        "next trial number": lambda: tracking.next_trial_number(client, experiment_id),
    }
    out = {}
    for name, query in queries.items():
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
    parser.add_argument("--tracking-uri", default=None,
                        help="where to log the results [default: ./mlflow.db]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        client = tracking.connect(f"sqlite:///{Path(tmp) / 'bench.db'}")
        experiment_id = client.create_experiment("bench")
        started = time.perf_counter()
        ids = load(client, experiment_id, args.runs, random.Random(0))
        load_s = time.perf_counter() - started
        probe = ids[-1]
        before = time_queries(client, experiment_id, probe, args.repeats)
        tracking.analyze(client)
        after = time_queries(client, experiment_id, probe, args.repeats)
    print(f"{args.runs} trials loaded in {load_s:.1f} s ({1000 * load_s / args.runs:.1f} ms/trial)")
    print(f"{'query':<26}{'ms before ANALYZE':>19}{'ms after':>10}")
    for name in before:
        print(f"{name:<26}{before[name]:>19.1f}{after[name]:>10.1f}")
    log = tracking.connect(args.tracking_uri)
    exp = log.get_experiment_by_name("benchmarks")
    exp_id = exp.experiment_id if exp else log.create_experiment("benchmarks")
    run = log.create_run(exp_id, run_name=f"lineage-queries-{args.runs}",
                         tags={"benchmark": "lineage_queries"})
    metrics = [Metric("runs", args.runs, 0, 0), Metric("load_ms_per_trial",
                                                       1000 * load_s / args.runs, 0, 0)]
    for name in before:
        key = re.sub(r"[^a-z0-9]+", "_", name).strip("_")
        metrics += [Metric(f"{key}_ms_before_analyze", before[name], 0, 0),
                    Metric(f"{key}_ms", after[name], 0, 0)]
    log.log_batch(run.info.run_id, metrics=metrics, tags=[RunTag("runs", str(args.runs))])
    log.set_terminated(run.info.run_id)


if __name__ == "__main__":
    main()
