"""Toy recipe for the harness's tests: least squares by gradient descent, well under a second.

Edits of the knobs below give every label the harness must record: MODE = "crash" raises,
"hang" sleeps past any budget, "nan" predicts NaN, "peek" reads the private targets, "tamper"
writes its own score into its MLflow run; too few STEPS misses the gate.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

STEPS = 60  # gradient steps
LR = 0.1  # step size
MODE = "normal"  # normal | crash | hang | nan | tamper
SLEEP = 0.0  # seconds of pretend work before training


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
        import mlflow

        mlflow.MlflowClient().log_metric(os.environ["MLFLOW_RUN_ID"], "score", -1.0, step=10**6)
    np.save(Path(args.out_dir) / "predictions.npy", preds)
    (Path(args.out_dir) / "result.json").write_text(json.dumps({"mse": 0.0}))


if __name__ == "__main__":
    main()
