"""A campaign's story out of MLflow: the report run, export with lineage.patch, replay, and the
progress output, through the real CLI on a real store."""

from __future__ import annotations

import filecmp
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from PIL import Image
from rich.console import Console

from mlflow_autoresearch import tags
from mlflow_autoresearch.campaign import Settings, run_campaign
from mlflow_autoresearch.progress import Progress
from mlflow_autoresearch.records import Decision
from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.testing import ScriptedAgent, replace_in
from support import ASSETS, copy_env

RECIPE = "recipe/toy.py"
FIGURES = ("progress.png", "specialists.png", "labels.png")


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mlflow_autoresearch.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """A toy campaign: baseline, two chained keeps, a discard and a crash."""
    tmp = tmp_path_factory.mktemp("campaign")
    env_dir = copy_env(ASSETS / "toy_project", tmp / "envs", ASSETS / "evaluators")
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    script = [("a larger step", replace_in(RECIPE, "LR = 0.1", "LR = 0.12")),
              ("a larger step again", replace_in(RECIPE, "LR = 0.12", "LR = 0.2")),
              ("a tiny step <b>", replace_in(RECIPE, "LR = 0.2", "LR = 0.001")),
              ("crash it", replace_in(RECIPE, 'MODE = "normal"', 'MODE = "crash"'))]
    settings = Settings(str(env_dir), trials=len(script), tracking_uri=store,
                        workdir=tmp / "work", sandbox="off")
    summary = run_campaign(settings, agents={"opt": ScriptedAgent("opt", script)},
                           echo=lambda line: None)
    decisions = [t.decision for t in summary.trials]
    assert decisions[:3] == [Decision.BASELINE, Decision.KEEP, Decision.KEEP], decisions
    return tmp, env_dir, store, summary.trials


def _reports(client, experiment_id):
    return client.search_runs([experiment_id], f"tags.`{tags.KIND}` = '{tags.REPORT_KIND}'")


def test_the_report_run_holds_every_artifact_and_is_replaced(campaign):
    tmp, _, store, trials = campaign
    client = MlflowClient(store)
    experiment_id = client.get_run(trials[0].run_id).info.experiment_id
    for _ in range(2):
        result = _cli("report", "--tracking-uri", store, cwd=tmp)
        assert result.returncode == 0, result.stderr
    reports = _reports(client, experiment_id)
    assert len(reports) == 1, "the next report replaces the last one"
    report = reports[0]
    assert tags.TRIAL not in report.data.tags and tags.LABEL not in report.data.tags
    listed = {a.path for a in client.list_artifacts(report.info.run_id, tags.REPORT_DIR)}
    assert {f"report/{n}" for n in (*FIGURES, "report.md", "lineage.html")} <= listed
    folder = Path(client.download_artifacts(report.info.run_id, tags.REPORT_DIR, str(tmp)))
    for name in FIGURES:
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
    page = (folder / "lineage.html").read_text()
    kept = [t for t in trials if t.is_kept]
    for trial in kept:
        assert f'data-run-id="{trial.run_id}"' in page
        assert f"/runs/{trial.run_id}" in page
    assert "<b>" not in page and "&lt;b&gt;" in page
    steps = client.get_metric_history(report.info.run_id, tags.BEST_SCORE)
    assert [m.step for m in steps] == [t.number for t in trials]
    assert steps[-1].value == min(t.score for t in kept)
    # Never counted as a trial: numbering and status see the campaign's own runs only.
    assert MlflowStore(store).next_number(experiment_id) == len(trials)
    assert f"{len(trials)} trial(s)" in _cli("status", "--tracking-uri", store, cwd=tmp).stdout


