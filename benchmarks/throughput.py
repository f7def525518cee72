"""Benchmark: trials per hour against --workers, for the local and the Ray executor, and a load
run of many workers against one `mlflow server --workers 1`.

The environment is the toy one (tests/assets/toy_project) made sleep-bound: one seed, every
trial's recipe sleeping --sleep seconds, and `resources: {cpus: 0.25}`, so eight slots fit on two
cores and the machine is not the limit. A scripted specialist proposes a distinct sleeping edit
on the baseline each turn. Throughput counts the trials after the baseline (which runs alone),
from the first one's start to the last one's end in MLflow; the harness overhead of a trial is
its MLflow run's span less the engine's own `trial_seconds` (queueing, recording, polling).

Everything runs inside a network namespace of its own (`unshare -n`, as root: Ray binds
127.0.0.1 there and nothing leaves the machine). Prints tables and logs each row to MLflow
(experiment `benchmarks`, the store given by --tracking-uri).

    python benchmarks/throughput.py --workers 1,2,4,8 --executors local,ray
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from mlflow_autoresearch import tags
from mlflow_autoresearch.campaign import Settings, run_campaign
from mlflow_autoresearch.testing import ScriptedAgent, replace_in
from mlflow_autoresearch.testing.server import start_mlflow_server

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "tests" / "assets"
ISOLATED = "AUTORESEARCH_BENCH_NETNS"


def isolate() -> None:
    """Re-run this script inside a fresh network namespace with only loopback up."""
    if os.environ.get(ISOLATED):
        return
    env = {**os.environ, ISOLATED: "1", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    argv = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
            sys.executable, *sys.argv]
    os.execvpe("unshare", argv, env)


def sleepy_env(folder: Path) -> Path:
    """The toy environment with one seed and a quarter of a core per trial."""
    shutil.copytree(ASSETS / "toy_project", folder / "toy_project")
    shutil.copytree(ASSETS / "evaluators", folder / "evaluators")
    spec_path = folder / "toy_project" / "autoresearch.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec.update(seeds=[0], resources={"cpus": 0.25},
                evaluator=str(folder / "evaluators" / "toy.py"))
    spec_path.write_text(yaml.safe_dump(spec))
    return folder / "toy_project"


def sleeper(trials: int, seconds: float) -> ScriptedAgent:
    script = [(f"sleep {i}",
               replace_in("recipe/toy.py", "SLEEP = 0.0", f"SLEEP = {seconds}  # {i}"))
              for i in range(trials)]
    return ScriptedAgent("opt", script)


def campaign(env_dir: Path, name: str, uri: str, work: Path, trials: int, sleep: float,
             **settings) -> tuple[list, object]:
    """Run one campaign; returns its trial runs after the baseline and the summary."""
    summary = run_campaign(Settings(str(env_dir), trials=trials, tracking_uri=uri, experiment=name,
                                    workdir=work, **settings),
                           {"opt": sleeper(trials, sleep)}, echo=lambda line: None)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name).experiment_id
    runs = client.search_runs([exp], f"tags.`{tags.TRIAL}` != '0'", max_results=10_000)
    return runs, summary


def throughput(runs) -> tuple[float, float, float]:
    """(trials per hour, median and max harness overhead per trial in seconds)."""
    start = min(r.info.start_time for r in runs) / 1000
    end = max(r.info.end_time for r in runs) / 1000
    overhead = [(r.info.end_time - r.info.start_time) / 1000 - r.data.metrics[tags.TRIAL_SECONDS]
                for r in runs]
    return len(runs) / (end - start) * 3600, statistics.median(overhead), max(overhead)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--executors", default="local,ray")
    parser.add_argument("--waves", type=int, default=2, help="trials per run = waves x workers")
    parser.add_argument("--sleep", type=float, default=8.0, help="seconds each recipe sleeps")
    parser.add_argument("--load-workers", type=int, default=8)
    parser.add_argument("--load-trials", type=int, default=50)
    parser.add_argument("--load-sleep", type=float, default=1.0)
    parser.add_argument("--tracking-uri", default=f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    args = parser.parse_args()
    isolate()
    log = MlflowClient(args.tracking_uri)
    bench = log.get_experiment_by_name("benchmarks")
    bench_id = bench.experiment_id if bench else log.create_experiment("benchmarks")
    machine = f"{socket.gethostname()}, {len(os.sched_getaffinity(0))} cores"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env_dir = sleepy_env(tmp)
        uri = f"sqlite:///{tmp / 'bench.db'}"
        print(f"throughput, {args.sleep:g} s per recipe, {args.waves} waves, on {machine}")
        print(f"{'executor':<9}{'workers':>8}{'trials':>8}{'trials/h':>10}{'x one slot':>12}"
              f"{'/ N':>7}{'overhead p50 s':>16}{'max s':>8}")
        for executor in args.executors.split(","):
            single = None
            for workers in map(int, args.workers.split(",")):
                trials = args.waves * workers
                runs, _ = campaign(env_dir, f"tp-{stamp}-{executor}-{workers}", uri,
                                   tmp / "work", trials, args.sleep, workers=workers,
                                   executor=executor)
                per_hour, p50, worst = throughput(runs)
                single = single or per_hour
                speedup = per_hour / single
                print(f"{executor:<9}{workers:>8}{len(runs):>8}{per_hour:>10.0f}{speedup:>12.2f}"
                      f"{speedup / workers:>7.2f}{p50:>16.3f}{worst:>8.3f}")
                run = log.create_run(bench_id, run_name=f"throughput-{executor}-{workers}",
                                     tags={"benchmark": "throughput", "machine": machine})
                for key, value in {"trials_per_hour": per_hour, "speedup": speedup,
                                   "efficiency": speedup / workers, "overhead_p50_s": p50,
                                   "overhead_max_s": worst, "workers": workers}.items():
                    log.log_metric(run.info.run_id, key, value)
                log.set_terminated(run.info.run_id)
        load(args, tmp, env_dir, log, bench_id, machine)


def load(args, tmp: Path, env_dir: Path, log: MlflowClient, bench_id: str, machine: str) -> None:
    """N workers x M trials against one `mlflow server --workers 1`: runs lost, record times."""
    port = 5600 + os.getpid() % 1000
    server = start_mlflow_server(tmp / "server", port)
    try:
        runs, summary = campaign(env_dir, "load", f"http://127.0.0.1:{port}", tmp / "work-load",
                                 args.load_trials, args.load_sleep, workers=args.load_workers)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    finished = [r for r in runs if r.info.status == "FINISHED" and tags.LABEL in r.data.tags]
    lost = args.load_trials - len(finished)
    cut = statistics.quantiles(summary.record_seconds, n=20)
    p50, p95 = statistics.median(summary.record_seconds), cut[18]
    print(f"\nload: {args.load_workers} workers x {args.load_trials} trials against one "
          f"mlflow server --workers 1")
    print(f"{'runs lost':>10}{'record p50 s':>14}{'record p95 s':>14}")
    print(f"{lost:>10}{p50:>14.3f}{p95:>14.3f}")
    run = log.create_run(bench_id, run_name="throughput-load",
                         tags={"benchmark": "throughput-load", "machine": machine})
    for key, value in {"runs_lost": lost, "record_p50_s": p50, "record_p95_s": p95,
                       "workers": args.load_workers, "trials": args.load_trials}.items():
        log.log_metric(run.info.run_id, key, value)
    log.set_terminated(run.info.run_id)


if __name__ == "__main__":
    main()
