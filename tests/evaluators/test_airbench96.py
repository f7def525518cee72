"""The airbench96 evaluator's labels, outcome file and data; the recipe's contract and knobs."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import math
import pickle
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mlflow_autoresearch.execution.evaluator import parse_outcome
import yaml

ROOT = Path(__file__).resolve().parents[2]
EVALUATORS = ROOT / "evaluators"
AIRBENCH = ROOT / "projects" / "airbench96"
RECIPE_FILE = AIRBENCH / "recipe" / "airbench96.py"
TRACEBACK = """\
epoch=1 step=10
Traceback (most recent call last):
  File "/ws/trial-7/recipe/airbench96.py", line 612, in <module>
    main()
  File "/ws/trial-7/recipe/airbench96.py", line 571, in main
    net, progress, steps = train(train_images, train_labels, meta, hp, args.seed)
  File "/ws/trial-7/recipe/airbench96.py", line 498, in train
    loss = loss_fn(run_net(inputs).float(), labels).sum()
  File "/venv/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1775, in _call_impl
    return forward_call(*args, **kwargs)
RuntimeError: mat1 and mat2 shapes cannot be multiplied (64x48 and 64x10)
"""


def score(evaluator, tiny_data, run_dir):
    return evaluator.score("tiny", tiny_data, run_dir)


# -------------------------------------------------------------------------------------------------
# Labels
# -------------------------------------------------------------------------------------------------

def test_clean_seeds_over_the_gate_are_ok_and_scored_by_harness_time(evaluator, tiny_data,
                                                                      make_run):
    run = make_run([{"accuracy": 0.99, "wall": 4.0}, {"accuracy": 0.986, "wall": 5.0},
                    {"accuracy": 0.984, "wall": 6.0}])
    outcome = score(evaluator, tiny_data, run)
    assert outcome.label == "ok"
    assert outcome.score == pytest.approx(5.0)
    assert outcome.metrics["accuracy"] == pytest.approx((0.99 + 0.986 + 0.984) / 3)
    assert outcome.metrics["n_seeds"] == 3
    assert outcome.excerpt == ""


def test_the_cpu_basis_scores_the_harness_measured_cpu_seconds(evaluator, tiny_data, make_run):
    seeds = [{"accuracy": 0.99, "wall": 9.0, "cpu": 2.0, "result": {"cpu_seconds": 0.1}},
             {"accuracy": 0.99, "wall": 7.0, "cpu": 4.0},
             {"accuracy": 0.99, "wall": 5.0, "cpu": 3.0}]
    cpu = score(evaluator, tiny_data, make_run(seeds, time_basis="cpu"))
    assert cpu.label == "ok" and cpu.score == pytest.approx(3.0)  # the recipe's claim is ignored
    assert cpu.metrics["wall_seconds"] == pytest.approx(7.0)
    assert cpu.metrics["cpu_seconds"] == pytest.approx(3.0)


def test_gate_miss_is_disqualified_with_measurements_kept(evaluator, tiny_data, make_run):
    run = make_run([{"accuracy": 0.99}, {"accuracy": 0.97}, {"accuracy": 0.97}])
    outcome = score(evaluator, tiny_data, run)
    assert outcome.label == "disqualified"
    assert outcome.score is None
    assert outcome.metrics["accuracy"] == pytest.approx(0.9767, abs=1e-4)
    assert outcome.metrics["train_seconds"] == pytest.approx(4.0)
    assert "0.98" in outcome.excerpt and "0.9767" in outcome.excerpt


def test_gate_is_strict_at_the_threshold(evaluator, tiny_data, make_run):
    at_gate = score(evaluator, tiny_data, make_run([{"accuracy": 0.98}] * 3))
    assert at_gate.label == "ok"


def test_nonzero_exit_is_a_crash_with_the_recipe_frame(evaluator, tiny_data, make_run):
    run = make_run([{"accuracy": 0.99},
                    {"accuracy": 0.99, "exit_code": 1, "stderr": TRACEBACK}])
    outcome = score(evaluator, tiny_data, run)
    assert outcome.label == "crash"
    assert "seed 1 exited with code 1" in outcome.excerpt
    assert "RuntimeError: mat1 and mat2 shapes" in outcome.excerpt
    assert "recipe/airbench96.py:498 in train" in outcome.excerpt
    assert outcome.metrics["accuracy"] == pytest.approx(0.99)


@pytest.mark.parametrize("predictions, reason", [
    (None, "wrote no test_predictions.npy"),
    (np.zeros(499, dtype=np.int64), "has shape (499,)"),
    (np.zeros(500, dtype=np.float32), "expected integers"),
    (np.full(500, 10, dtype=np.int64), "outside [0, 10)"),
    (np.full(500, -1, dtype=np.int64), "outside [0, 10)"),
])
def test_unusable_predictions_are_a_crash(evaluator, tiny_data, make_run, predictions, reason):
    run = make_run([{"accuracy": 0.99}, {"predictions": predictions}, {"accuracy": 0.99}])
    outcome = score(evaluator, tiny_data, run)
    assert outcome.label == "crash"
    assert reason in outcome.excerpt


def test_a_seed_that_never_ran_is_a_crash(evaluator, tiny_data, make_run):
    outcome = score(evaluator, tiny_data, make_run([{"accuracy": 0.99}] * 2, expected=(0, 1, 2)))
    assert outcome.label == "crash"
    assert "seed 2 did not run" in outcome.excerpt


def test_timeout_outranks_the_crash_it_causes(evaluator, tiny_data, make_run):
    run = make_run([{"accuracy": 0.99},
                    {"predictions": None, "exit_code": -9, "timed_out": True, "wall": 61.0}])
    outcome = score(evaluator, tiny_data, run)  # seed 2 never ran, seed 1 has no predictions
    assert outcome.label == "train_budget_overrun"
    assert "seed 1 ran 61.0 s" in outcome.excerpt


def test_a_link_the_harness_removed_from_the_output_is_illegal(evaluator, tiny_data, make_run):
    run = make_run([{"accuracy": 0.99},
                    {"predictions": None, "refused": "test_predictions.npy (a link to /x)"}])
    outcome = score(evaluator, tiny_data, run)
    assert outcome.label == "illegal"
    assert "seed 1 left links" in outcome.excerpt and "a link to /x" in outcome.excerpt


def test_wall_time_over_budget_is_an_overrun_even_unkilled(evaluator, tiny_data, make_run):
    run = make_run([{"accuracy": 0.99, "wall": 7.0}] * 3, budget=6.0)
    assert score(evaluator, tiny_data, run).label == "train_budget_overrun"


def test_on_a_cpu_basis_the_budget_counts_cpu_seconds(evaluator, tiny_data, make_run):
    loaded = make_run([{"accuracy": 0.99, "wall": 7.0, "cpu": 5.0}] * 3, budget=6.0,
                      time_basis="cpu")  # a busy machine stretched the wall clock only
    assert score(evaluator, tiny_data, loaded).label == "ok"
    (loaded.parent / "run").rename(loaded.parent / "loaded")
    spent = make_run([{"accuracy": 0.99, "wall": 7.0, "cpu": 6.5}] * 3, budget=6.0,
                     time_basis="cpu")
    outcome = score(evaluator, tiny_data, spent)
    assert outcome.label == "train_budget_overrun"
    assert "ran 6.5 CPU s, over the 6 s budget" in outcome.excerpt


def test_recipe_claims_do_not_change_the_outcome(evaluator, tiny_data, make_run, tmp_path):
    seeds = [{"accuracy": 0.97, "wall": 4.5}] * 3
    honest = score(evaluator, tiny_data, make_run(seeds))
    (tmp_path / "run").rename(tmp_path / "honest")
    claim = {"accuracy": 1.0, "train_seconds": 0.1, "total_seconds": 0.1, "wall_seconds": 0.1}
    boasting = score(evaluator, tiny_data, make_run([{**s, "result": claim} for s in seeds]))
    assert boasting == honest
    assert boasting.label == "disqualified"


def test_precedence_follows_the_contract(common):
    assert common.first_label([]) == "ok"
    assert common.first_label(["crash", "train_budget_overrun"]) == "train_budget_overrun"
    assert common.first_label(["disqualified", "crash"]) == "crash"
    assert common.first_label(["size_blocked", "illegal", "crash"]) == "illegal"
    assert common.PRECEDENCE[0] == "harness_abort" and common.PRECEDENCE[-1] == "ok"


# -------------------------------------------------------------------------------------------------
# Crash excerpts
# -------------------------------------------------------------------------------------------------

def test_crash_excerpt_takes_last_line_and_deepest_recipe_frame(common):
    during = "\nDuring handling of the above exception, another exception occurred:\n\n"
    second = TRACEBACK.replace("line 498", "line 499").replace("RuntimeError", "ValueError")
    chained = TRACEBACK + during + second
    text = common.crash_excerpt(chained, "recipe/airbench96.py")
    assert text.splitlines()[0].startswith("ValueError: mat1")
    assert "recipe/airbench96.py:499 in train: loss = loss_fn" in text


def test_crash_excerpt_keeps_the_frame_under_a_huge_message(common):
    huge = TRACEBACK.replace("mat1 and mat2", "x" * 10_000)
    text = common.crash_excerpt(huge, "recipe/airbench96.py")
    assert len(text) <= 1600
    assert text.endswith("in train: loss = loss_fn(run_net(inputs).float(), labels).sum()")


def test_crash_excerpt_without_traceback_is_the_last_stderr_line(common):
    assert common.crash_excerpt("x\nairbench96: no data: missing D\n\n", "recipe/a.py") \
        == "airbench96: no data: missing D"
    assert common.crash_excerpt("", "recipe/a.py") == ""


# -------------------------------------------------------------------------------------------------
# outcome.json and the command line
# -------------------------------------------------------------------------------------------------

def assert_valid_outcome(doc: dict) -> None:
    """outcome.json schema 2 (evaluators/README.md), as the harness's own parser reads it."""
    assert set(doc) == {"schema", "label", "score", "metrics", "gates", "excerpt"}
    assert doc["schema"] == 2 and parse_outcome(json.dumps(doc)).label.tag == doc["label"]
    assert doc["gates"] == (["accuracy"] if doc["label"] in ("ok", "disqualified") else doc["gates"])
    assert doc["label"] in ("ok", "crash", "train_budget_overrun", "eval_budget_overrun",
                            "size_blocked", "disqualified", "illegal")
    finite = isinstance(doc["score"], (int, float)) and math.isfinite(doc["score"])
    assert finite == (doc["label"] == "ok") and (finite or doc["score"] is None)
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in doc["metrics"].values())
    assert isinstance(doc["excerpt"], str) and len(doc["excerpt"]) <= 2000


