"""Harness-owned evaluator for airbench96 (contract: evaluators/README.md).

prepare: builds `public/` (train.pt, test_images.pt, meta.json) and `private/test_labels.npy`.
  - tiny: scikit-learn's bundled digits, a stratified 1,297 / 500 split (seed 1234), bilinearly
    upsampled from 8x8 to 16x16 (docs/reference/environments.md 5.5);
  - real: CIFAR-10 from the official python tarball, checked against its published MD5.
score: accuracy from each seed's `test_predictions.npy` against the private labels, computed
  here; the score (`train_seconds`) is the mean harness-measured time per seed on the trial's
  `time_basis`: wall seconds (paper.md 5.3; the real profile, on a dedicated GPU machine) or the
  CPU seconds of the seed's process tree (the tiny profile, which other work on a shared machine
  does not move); `wall_seconds` and `cpu_seconds` are reported either way. Nothing the
  recipe prints or writes to result.json is read. Gate: mean accuracy over all expected seeds
  >= gates.accuracy, strict.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402  (the path above makes this work from any cwd)
    DataUnavailable,
    HarnessError,
    Outcome,
    SeedRun,
    applied_gates,
    build_once,
    clip,
    download,
    failed,
    load_harness,
    prepared_meta,
    process_status,
    run_cli,
    write_atomic,
)

PROFILES = ("tiny", "real", "search")  # search: the tiny data, a shorter run
CPU_PROFILES = ("tiny", "search")
GATES = ("accuracy",)  # the gates this evaluator checks
RECIPE = "recipe/airbench96.py"
PREDICTIONS = "test_predictions.npy"
FORMAT = 1  # bump when the prepared files change, so cached data is rebuilt

DIGITS_TEST, DIGITS_SEED, DIGITS_SIZE = 500, 1234, 16
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"  # published with the dataset; also torchvision's


# -------------------------------------------------------------------------------------------------
# prepare
# -------------------------------------------------------------------------------------------------

def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint8 NHWC train/test images (16x16x1) and int64 labels from scikit-learn's digits."""
    # torch and scikit-learn load here, not at the top, so that `score` starts in a fraction of
    # a second inside its eval budget.
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index_train, index_test = train_test_split(
        np.arange(len(digits.target)), test_size=DIGITS_TEST, stratify=digits.target,
        random_state=DIGITS_SEED)
    pixels = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)  # values are 0..16
    big = torch.nn.functional.interpolate(pixels, size=(DIGITS_SIZE, DIGITS_SIZE),
                                          mode="bilinear", align_corners=False)
    images = (big.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    labels = digits.target.astype(np.int64)
    return images[index_train], labels[index_train], images[index_test], labels[index_test]


def cifar_split(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint8 NHWC train/test images (32x32x3) and int64 labels from the official tarball."""
    archive = data_dir / "downloads" / "cifar-10-python.tar.gz"
    if not archive.is_file():
        download(CIFAR_URL, archive)
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    if digest != CIFAR_MD5:
        raise DataUnavailable(f"{archive} has MD5 {digest}, expected {CIFAR_MD5}; delete it and "
                              f"fetch {CIFAR_URL} again")

    def batches(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        with tarfile.open(archive, "r:gz") as tar:
            for name in names:
                # Safe to unpickle only because the archive matched the published checksum.
                batch = pickle.load(tar.extractfile(f"cifar-10-batches-py/{name}"),
                                    encoding="bytes")
                images.append(np.asarray(batch[b"data"], dtype=np.uint8))
                labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
        rows = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(rows), np.concatenate(labels)

    train_x, train_y = batches([f"data_batch_{i}" for i in range(1, 6)])
    test_x, test_y = batches(["test_batch"])
    return train_x, train_y, test_x, test_y


def prepare(profile: str, data_dir: Path) -> None:
    """Build the profile's data under `data_dir` unless an identical build is already there."""
    files = ["public/train.pt", "public/test_images.pt", "private/test_labels.npy"]
    build_once(data_dir, profile, FORMAT, lambda public, private: build(profile, data_dir, public, private),
               files)


def build(profile: str, data_dir: Path, public: Path, private: Path) -> dict:
    if profile in CPU_PROFILES:
        train_x, train_y, test_x, test_y = digits_split()
        meta = {"name": "digits", "mirror_symmetric": False}
    else:
        train_x, train_y, test_x, test_y = cifar_split(data_dir)
        meta = {"name": "cifar10", "mirror_symmetric": True}
    save_tensors(public / "train.pt", images=train_x, labels=train_y)
    save_tensors(public / "test_images.pt", images=test_x)
    buffer = io.BytesIO()
    np.save(buffer, test_y)
    write_atomic(private / "test_labels.npy", buffer.getvalue())
    return {**meta, "n_classes": 10, "image_size": int(train_x.shape[1]), "channels": int(train_x.shape[3]),
            "n_train": len(train_x), "n_test": len(test_x)}


def save_tensors(path: Path, **arrays: np.ndarray) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, buffer)
    write_atomic(path, buffer.getvalue())


# -------------------------------------------------------------------------------------------------
# score
# -------------------------------------------------------------------------------------------------

def seed_correct(run: SeedRun, labels: np.ndarray, n_classes: int) -> int | str:
    """How many test images this seed classified correctly, or why its predictions are unusable."""
    path = run.out_dir / PREDICTIONS
    if not path.is_file():
        return f"seed {run.seed} wrote no {PREDICTIONS}"
    try:
        predictions = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        return f"seed {run.seed}: unreadable {PREDICTIONS} ({exc})"
    if predictions.shape != labels.shape:
        return (f"seed {run.seed}: {PREDICTIONS} has shape {predictions.shape}, "
                f"expected {labels.shape}")
    if not np.issubdtype(predictions.dtype, np.integer):
        return f"seed {run.seed}: {PREDICTIONS} has dtype {predictions.dtype}, expected integers"
    if predictions.size and (predictions.min() < 0 or predictions.max() >= n_classes):
        return f"seed {run.seed}: {PREDICTIONS} has class indices outside [0, {n_classes})"
    return int(np.sum(predictions == labels))


def check_seed(run: SeedRun | None, seed: int, harness_budget: float | None,
               labels: np.ndarray, n_classes: int,
               basis: str = "wall") -> tuple[str, int | None, str]:
    """(label, correct count or None, excerpt) for one expected seed; label `ok` if it passed."""
    label, excerpt = process_status(run, seed, harness_budget, RECIPE, basis)
    if label != "ok":
        return label, None, excerpt
    correct = seed_correct(run, labels, n_classes)
    if isinstance(correct, str):
        return "crash", None, correct
    return "ok", correct, ""


def score(profile: str, data_dir: Path, run_dir: Path) -> Outcome:
    """Label and score one trial from its harness.json and its seeds' predictions."""
    harness = load_harness(run_dir)
    labels_path = data_dir / "private" / "test_labels.npy"
    meta = prepared_meta(data_dir, profile, harness, ["private/test_labels.npy"])
    gate = harness.gates.get("accuracy")
    if gate is None:
        raise HarnessError("harness.json has no gates.accuracy")
    labels = np.load(labels_path, allow_pickle=False)
    budget = harness.budgets.get("train_seconds")

    failures: list[tuple[str, str]] = []
    correct: list[int] = []
    finished = [run for run in harness.seeds.values() if run.exit_code == 0 and not run.timed_out]
    times = [run.seconds(harness.time_basis) for run in finished]
    for seed in harness.expected_seeds:
        label, count, excerpt = check_seed(harness.seeds.get(seed), seed, budget, labels,
                                           int(meta["n_classes"]), harness.time_basis)
        if label == "ok":
            correct.append(count)
        else:
            failures.append((label, excerpt))

    metrics = {"n_seeds": float(len(correct)),
               "n_expected_seeds": float(len(harness.expected_seeds))}
    accuracies = [count / len(labels) for count in correct]
    if correct:
        # One division over all seeds, so a mean exactly at the gate compares exactly.
        metrics.update(accuracy=sum(correct) / (len(correct) * len(labels)),
                       accuracy_std=sample_std(accuracies), accuracy_min=min(accuracies))
    if times:  # the score's seconds, on the trial's time basis; both bases reported
        metrics.update(train_seconds=float(np.mean(times)), train_seconds_std=sample_std(times),
                       wall_seconds=float(np.mean([r.wall_seconds for r in finished])),
                       cpu_seconds=float(np.mean([r.cpu_seconds for r in finished])))

    gates = applied_gates(harness, GATES)
    if failures:
        return failed(failures, metrics, gates)
    mean = metrics["accuracy"]
    if mean < gate:
        per_seed = ", ".join(f"{a:.4f}" for a in accuracies)
        return Outcome("disqualified", metrics=metrics, gates=gates, excerpt=clip(
            f"gate accuracy >= {gate:g} missed: mean {mean:.4f} over {len(accuracies)} seeds "
            f"({per_seed})"))
    return Outcome("ok", score=round(metrics["train_seconds"], 4), metrics=metrics, gates=gates)


def sample_std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


if __name__ == "__main__":
    sys.exit(run_cli(None, PROFILES, prepare, score))
