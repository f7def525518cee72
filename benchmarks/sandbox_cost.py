"""Benchmark: what the sandbox costs per seed process, side by side with `--sandbox off`.

Runs the toy environment's seed (numpy least squares, tests/assets/toy_project) through the
harness's real path (`run_seeds`: the Projects backend, the guard, the launcher) N times per
kind, alternating, and an empty command (`true`) the same way, plus once without the launcher at
all. Prints median and 90th-percentile milliseconds from `go` to exit, and logs them to MLflow
(experiment `benchmarks`, the store given by --tracking-uri).

    python benchmarks/sandbox_cost.py --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from mlflow_autoresearch.environment import load_environment
from mlflow_autoresearch.execution import CommandEvaluator, process
from mlflow_autoresearch.execution.projects import run_seeds
from mlflow_autoresearch.execution.sandbox import BWRAP, NONE, bwrap_works, for_environment
from mlflow_autoresearch.execution.workspace import materialise

TOY = Path(__file__).resolve().parent.parent / "tests" / "assets" / "toy_project"


def seed_ms(env, evaluator, workspace: Path, scratch: Path, kind: str) -> float:
    run_dir = Path(tempfile.mkdtemp(dir=scratch))
    result = run_seeds(env, workspace, run_dir, evaluator.public_dir, for_environment(kind, env))[0]
    assert result.exit_code == 0, (run_dir / result.stderr).read_text()
    return result.wall_seconds * 1000


def empty_ms(env, scratch: Path, kind: str | None) -> float:
    argv = ["true"] if kind is None else for_environment(kind, env).wrap(["true"])
    finished = process.run(argv, scratch, None, scratch / "out.txt", scratch / "err.txt")
    assert finished.exit_code == 0, (scratch / "err.txt").read_text()
    return finished.seconds * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    args = parser.parse_args()
    problem = bwrap_works()
    if problem:
        raise SystemExit(f"cannot compare: {problem}")
    env = load_environment(str(TOY))
    env = type(env)(**{**env.__dict__, "seeds": (0,)})
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        evaluator = CommandEvaluator(env, scratch / "data")
        evaluator.prepare(scratch / "logs")
        workspace = materialise(env, None, scratch / "workspace")
        for kind in (BWRAP, NONE):  # warm the page cache before timing
            seed_ms(env, evaluator, workspace, scratch, kind)
        for _ in range(args.repeats):
            for kind, label in ((BWRAP, "bwrap"), (NONE, "off")):
                samples.setdefault(f"seed, {label}", []).append(
                    seed_ms(env, evaluator, workspace, scratch, kind))
                samples.setdefault(f"true, {label}", []).append(empty_ms(env, scratch, kind))
            samples.setdefault("true, no launcher", []).append(empty_ms(env, scratch, None))
    rows = {name: (statistics.median(v), sorted(v)[int(0.9 * (len(v) - 1))])
            for name, v in samples.items()}
    cost = rows["seed, bwrap"][0] - rows["seed, off"][0]
    table = [f"| process ({args.repeats} each) | median ms | p90 ms |", "|---|---:|---:|"]
    table += [f"| {name} | {med:.1f} | {p90:.1f} |" for name, (med, p90) in rows.items()]
    table.append(f"\nsandbox cost per seed process (median bwrap - median off): {cost:.1f} ms")
    print("\n".join(table))
    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name("benchmarks")
    experiment_id = (experiment.experiment_id if experiment
                     else client.create_experiment("benchmarks"))
    run = client.create_run(experiment_id, run_name=f"sandbox_cost-{int(time.time())}")
    for name, (med, p90) in rows.items():
        key = name.replace(", ", "_").replace(" ", "_")
        client.log_metric(run.info.run_id, f"{key}_median_ms", med)
        client.log_metric(run.info.run_id, f"{key}_p90_ms", p90)
    client.log_metric(run.info.run_id, "sandbox_cost_ms", cost)
    client.log_text(run.info.run_id, "\n".join(table), "sandbox_cost.md")
    client.set_terminated(run.info.run_id)


if __name__ == "__main__":
    main()