def run_evaluator(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EVALUATORS / "airbench96.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("seeds", [
    [{"accuracy": 0.99}] * 3,
    [{"accuracy": 0.9}] * 3,
    [{"accuracy": 0.99}, {"accuracy": 0.99, "exit_code": 1, "stderr": "x" * 5000}],
])
def test_cli_writes_a_valid_outcome_from_any_cwd(tiny_data, make_run, tmp_path, seeds):
    run = make_run(seeds)
    out = tmp_path / "elsewhere" / "outcome.json"
    (tmp_path / "elsewhere").mkdir()
    done = run_evaluator("score", "--profile", "tiny", "--data-dir", str(tiny_data),
                         "--run-dir", str(run), "--out", str(out), cwd=tmp_path / "elsewhere")
    assert done.returncode == 0, done.stderr
    assert_valid_outcome(json.loads(out.read_text()))
    assert [p.name for p in out.parent.iterdir()] == ["outcome.json"]


def test_broken_harness_file_exits_nonzero_without_an_outcome(tiny_data, make_run, tmp_path):
    run = make_run([{"accuracy": 0.99}] * 3)
    (run / "harness.json").write_text('{"schema": 1, "seeds": "oops"}')
    out = tmp_path / "outcome.json"
    done = run_evaluator("score", "--profile", "tiny", "--data-dir", str(tiny_data),
                         "--run-dir", str(run), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 1
    assert "harness fault" in done.stderr
    assert not out.exists()


def test_outcome_rejects_nonsense(common):
    with pytest.raises(ValueError):
        common.Outcome("ok", score=float("nan"))
    with pytest.raises(ValueError):
        common.Outcome("crash", score=3.0)
    with pytest.raises(ValueError):
        common.Outcome("harness_abort")
    with pytest.raises(ValueError):
        common.Outcome("crash", metrics={"accuracy": float("inf")})


def test_outcome_write_is_atomic(common, tmp_path, monkeypatch):
    path = tmp_path / "outcome.json"
    common.write_outcome(path, common.Outcome("crash", excerpt="first"))

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(common.os, "replace", fail)
    with pytest.raises(OSError):
        common.write_outcome(path, common.Outcome("ok", score=1.0))
    assert json.loads(path.read_text())["excerpt"] == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["outcome.json"]


# -------------------------------------------------------------------------------------------------
# prepare
# -------------------------------------------------------------------------------------------------

def test_prepare_is_idempotent_and_keeps_labels_private(evaluator, tiny_data):
    files = sorted(p for p in tiny_data.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    evaluator.prepare("tiny", tiny_data)
    assert {p: p.stat().st_mtime_ns for p in files} == stamps

    assert sorted(p.name for p in (tiny_data / "public").iterdir()) == \
        ["meta.json", "test_images.pt", "train.pt"]
    test = torch.load(tiny_data / "public" / "test_images.pt", weights_only=True)
    train = torch.load(tiny_data / "public" / "train.pt", weights_only=True)
    assert set(test) == {"images"}
    assert test["images"].shape == (500, 16, 16, 1) and test["images"].dtype == torch.uint8
    assert train["images"].shape == (1297, 16, 16, 1) and train["labels"].dtype == torch.int64
    labels = np.load(tiny_data / "private" / "test_labels.npy")
    train_share = np.bincount(train["labels"].numpy()) / 1297
    assert labels.shape == (500,)
    assert np.abs(np.bincount(labels) - 500 * train_share).max() < 1.5  # stratified split
    meta = json.loads((tiny_data / "public" / "meta.json").read_text())
    assert meta["mirror_symmetric"] is False and meta["n_classes"] == 10


def test_real_prepare_parses_the_python_tarball_layout(evaluator, tmp_path, monkeypatch):
    """A stand-in archive in the official layout: rows of 3,072 bytes, R plane then G then B."""
    archive = tmp_path / "downloads" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for index, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
            rows = np.zeros((2, 3, 32, 32), dtype=np.uint8)
            rows[:, 0], rows[:, 2] = index, 200  # red plane = batch index, blue plane = 200
            blob = pickle.dumps({b"data": rows.reshape(2, 3072), b"labels": [index, 9]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    monkeypatch.setattr(evaluator, "CIFAR_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    evaluator.prepare("real", tmp_path)
    train = torch.load(tmp_path / "public" / "train.pt", weights_only=True)
    assert train["images"].shape == (10, 32, 32, 3)
    assert train["images"][:, 5, 7].tolist() == [[i, 0, 200] for i in range(5) for _ in (0, 1)]
    assert train["labels"].tolist() == [0, 9, 1, 9, 2, 9, 3, 9, 4, 9]
    assert np.load(tmp_path / "private" / "test_labels.npy").tolist() == [5, 9]
    meta = json.loads((tmp_path / "public" / "meta.json").read_text())
    assert meta["mirror_symmetric"] is True and meta["channels"] == 3


def test_real_download_failure_names_url_and_destination(evaluator, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluator, "CIFAR_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(evaluator.DataUnavailable) as failure:
        evaluator.prepare("real", tmp_path)
    message = str(failure.value)
    assert "http://127.0.0.1:9/cifar-10-python.tar.gz" in message
    assert str(tmp_path / "downloads" / "cifar-10-python.tar.gz") in message
    assert not (tmp_path / "public").exists()


# -------------------------------------------------------------------------------------------------
# The recipe
# -------------------------------------------------------------------------------------------------

def test_tiny_seed_end_to_end_prepare_recipe_score(tmp_path):
    data = tmp_path / "data"
    done = run_evaluator("prepare", "--profile", "tiny", "--data-dir", str(data), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "run" / "seeds" / "0" / "out"
    started = time.monotonic()
    with open(tmp_path / "stderr.txt", "w") as stderr:
        recipe = subprocess.run(
            [sys.executable, "recipe/airbench96.py", "--profile", "tiny", "--seed", "0.0",
             "--data-dir", str(data / "public"), "--out-dir", str(out)],
            cwd=AIRBENCH, stdout=subprocess.DEVNULL, stderr=stderr, timeout=120)
    wall = time.monotonic() - started
    assert recipe.returncode == 0, (tmp_path / "stderr.txt").read_text()
    assert (out / "result.json").is_file()
    harness = {"schema": 1, "environment": "airbench96", "profile": "tiny", "workspace": "workspace",
               "budgets": {"train_seconds": 120, "eval_seconds": 60}, "gates": {"accuracy": 0.9},
               "expected_seeds": [0],
               "seeds": [{"seed": 0, "wall_seconds": wall, "exit_code": 0, "timed_out": False,
                          "out_dir": "seeds/0/out", "stdout": "stdout.txt",
                          "stderr": str(tmp_path / "stderr.txt")}]}
    (tmp_path / "run" / "harness.json").write_text(json.dumps(harness))
    done = run_evaluator("score", "--profile", "tiny", "--data-dir", str(data), "--run-dir",
                         str(tmp_path / "run"), "--out", str(tmp_path / "outcome.json"),
                         cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    outcome = json.loads((tmp_path / "outcome.json").read_text())
    assert_valid_outcome(outcome)
    assert outcome["label"] == "ok"
    assert outcome["metrics"]["accuracy"] >= 0.96
    assert outcome["score"] == pytest.approx(wall, abs=1e-3)


def symmetric_dataset(directory: Path, n_train: int = 256, n_test: int = 64) -> Path:
    """Noisy 16x16 RGB images of a horizontal bar whose colour channel is the class.

    Mirroring or shifting an image keeps its class, as for CIFAR-10.
    """
    rng = np.random.default_rng(0)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 3, n)
        pixels = rng.integers(0, 60, (n, 16, 16, 3))
        for i, label in enumerate(labels):
            pixels[i, 6:10, rng.integers(0, 8):, label] += 180
        return pixels.astype(np.uint8), labels.astype(np.int64)

    (train_x, train_y), (test_x, test_y) = images(n_train), images(n_test)
    directory.mkdir(parents=True)
    torch.save({"images": torch.from_numpy(train_x), "labels": torch.from_numpy(train_y)},
               directory / "train.pt")
    torch.save({"images": torch.from_numpy(test_x)}, directory / "test_images.pt")
    (directory / "meta.json").write_text(json.dumps(
        {"name": "bars", "n_classes": 3, "mirror_symmetric": True, "image_size": 16,
         "channels": 3}))
    np.save(directory / "labels.npy", test_y)
    return directory


def test_alternating_flip_mirrors_every_other_epoch(recipe):
    n = 64
    images = torch.randn(n, 3, 8, 8)
    labels = torch.arange(n)  # unique labels identify each image after shuffling
    hp = recipe.load_knobs("tiny")
    hp.batch_size, hp.translate, hp.cutout = n, 0, 0

    def epochs(flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        batches = recipe.train_batches(images, labels, hp, flip, torch.Generator().manual_seed(1))
        (x0, y0), (x1, y1) = next(batches), next(batches)
        return x0[y0.argsort()], x1[y1.argsort()]

    first, second = epochs(flip=True)
    assert torch.equal(second, first.flip(-1))
    started_mirrored = (first == images.flip(-1)).flatten(1).all(1)
    assert 0 < started_mirrored.sum() < n  # each image starts in a random orientation
    plain_first, plain_second = epochs(flip=False)
    assert torch.equal(plain_first, images) and torch.equal(plain_second, images)


def test_mirror_tta_is_flip_invariant_only_on_symmetric_data(recipe):
    torch.manual_seed(0)
    hp = recipe.load_knobs("tiny")
    net = recipe.build_net({"channels": 3, "n_classes": 4}, (8, 8, 8), 3, hp,
                           torch.device("cpu"), torch.float32).eval()
    x = torch.randn(10, 3, 16, 16)
    mirrored = recipe.predict_logits(net, x, 1, True, False)
    assert torch.allclose(mirrored, recipe.predict_logits(net, x.flip(-1), 1, True, False))
    assert torch.equal(recipe.predict_logits(net, x, 1, False, False),
                       recipe.predict_logits(net, x, 0, False, False))


def test_recipe_trains_on_symmetric_data_with_flip_and_mirror_tta(recipe, tmp_path,
                                                                   monkeypatch):
    data = symmetric_dataset(tmp_path / "bars")
    for name, value in {"WIDTH1": 16, "WIDTH2": 16, "WIDTH3": 16, "BATCH_SIZE": 32,
                        "BATCH_KEEP": 16, "EPOCHS": 6}.items():
        monkeypatch.setattr(recipe, name, value)
    recipe.main(["--profile", "tiny", "--seed", "1", "--data-dir", str(data),
                 "--out-dir", str(tmp_path / "out")])
    predictions = np.load(tmp_path / "out" / "test_predictions.npy")
    assert predictions.dtype == np.int64 and predictions.shape == (64,)
    assert (predictions == np.load(data / "labels.npy")).mean() >= 0.9


def test_nesterov_sgd_matches_torch(recipe):
    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    theirs.load_state_dict(ours.state_dict())
    optimizer = recipe.NesterovSGD(
        [dict(params=list(ours.parameters()), lr=0.1, weight_decay=0.01)], momentum=0.85)
    reference = torch.optim.SGD(theirs.parameters(), lr=0.1, weight_decay=0.01, momentum=0.85,
                                nesterov=True)
    for _ in range(4):
        x = torch.randn(8, 5)
        for model, opt in ((ours, optimizer), (theirs, reference)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_real_profile_stops_cleanly_without_data_or_gpu(recipe, tiny_data, tmp_path):
    with pytest.raises(SystemExit, match="no data"):
        recipe.main(["--profile", "real", "--data-dir", str(tmp_path / "none"),
                     "--out-dir", str(tmp_path / "out")])
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the real profile would train")
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        recipe.main(["--profile", "real", "--data-dir", str(tiny_data / "public"),
                     "--out-dir", str(tmp_path / "out")])


@pytest.mark.parametrize("text, seed", [("0", 0), ("3.0", 3), ("12", 12)])
def test_seed_parameter_accepts_mlflow_renderings(recipe, text, seed):
    assert recipe.parse_seed(text) == seed


def test_seed_parameter_rejects_fractions(recipe):
    with pytest.raises(Exception, match="integer"):
        recipe.parse_seed("1.5")


# -------------------------------------------------------------------------------------------------
# Knobs and the technique table
# -------------------------------------------------------------------------------------------------

KNOB_LINE = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*) = (?P<value>.+?)  # \S.*$")


def knob_lines() -> dict[str, str]:
    """Knob name -> source line, for the module-level UPPER_CASE assignments before KNOB_NAMES."""
    source = RECIPE_FILE.read_text()
    lines = source.splitlines()
    knobs = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name == "KNOB_NAMES":
                break
            if name.isupper():
                assert node.lineno == node.end_lineno, f"{name} spans several lines"
                knobs[name] = lines[node.lineno - 1]
    return knobs


def test_knobs_are_one_line_literals_with_comments(recipe):
    knobs = knob_lines()
    assert set(knobs) == set(recipe.KNOB_NAMES)
    assert "EVAL_EVERY" in knobs and recipe.EVAL_EVERY == 1
    for name, line in knobs.items():
        match = KNOB_LINE.match(line)
        assert match, f"not `NAME = literal  # comment`: {line}"
        value = ast.literal_eval(match["value"])
        if isinstance(value, dict):
            assert set(value) == {"tiny", "real", "search"}, name


def apply_change(current, change):
    """A technique's change to one value: "+k", "-k", "*k" relative, anything else a literal."""
    if isinstance(change, str) and change[:1] in "+-*":
        k = float(change[1:])
        assert isinstance(current, (int, float)) and not isinstance(current, bool)
        return {"+": current + k, "-": current - k, "*": current * k}[change[0]]
    return change


def test_techniques_name_existing_knobs_and_apply_cleanly(recipe):
    table = yaml.safe_load((AIRBENCH / "techniques.yaml").read_text())
    table.pop("search_space")  # the strategies' knob ranges (tests/test_strategies.py)
    assert set(table) == {"arch", "opt", "aug", "loss", "reg"}
    knobs = knob_lines()
    names = [entry["name"] for entries in table.values() for entry in entries]
    assert len(names) == len(set(names))
    for specialist, entries in table.items():
        assert 4 <= len(entries) <= 8, specialist
        for entry in entries:
            assert set(entry) == {"name", "set", "hypothesis", "expected_delta", "cost",
                                  "quality"}, entry["name"]
            assert entry["cost"] in ("down", "same", "up")
            assert entry["quality"] in ("down", "same", "up")
            assert isinstance(entry["expected_delta"], (int, float))
            for knob, change in entry["set"].items():
                assert knob in knobs, f"{entry['name']}: no knob {knob}"
                value = ast.literal_eval(KNOB_LINE.match(knobs[knob])["value"])
                for profile in ("tiny", "real", "search"):
                    current = value[profile] if isinstance(value, dict) else value
                    new = apply_change(current, change)
                    assert ast.literal_eval(repr(new)) == new
    directions = [e for entries in table.values() for e in entries]
    assert sum(e["cost"] == "down" for e in directions) >= 5
    assert sum(e["quality"] == "up" for e in directions) >= 3
