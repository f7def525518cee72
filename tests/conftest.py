"""Shared fixtures: a real local MLflow store per test and copies of the test environments."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import ASSETS, copy_env, mlflow_server


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


@pytest.fixture
def toy_env(tmp_path) -> Path:
    """A private copy of the toy environment (least squares, well under a second per trial)."""
    return copy_env(ASSETS / "toy_project", tmp_path / "envs", ASSETS / "evaluators")


@pytest.fixture
def server(tmp_path):
    """A real `mlflow server` on loopback for one test."""
    with mlflow_server(tmp_path) as url:
        yield url
