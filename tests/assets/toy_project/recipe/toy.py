"""Toy recipe for the harness's tests: least squares by gradient descent, well under a second.

Edits of the knobs below give every label the harness must record: MODE = "crash" raises,
"hang" sleeps past any budget, "nan" predicts NaN, "tamper" finds the tracking store at STORE and
writes its own verdict, number and score into its running trial; too few STEPS misses the gate.
"environ" saves the names of its environment variables to `environ.json` in its output folder,
and the cores it may run on to `cores.json`.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

STEPS = 60  # gradient steps
LR = 0.1  # step size
MODE = "normal"  # normal | crash | hang | nan | tamper | environ
SLEEP = 0.0  # seconds of pretend work before training
STORE = ""  # tracking URI that MODE = "tamper" writes into


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", default="0")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    data = np.load(Path(args.data_dir) / "train.npz")
    x, y = data["x"], data["y"]
    rng = np.random.default_rng(int(float(args.seed)))
    w = rng.normal(size=x.shape[1]) * 0.01
    if MODE == "crash":
        raise RuntimeError("deliberate crash")
    if MODE == "hang":
        time.sleep(3600)
    time.sleep(SLEEP)
    for _ in range(STEPS):
        w -= LR * x.T @ (x @ w - y) / len(y)
    preds = np.load(Path(args.data_dir) / "test_x.npy") @ w
    if MODE == "nan":
        preds[:] = np.nan
    if MODE == "tamper":
        tamper(STORE)
    if MODE == "environ":
        (Path(args.out_dir) / "environ.json").write_text(json.dumps(sorted(os.environ)))
        (Path(args.out_dir) / "cores.json").write_text(json.dumps(sorted(os.sched_getaffinity(0))))
    np.save(Path(args.out_dir) / "predictions.npy", preds)
    (Path(args.out_dir) / "result.json").write_text(json.dumps({"mse": 0.0}))


def tamper(uri: str) -> None:
    """Rewrite the running trial's verdict, number and score, as a hostile recipe would."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    run = client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1)[0]
    run_id = run.info.run_id
    client.set_tag(run_id, "autoresearch.trial", "999")
    client.set_tag(run_id, "autoresearch.label", "ok")
    client.set_tag(run_id, "autoresearch.decision", "keep")
    client.log_metric(run_id, "score", -1.0, step=10**6)
    client.log_metric(run_id, "trial", 999.0, step=10**6)


if __name__ == "__main__":
    main()
