"""The search benchmark end to end on a 2-trial, 1-seed smoke setting: every core arm runs the
real loop, the tables and the plot are written and logged to MLflow."""

from __future__ import annotations

import importlib.util
import sys

from mlflow.tracking import MlflowClient

from support import ROOT


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "search_efficiency", ROOT / "benchmarks" / "search_efficiency.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_the_search_benchmark_runs_end_to_end(toy_env, store, tmp_path):
    out = tmp_path / "docs" / "search.md"
    markdown = _benchmark().main(["--envs", str(toy_env), "--arms", "specialists,random,optuna",
                                  "--profile", "tiny", "--seeds", "1", "--trials", "2",
                                  "--tracking-uri", store, "--workdir", str(tmp_path / "work"),
                                  "--out", str(out)])
    assert out.read_text() == markdown and (out.parent / "search_toy.png").stat().st_size > 1000
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| specialists", "| random", "| optuna"]
    client = MlflowClient(store)
    names = {e.name for e in client.search_experiments()}
    assert {f"search-bench/toy/{arm}/seed0" for arm in ("specialists", "random", "optuna")} <= names
    summary = client.search_runs([client.get_experiment_by_name("search-bench").experiment_id])[0]
    assert {a.path for a in client.list_artifacts(summary.info.run_id)} >= {
        "search.md", "curves.json", "search_toy.png"}
    for arm in ("specialists", "random", "optuna"):
        experiment = client.get_experiment_by_name(f"search-bench/toy/{arm}/seed0")
        assert len(client.search_runs([experiment.experiment_id])) == 3  # baseline + 2 trials


def test_the_benchmark_continues_campaigns_already_in_its_store(toy_env, store, tmp_path):
    bench = _benchmark()
    common = ["--envs", str(toy_env), "--arms", "random", "--profile", "tiny", "--seeds", "1",
              "--tracking-uri", store, "--workdir", str(tmp_path / "work")]
    first = bench.main([*common, "--trials", "2"])
    assert bench.main([*common, "--trials", "2"]).split("\n", 3)[3] == first.split("\n", 3)[3]
    bench.main([*common, "--trials", "3"])
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("search-bench/toy/random/seed0")
    assert len(client.search_runs([experiment.experiment_id])) == 4  # continued, not rerun
