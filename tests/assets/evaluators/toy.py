"""Evaluator of the toy environment (tests only): mean squared error against private targets."""

import argparse
import json
import os
from pathlib import Path

import numpy as np


def prepare(data_dir: Path) -> None:
    rng = np.random.default_rng(1234)
    w = rng.normal(size=8)
    x, test_x = rng.normal(size=(256, 8)), rng.normal(size=(128, 8))
    (data_dir / "public").mkdir(parents=True, exist_ok=True)
    (data_dir / "private").mkdir(parents=True, exist_ok=True)
    np.savez(data_dir / "public" / "train.npz", x=x, y=x @ w + 0.1 * rng.normal(size=256))
    np.save(data_dir / "public" / "test_x.npy", test_x)
    np.save(data_dir / "private" / "test_y.npy", test_x @ w)


def score(data_dir: Path, run_dir: Path, out: Path) -> None:
    harness = json.loads((run_dir / "harness.json").read_text())
    targets = np.load(data_dir / "private" / "test_y.npy")
    errors, label, excerpt = [], "ok", ""
    for seed in harness["seeds"]:
        preds_path = run_dir / seed["out_dir"] / "predictions.npy"
        if seed["timed_out"]:
            label, excerpt = "train_budget_overrun", f"seed {seed['seed']} killed"
            break
        if seed["exit_code"] != 0 or not preds_path.is_file():
            tail = (run_dir / seed["stderr"]).read_text().strip().splitlines() or [""]
            label, excerpt = "crash", tail[-1]
            break
        mse = float(np.mean((np.load(preds_path) - targets) ** 2))
        if not np.isfinite(mse):
            label, excerpt = "crash", f"seed {seed['seed']} predicted non-finite values"
            break
        errors.append(mse)
    if label == "ok" and len(errors) < len(harness["expected_seeds"]):
        label, excerpt = "crash", "not every seed ran"
    metrics = {"n_seeds": len(errors)}
    if errors:
        metrics["mse"] = float(np.mean(errors))
        if label == "ok" and metrics["mse"] > harness["gates"].get("mse", float("inf")):
            label, excerpt = "disqualified", f"mse {metrics['mse']:.4f} > {harness['gates']['mse']}"
    doc = {"schema": 2, "label": label, "score": metrics["mse"] if label == "ok" else None,
           "metrics": metrics, "gates": [g for g in harness["gates"] if g == "mse"],
           "excerpt": excerpt}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["prepare", "score"])
    parser.add_argument("--profile")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.data_dir)
    else:
        score(args.data_dir, args.run_dir, args.out)
