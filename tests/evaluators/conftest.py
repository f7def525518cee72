"""Fixtures for evaluator tests: the scripts loaded as modules, prepared tiny data, run builders.

Evaluators and recipes are plain scripts, not package modules, so they are loaded from their files.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EVALUATORS = ROOT / "evaluators"
AIRBENCH = ROOT / "projects" / "airbench96"


def load_script(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def evaluator() -> ModuleType:
    return load_script("evaluator_airbench96", EVALUATORS / "airbench96.py")


@pytest.fixture(scope="session")
def common(evaluator) -> ModuleType:
    return sys.modules["_common"]  # imported by the evaluator from evaluators/


@pytest.fixture(scope="session")
def recipe() -> ModuleType:
    return load_script("recipe_airbench96", AIRBENCH / "recipe" / "airbench96.py")


@pytest.fixture(scope="session")
def tiny_data(evaluator, tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("data") / "tiny"
    evaluator.prepare("tiny", data_dir)
    return data_dir


def predictions_with_accuracy(labels: np.ndarray, accuracy: float) -> np.ndarray:
    """Predictions that are right on all but round((1 - accuracy) * n) images."""
    wrong = round((1 - accuracy) * len(labels))
    predictions = labels.copy()
    predictions[:wrong] = (labels[:wrong] + 1) % 10
    return predictions


@pytest.fixture
def make_run(tmp_path, tiny_data) -> Callable[..., Path]:
    """Build a run dir: harness.json plus each seed's out/, stdout and stderr.

    Each seed is a dict: `accuracy` (crafted predictions), or `predictions` (an array written as
    is, or None for no file); optional `exit_code`, `timed_out`, `wall`, `stderr`, `result`
    (a result.json claim), `refused` (what the harness removed from out/), `cpu` (CPU seconds).
    Seeds absent from the list did not run.
    """
    labels = np.load(tiny_data / "private" / "test_labels.npy")

    def build(seeds: list[dict], expected: tuple[int, ...] = (0, 1, 2), gate: float = 0.98,
              budget: float = 60.0, time_basis: str = "wall") -> Path:
        run_dir = tmp_path / "run"
        entries = []
        for index, spec in enumerate(seeds):
            seed_dir = run_dir / "seeds" / str(index)
            out = seed_dir / "out"
            out.mkdir(parents=True)
            predictions = spec.get("predictions", "accuracy")
            if isinstance(predictions, str):
                predictions = predictions_with_accuracy(labels, spec["accuracy"])
            if predictions is not None:
                np.save(out / "test_predictions.npy", predictions)
            if "result" in spec:
                (out / "result.json").write_text(json.dumps(spec["result"]))
            (seed_dir / "stdout.txt").write_text("")
            (seed_dir / "stderr.txt").write_text(spec.get("stderr", ""))
            entries.append({"seed": index, "wall_seconds": spec.get("wall", 4.0),
                            "cpu_seconds": spec.get("cpu", 3.5),
                            "exit_code": spec.get("exit_code", 0),
                            "timed_out": spec.get("timed_out", False),
                            "out_dir": f"seeds/{index}/out", "stdout": f"seeds/{index}/stdout.txt",
                            "stderr": f"seeds/{index}/stderr.txt",
                            **({"refused": spec["refused"]} if "refused" in spec else {})})
        harness = {"schema": 1, "environment": "airbench96", "profile": "tiny", "workspace": "workspace",
                   "time_basis": time_basis,
                   "budgets": {"train_seconds": budget, "eval_seconds": 60},
                   "gates": {"accuracy": gate}, "expected_seeds": list(expected), "seeds": entries}
        (run_dir / "harness.json").write_text(json.dumps(harness))
        return run_dir

    return build