def test_export_writes_the_recorded_recipe_and_a_patch_from_the_baseline(campaign, tmp_path):
    tmp, env_dir, store, trials = campaign
    last_keep = [t for t in trials if t.decision is Decision.KEEP][-1]
    dest = tmp_path / "exported"
    result = _cli("export", last_keep.run_id, str(dest), "--tracking-uri", store,
                  "--environment", str(env_dir), cwd=tmp)
    assert result.returncode == 0, result.stderr
    assert "2 step(s) from the baseline t0000" in result.stdout
    recorded = Path(MlflowClient(store).download_artifacts(last_keep.run_id, tags.RECIPE_DIR,
                                                           str(tmp_path)))
    assert filecmp.cmp(recorded / RECIPE, dest / RECIPE, shallow=False)
    assert (dest / "MLproject").is_file() and (dest / "autoresearch.yaml").is_file()
    baseline = tmp_path / "baseline"
    shutil.copytree(env_dir, baseline)
    applied = subprocess.run(["git", "apply", str(dest / "lineage.patch")], cwd=baseline,
                             capture_output=True, text=True)
    assert applied.returncode == 0, applied.stderr
    assert (baseline / RECIPE).read_bytes() == (dest / RECIPE).read_bytes()
    again = _cli("export", last_keep.run_id, str(dest), "--tracking-uri", store,
                 "--environment", str(env_dir), cwd=tmp)
    assert again.returncode == 1 and "is not empty: export into a new folder" in again.stderr
    lost = _cli("export", last_keep.run_id, str(tmp_path / "new"), "--tracking-uri", store,
                cwd=tmp)
    assert lost.returncode == 1 and "the trial ran environment 'toy': pass --environment" in \
        lost.stderr


def test_replay_measures_the_recipe_again_as_a_run_that_is_not_a_trial(campaign, tmp_path):
    tmp, env_dir, store, trials = campaign
    keep = trials[1]
    result = _cli("replay", keep.run_id, "--seeds", "5,6", "--tracking-uri", store,
                  "--environment", str(env_dir), "--workdir", str(tmp / "work"),
                  "--sandbox", "off", cwd=tmp)
    assert result.returncode == 0, result.stderr
    assert f"recorded {keep.score:.6g}; replay " in result.stdout
    assert "on seeds [5, 6]" in result.stdout
    client = MlflowClient(store)
    experiment_id = client.get_run(keep.run_id).info.experiment_id
    replays = client.search_runs([experiment_id], f"tags.`{tags.REPLAY_OF}` = '{keep.run_id}'")
    assert len(replays) == 1
    run = replays[0]
    assert tags.TRIAL not in run.data.tags and tags.DECISION not in run.data.tags
    assert run.data.tags[tags.REPLAY_LABEL] == "ok" and tags.SCORE in run.data.metrics
    mlflow = MlflowStore(store)
    assert mlflow.load_recipe(run.info.run_id, (RECIPE,)) == mlflow.load_recipe(keep.run_id,
                                                                                (RECIPE,))
    assert run.data.params == client.get_run(keep.run_id).data.params
    assert mlflow.next_number(experiment_id) == len(trials)
    best = mlflow.best(experiment_id, mlflow.direction(experiment_id))
    assert best.run_id in {t.run_id for t in trials}


def test_progress_draws_phases_against_their_budgets():
    out = io.StringIO()
    progress = Progress(Console(file=out, force_terminal=True, width=120))
    with progress:
        progress.started("run-a", 3, "opt")
        progress.phase("run-a", "seed 2 of 3", 60.0)
        progress.line("t0002 opt  ok")
        rows = progress.rows()
        progress.finished("run-a", 0.25)
    assert len(rows) == 1 and rows[0].startswith("t0003 opt")
    assert "seed 2 of 3" in rows[0] and "of 60 s" in rows[0]
    assert progress.rows() == []
    assert "t0002 opt  ok" in out.getvalue()


def test_plain_and_quiet_output_have_no_escape_codes(toy_env, tmp_path):
    common = ["run", str(toy_env), "--trials", "1", "--workdir", str(tmp_path / "work"),
              "--sandbox", "off"]
    plain = _cli(*common, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "\x1b" not in plain.stdout + plain.stderr
    assert plain.stdout.startswith("t0000 baseline") and "Report: run " in plain.stdout
    quiet = _cli(*common, "--trials", "2", "--quiet", "--no-report", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "\x1b" not in quiet.stdout and "t0002" not in quiet.stdout
    assert quiet.stdout.lstrip().startswith("Stopped: reached trial 2.")
    assert "Report:" not in quiet.stdout
