"""Benchmark: how machine load moves an environment's time score, on the wall and the CPU basis.

Measures the unmodified recipe (`autoresearch evaluate`, the real harness and evaluator) K times
with the machine as it is, then K times with every core kept busy by a spinning process, each in
a session of its own (as another user's job would be: Linux shares CPU between sessions first).
Each evaluation reports both bases (`wall_seconds`, `cpu_seconds`: the mean per seed of the
harness-measured wall time and of the CPU time of the seed's process tree). Prints the spread
of each and logs it to MLflow (experiment `benchmarks`, --tracking-uri).

    python benchmarks/time_basis_spread.py airbench96 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from mlflow_autoresearch.campaign import Settings, evaluate_recipe
from mlflow_autoresearch.store import MlflowStore


def measure(env: str, profile: str, repeats: int, workdir: Path, uri: str) -> list[dict]:
    found = []
    for _ in range(repeats):
        trial = evaluate_recipe(Settings(env, profile, 0, uri, workdir=workdir),
                                echo=lambda line: None)
        metrics = MlflowStore(uri).raw(trial.run_id).metrics
        found.append({"wall": metrics["wall_seconds"], "cpu": metrics["cpu_seconds"]})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("environment", nargs="?", default="airbench96")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'spread.db'}"
        workdir = Path(tmp) / "work"
        rows["idle"] = measure(args.environment, args.profile, args.repeats, workdir, uri)
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                     start_new_session=True) for _ in range(os.cpu_count() or 1)]
        time.sleep(1)
        try:
            rows["busy"] = measure(args.environment, args.profile, args.repeats, workdir, uri)
        finally:
            for proc in spinners:
                proc.kill()
    table = ["| machine | basis | mean s | min s | max s | spread (max - min) s | std s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name("benchmarks")
    experiment_id = (experiment.experiment_id if experiment
                     else client.create_experiment("benchmarks"))
    run = client.create_run(experiment_id, run_name=f"time_basis_spread-{args.environment}")
    for load, samples in rows.items():
        for basis in ("wall", "cpu"):
            values = [s[basis] for s in samples]
            spread, std = max(values) - min(values), statistics.stdev(values)
            table.append(f"| {load} | {basis} | {statistics.mean(values):.3f} | "
                         f"{min(values):.3f} | {max(values):.3f} | {spread:.3f} | {std:.3f} |")
            client.log_metric(run.info.run_id, f"{load}_{basis}_mean", statistics.mean(values))
            client.log_metric(run.info.run_id, f"{load}_{basis}_spread", spread)
            client.log_metric(run.info.run_id, f"{load}_{basis}_std", std)
    idle_cpu = statistics.mean(s["cpu"] for s in rows["idle"])
    busy_cpu = statistics.mean(s["cpu"] for s in rows["busy"])
    idle_wall = statistics.mean(s["wall"] for s in rows["idle"])
    busy_wall = statistics.mean(s["wall"] for s in rows["busy"])
    table.append(f"\nbusy / idle mean: wall x{busy_wall / idle_wall:.2f}, "
                 f"cpu x{busy_cpu / idle_cpu:.2f} ({args.environment} {args.profile}, "
                 f"{args.repeats} repeats each)")
    print("\n".join(table))
    client.log_text(run.info.run_id, "\n".join(table), "time_basis_spread.md")
    client.set_terminated(run.info.run_id)


if __name__ == "__main__":
    main()
