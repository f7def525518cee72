"""Harness-owned evaluator for airbench96 (contract: evaluators/README.md).

prepare: builds `public/` (train.pt, test_images.pt, meta.json) and `private/test_labels.npy`.
  - tiny: scikit-learn's bundled digits, a stratified 1,297 / 500 split (seed 1234), bilinearly
    upsampled from 8x8 to 16x16 (docs/reference/environments.md 5.5);
  - real: CIFAR-10 from the official python tarball, checked against its published MD5.
score: accuracy from each seed's `test_predictions.npy` against the private labels, computed
  here; the score is the mean harness-measured wall time per seed (paper.md 5.3). Nothing the
  recipe prints or writes to result.json is read. Gate: mean accuracy over all expected seeds
  >= gates.accuracy, strict.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402  (the path above makes this work from any cwd)
    DataUnavailable,
    HarnessError,
    Outcome,
    SeedRun,
    clip,
    crash_excerpt,
    first_label,
    load_harness,
    read_tail,
    run_cli,
    write_atomic,
)

PROFILES = ("tiny", "real")
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


def download(url: str, path: Path) -> None:
    """Fetch `url` to `path` (via a temporary file); DataUnavailable says how to do it by hand."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DataUnavailable(f"cannot download {url} ({exc}); fetch it by hand and put it at "
                              f"{path}") from None
    partial.replace(path)


def prepare(profile: str, data_dir: Path) -> None:
    """Build the profile's data under `data_dir` unless an identical build is already there."""
    public, private = data_dir / "public", data_dir / "private"
    meta_path, labels_path = public / "meta.json", private / "test_labels.npy"
    files = [public / "train.pt", public / "test_images.pt", labels_path]
    if meta_path.is_file() and all(f.is_file() for f in files):
        meta = json.loads(meta_path.read_text())
        if meta.get("profile") == profile and meta.get("format") == FORMAT:
            return
    if profile == "tiny":
        train_x, train_y, test_x, test_y = digits_split()
        meta = {"name": "digits", "mirror_symmetric": False}
    else:
        train_x, train_y, test_x, test_y = cifar_split(data_dir)
        meta = {"name": "cifar10", "mirror_symmetric": True}
    meta.update(profile=profile, format=FORMAT, n_classes=10, image_size=int(train_x.shape[1]),
                channels=int(train_x.shape[3]), n_train=len(train_x), n_test=len(test_x))
    save_tensors(public / "train.pt", images=train_x, labels=train_y)
    save_tensors(public / "test_images.pt", images=test_x)
    buffer = io.BytesIO()
    np.save(buffer, test_y)
    write_atomic(labels_path, buffer.getvalue())
    # meta.json last: its presence marks a finished build.
    write_atomic(meta_path, json.dumps(meta, indent=1).encode())


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
               labels: np.ndarray, n_classes: int) -> tuple[str, int | None, str]:
    """(label, correct count or None, excerpt) for one expected seed; label `ok` if it passed."""
    if run is None:
        return "crash", None, f"seed {seed} did not run (the runner stops at the first failed seed)"
    over = harness_budget is not None and run.wall_seconds > harness_budget
    if run.timed_out or over:
        budget = f"the {harness_budget:g} s budget" if harness_budget is not None else "its budget"
        return ("train_budget_overrun", None, f"seed {seed} ran {run.wall_seconds:.1f} s, over "
                f"{budget}{' and was killed' if run.timed_out else ''}")
    if run.exit_code != 0:
        why = crash_excerpt(read_tail(run.stderr), RECIPE) or "(no stderr)"
        return "crash", None, f"seed {seed} exited with code {run.exit_code}\n{why}"
    correct = seed_correct(run, labels, n_classes)
    if isinstance(correct, str):
        return "crash", None, correct
    return "ok", correct, ""


def score(profile: str, data_dir: Path, run_dir: Path) -> Outcome:
    """Label and score one trial from its harness.json and its seeds' predictions."""
    harness = load_harness(run_dir)
    meta_path = data_dir / "public" / "meta.json"
    labels_path = data_dir / "private" / "test_labels.npy"
    if not meta_path.is_file() or not labels_path.is_file():
        raise HarnessError(f"no prepared data under {data_dir}; run prepare first")
    meta = json.loads(meta_path.read_text())
    if meta.get("profile") != profile or harness.profile != profile:
        raise HarnessError(f"profile mismatch: --profile {profile}, data {meta.get('profile')}, "
                           f"harness.json {harness.profile}")
    gate = harness.gates.get("accuracy")
    if gate is None:
        raise HarnessError("harness.json has no gates.accuracy")
    labels = np.load(labels_path, allow_pickle=False)
    budget = harness.budgets.get("train_seconds")

    failures: list[tuple[str, str]] = []
    correct: list[int] = []
    walls = [run.wall_seconds for run in harness.seeds.values()
             if run.exit_code == 0 and not run.timed_out]
    for seed in harness.expected_seeds:
        label, count, excerpt = check_seed(harness.seeds.get(seed), seed, budget, labels,
                                           int(meta["n_classes"]))
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
    if walls:
        metrics.update(train_seconds=float(np.mean(walls)), train_seconds_std=sample_std(walls))

    if failures:
        label = first_label(label for label, _ in failures)
        excerpt = next(text for found, text in failures if found == label)
        return Outcome(label, metrics=metrics, excerpt=clip(excerpt))
    mean = metrics["accuracy"]
    if mean < gate:
        per_seed = ", ".join(f"{a:.4f}" for a in accuracies)
        return Outcome("disqualified", metrics=metrics, excerpt=clip(
            f"gate accuracy >= {gate:g} missed: mean {mean:.4f} over {len(accuracies)} seeds "
            f"({per_seed})"))
    return Outcome("ok", score=round(metrics["train_seconds"], 4), metrics=metrics)


def sample_std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


if __name__ == "__main__":
    sys.exit(run_cli(None, PROFILES, prepare, score))
