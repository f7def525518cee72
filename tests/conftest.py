"""Shared fixtures: a real local MLflow store per test and copies of the test environments."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "assets"


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_TRUNCATE_LONG_VALUES", "false")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)


@pytest.fixture
def store(tmp_path) -> str:
    """A fresh SQLite tracking URI in the test's own directory."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def copy_env(src: Path, dest: Path, evaluators: Path, **spec_overrides) -> Path:
    """Copy an environment folder beside a copy of its evaluators, with spec keys overridden."""
    env_dir = dest / src.name
    shutil.copytree(src, env_dir, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(evaluators, dest / "evaluators", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    spec_path = env_dir / "autoresearch.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["evaluator"] = str(dest / "evaluators" / Path(spec["evaluator"]).name)
    for key, value in spec_overrides.items():
        spec[key] = value
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return env_dir


@pytest.fixture
def toy_env(tmp_path) -> Path:
    """A private copy of the toy environment (least squares, well under a second per trial)."""
    return copy_env(ASSETS / "toy_project", tmp_path / "envs", ASSETS / "evaluators")
