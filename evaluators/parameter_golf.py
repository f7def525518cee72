"""Harness-owned evaluator for parameter_golf (contract: evaluators/README.md).

prepare:
  - tiny: offline text (pydoc topics + standard-library sources), a seeded shuffle (seed 1234),
    the first 5% of documents held out as validation (as the challenge holds out its first
    documents), a 512-piece SentencePiece BPE trained on the rest; token shards in the public
    challenge format (int32 header: magic 20240520, version 1, count; then uint16 tokens, BOS
    before each document). Validation is cut to its first 32,768 tokens.
  - real: the public challenge's FineWeb SP1024 shards and tokenizer (downloaded, or placed by hand).
  `public/` gets the train shards, the tokenizer and meta.json; `private/` gets the validation
  shard, which the recipe is never given.
score, per seed:
  1. the harness's timing and exit code (train_budget_overrun, crash; a seed the launcher stopped
     for opening `private/` during training is `illegal`);
  2. the artifact measured here: bytes of the workspace's recipe/train_gpt.py plus every file the
     seed wrote except result.json (model.ptz is the artifact), against budgets.artifact_bytes;
  3. in a child process, under what is left of budgets.eval_seconds: the workspace's recipe
     loads model.ptz (`load_artifact`) and yields log-probabilities over the validation stream
     (`score_stream`); the child keeps only each target's log-probability, checks normalization
     and single-pass coverage, and runs the flip probes for causality and score-first TTT;
  4. val_bpb = summed target losses in nats / ln 2 / summed target bytes (environments.md 2.2).
Score: mean val_bpb over seeds (minimize). Nothing the recipe prints or writes to result.json is read.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402  (the path above makes this work from any cwd)
    HarnessError,
    Outcome,
    SeedRun,
    applied_gates,
    build_once,
    download,
    failed,
    load_harness,
    prepared_meta,
    process_status,
    read_tail,
    run_cli,
    write_atomic,
)
import _lm  # noqa: E402

PROFILES = ("tiny", "real", "search")  # search: the tiny data, a shorter run
CPU_PROFILES = ("tiny", "search")
GATES = ()  # no quality gate: size, budgets and legality probes decide
RECIPE = "recipe/train_gpt.py"
ARTIFACT = "model.ptz"
INFORMATIONAL = {"result.json"}
FORMAT = 1  # bump when the prepared files change, so cached data is rebuilt
SHARD_MAGIC, SHARD_VERSION, HEADER_INTS = 20240520, 1, 256
DATA_ACCESS_EXIT = 86  # projects/parameter_golf/harness/launch.py exits with this
EVAL_MARGIN_SECONDS = 3.0  # kept back from eval_seconds to write the outcome

TINY = dict(seed=1234, vocab=512, max_doc_chars=16_000, max_chars=4_000_000, val_fraction=0.05,
            val_tokens=32_768, probe_tokens=8_192)
REAL_BASE = "https://huggingface.co/datasets/willdepueoai/parameter-golf/resolve/main/datasets"
REAL_TRAIN_SHARDS = 80  # the public `cached_challenge_fineweb.py --train-shards 80`
REAL_PROBE_TOKENS = 131_072


# -------------------------------------------------------------------------------------------------
# prepare
# -------------------------------------------------------------------------------------------------

def write_shard(path: Path, tokens: np.ndarray) -> None:
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, len(tokens))
    write_atomic(path, header.tobytes() + tokens.astype(np.uint16).tobytes())


def read_shard(path: Path) -> np.ndarray:
    header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
    if len(header) < 3 or header[0] != SHARD_MAGIC or header[1] != SHARD_VERSION:
        raise HarnessError(f"{path} is not a token shard")
    return np.fromfile(path, dtype=np.uint16, offset=HEADER_INTS * 4)[: header[2]]


def prepare_tiny(public: Path, private: Path) -> dict:
    docs = _lm.offline_documents(TINY["max_doc_chars"])
    train_docs, val_docs = _lm.split_documents(docs, TINY["seed"], TINY["val_fraction"],
                                               TINY["max_chars"])
    model = _lm.train_sentencepiece(train_docs, TINY["vocab"], public / "tokenizer")
    train = _lm.encode_documents(model, train_docs)
    val = _lm.encode_documents(model, val_docs)[: TINY["val_tokens"]]
    write_shard(public / "fineweb_train_000000.bin", train)
    write_shard(private / "fineweb_val_000000.bin", val)
    return {"name": "python-stdlib-text", "vocab_size": TINY["vocab"], "n_train_tokens": len(train),
            "n_val_tokens": len(val), "n_train_docs": len(train_docs), "n_val_docs": len(val_docs)}


BY_HAND = ("fetch the SP1024 variant as the challenge does (`python3 data/cached_challenge_fineweb.py "
           f"--variant sp1024 --train-shards {REAL_TRAIN_SHARDS}` in openai/parameter-golf) and put "
           "datasets/<same path> under {downloads}")


def prepare_real(data_dir: Path, public: Path, private: Path) -> dict:
    """Fetch (or find placed by hand under D/downloads) the public SP1024 shards and tokenizer."""
    downloads = data_dir / "downloads"
    names = [f"fineweb10B_sp1024/fineweb_train_{i:06d}.bin" for i in range(REAL_TRAIN_SHARDS)]
    names += ["fineweb10B_sp1024/fineweb_val_000000.bin", "tokenizers/fineweb_1024_bpe.model"]
    for name in names:
        target = downloads / name
        if not target.is_file():
            download(f"{REAL_BASE}/{name}", target, BY_HAND.format(downloads=downloads))
    for name in names[:REAL_TRAIN_SHARDS]:
        link(downloads / name, public / Path(name).name)
    link(downloads / names[-1], public / "tokenizer.model")
    link(downloads / names[-2], private / "fineweb_val_000000.bin")
    val = read_shard(private / "fineweb_val_000000.bin")
    return {"name": "fineweb10B_sp1024", "vocab_size": 1024, "n_val_tokens": len(val)}


def link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    target.symlink_to(source.resolve())


def prepare(profile: str, data_dir: Path) -> None:
    """Build the profile's data under `data_dir` unless an identical build is already there."""
    build_once(data_dir, profile, FORMAT, lambda public, private: prepare_tiny(public, private)
               if profile in CPU_PROFILES else prepare_real(data_dir, public, private),
               ["private/fineweb_val_000000.bin"])


# -------------------------------------------------------------------------------------------------
# The child: the only place trial code runs on the evaluator's side
# -------------------------------------------------------------------------------------------------

def collect(module, model, tokens: np.ndarray, hp, ttt: bool) -> tuple[np.ndarray, np.ndarray,
                                                                         float, str]:
    """Run the recipe's `score_stream`; keep each target's log-probability (float64).

    Returns (log-probabilities per target, times each target was scored, worst normalization
    error, problem or ''). Targets are tokens[1:]; row r of a chunk starting at t predicts tokens[t+r].
    """
    import torch

    n, vocab = len(tokens), None
    logp = np.zeros(n - 1, dtype=np.float64)
    counts = np.zeros(n - 1, dtype=np.int64)
    worst = 0.0
    targets = torch.from_numpy(tokens.astype(np.int64))
    for start, rows in module.score_stream(model, targets.clone(), hp, ttt):
        rows = rows.detach().double()  # stays on the recipe's device: only vectors come back
        if rows.ndim != 2 or not 1 <= start or start + len(rows) > n:
            return logp, counts, worst, f"score_stream yielded rows {tuple(rows.shape)} at {start}"
        vocab = rows.shape[1] if vocab is None else vocab
        if rows.shape[1] != vocab:
            return logp, counts, worst, "score_stream changed the vocabulary size mid-stream"
        sums = torch.logsumexp(rows, dim=1).exp()
        worst = max(worst, float((sums - 1).abs().max()))
        index = targets[start:start + len(rows)].to(rows.device).unsqueeze(1)
        picked = rows.gather(1, index)[:, 0].cpu().numpy()
        logp[start - 1:start - 1 + len(rows)] = picked
        counts[start - 1:start - 1 + len(rows)] += 1
    return logp, counts, worst, ""


def flip_probe(module, artifact: Path, profile: str, hp, tokens: np.ndarray, vocab: int,
               ttt: bool) -> tuple[float, int]:
    """`_lm.flip_probe` through `collect`, each pass on a freshly loaded model."""
    return _lm.flip_probe(lambda stream: collect(module, module.load_artifact(artifact, profile),
                                                 stream, hp, ttt)[0], tokens, vocab)


def child_main(argv: list[str]) -> int:
    """`logprobs RECIPE PROFILE ARTIFACT TOKENS VOCAB PROBE_TOKENS OUT`: what `score` needs."""
    recipe, profile, artifact, tokens_path, vocab, probe_tokens, out = argv
    vocab, probe_tokens = int(vocab), int(probe_tokens)
    module = _lm.load_module(Path(recipe), "trial_recipe")
    hp = module.load_knobs(profile)
    tokens = np.load(tokens_path)
    started = time.perf_counter()
    model = module.load_artifact(Path(artifact), profile)
    logp, counts, worst, problem = collect(module, model, tokens, hp, bool(hp.ttt_enabled))
    eval_seconds = time.perf_counter() - started
    prefix = tokens[:probe_tokens]
    causal_diff, causal_at = flip_probe(module, Path(artifact), profile, hp, prefix, vocab, False)
    ttt_diff, ttt_at = (flip_probe(module, Path(artifact), profile, hp, prefix, vocab, True)
                        if hp.ttt_enabled else (0.0, -1))
    out_vocab = int(module.load_artifact(Path(artifact), profile).vocab_size)
    np.savez(out, logp=logp, counts=counts, normalization_error=worst, problem=problem,
             eval_seconds=eval_seconds, causal_diff=causal_diff, causal_at=causal_at,
             ttt_diff=ttt_diff, ttt_at=ttt_at, model_vocab=out_vocab)
    return 0


# -------------------------------------------------------------------------------------------------
# score
# -------------------------------------------------------------------------------------------------

def artifact_files(out_dir: Path) -> list[Path]:
    """Every file a seed wrote that counts towards the artifact (all but result.json)."""
    return sorted(p for p in out_dir.rglob("*") if p.is_file() and p.name not in INFORMATIONAL)


def run_status(run: SeedRun | None, seed: int, budget: float | None,
               basis: str = "wall") -> tuple[str, str]:
    """(label, excerpt) from the harness's record of one seed's training process."""
    stderr = read_tail(run.stderr) if run is not None else ""
    blocked = run is not None and run.exit_code == DATA_ACCESS_EXIT
    if blocked or "harness: the training phase opened" in stderr:
        line = next((text for text in stderr.splitlines() if "opened validation data" in text), "")
        return "illegal", f"probe data-isolation: seed {seed}: {line.strip()}"
    label, excerpt = process_status(run, seed, budget, RECIPE, basis)
    if label == "ok" and not (run.out_dir / ARTIFACT).is_file():
        return "crash", f"seed {seed} wrote no {ARTIFACT}"
    return label, excerpt


def judge_child(result: dict, n_targets: int, vocab: int) -> tuple[str, str]:
    """(label, excerpt) from the child's measurements: the legality probes and completeness."""
    if str(result["problem"]):
        return "crash", str(result["problem"])
    if int(result["model_vocab"]) != vocab:
        return "illegal", (f"probe normalization: the model predicts over {int(result['model_vocab'])}"
                           f" tokens, the tokenizer has {vocab}")
    if float(result["normalization_error"]) > _lm.NORMALIZATION_TOLERANCE:
        return "illegal", (f"probe normalization: a predicted distribution sums to 1 "
                           f"{float(result['normalization_error']):+.3g}")
    if int(result["causal_at"]) >= 0:
        return "illegal", (f"probe causality: replacing one validation token changed the loss at "
                           f"earlier target {int(result['causal_at'])} (by up to "
                           f"{float(result['causal_diff']):.3g} nats), test-time training off")
    if int(result["ttt_at"]) >= 0:
        return "illegal", (f"probe score-before-update: with test-time training on, replacing one "
                           f"validation token changed the loss at earlier target "
                           f"{int(result['ttt_at'])} (by up to {float(result['ttt_diff']):.3g} "
                           f"nats): the model adapted on tokens it had not scored yet")
    counts = result["counts"]
    if (counts > 1).any():
        return "illegal", (f"probe single-pass: {int((counts > 1).sum())} targets were scored more "
                           f"than once")
    if (counts == 0).any():
        return "crash", f"{int((counts == 0).sum())} of {n_targets} targets were never scored"
    if not np.isfinite(result["logp"]).all():
        return "crash", "a target's log-probability is not finite"
    return "ok", ""


def evaluate_seed(run: SeedRun, workspace: Path, profile: str, tokens_path: Path, vocab: int,
                  probe_tokens: int, seconds_left: float, work: Path) -> tuple[str, str, dict]:
    """Run the child on one seed's artifact: (label, excerpt, child's measurements)."""
    work.mkdir(parents=True, exist_ok=True)
    artifact = work / ARTIFACT
    shutil.copyfile(run.out_dir / ARTIFACT, artifact)
    out = work / "child.npz"
    argv = [sys.executable, str(Path(__file__).resolve()), "logprobs", str(workspace / RECIPE), profile,
            str(artifact), str(tokens_path), str(vocab), str(probe_tokens), str(out)]
    label, excerpt = _lm.score_in_child(argv, workspace, RECIPE, seconds_left, work, out, run.seed, "artifact")
    if label != "ok":
        return label, excerpt, {}
    with np.load(out) as doc:
        result = {k: doc[k] for k in doc.files}
    return (*judge_child(result, len(result["logp"]), vocab), result)


def score(profile: str, data_dir: Path, run_dir: Path) -> Outcome:
    started = time.monotonic()
    harness = load_harness(run_dir)
    public, private = data_dir / "public", data_dir / "private"
    val_path = private / "fineweb_val_000000.bin"
    meta = prepared_meta(data_dir, profile, harness, [str(val_path.relative_to(data_dir))])
    workspace = harness.workspace
    if not (workspace / RECIPE).is_file():
        raise HarnessError(f"no {RECIPE} in the trial workspace {workspace}")
    vocab = int(meta["vocab_size"])
    tables = _lm.sentencepiece_tables(public / "tokenizer.model")
    tokens = read_shard(val_path)
    tokens_path = run_dir / "evaluator" / "val_tokens.npy"
    tokens_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(tokens_path, tokens)
    n_bytes = _lm.target_bytes(tokens, tables)
    probe_tokens = TINY["probe_tokens"] if profile in CPU_PROFILES else REAL_PROBE_TOKENS
    code_bytes = (workspace / RECIPE).stat().st_size
    cap = harness.budgets.get("artifact_bytes")
    eval_budget = harness.budgets.get("eval_seconds", float("inf"))
    train_budget = harness.budgets.get("train_seconds")

    failures: list[tuple[str, str]] = []
    metrics: dict[str, float] = {"code_bytes": float(code_bytes),
                                 "n_expected_seeds": float(len(harness.expected_seeds))}
    bpbs, walls, sizes, evals = [], [], [], []
    for seed in harness.expected_seeds:
        run = harness.seeds.get(seed)
        label, excerpt = run_status(run, seed, train_budget, harness.time_basis)
        if run is not None and run.exit_code == 0 and not run.timed_out:
            walls.append(run.wall_seconds)
        if label != "ok":
            failures.append((label, excerpt))
            continue
        size = code_bytes + sum(p.stat().st_size for p in artifact_files(run.out_dir))
        sizes.append(size)
        if cap is not None and size > cap:
            failures.append(("size_blocked", f"seed {seed}: artifact {size:,} bytes (code "
                             f"{code_bytes:,} + model files) is over the {cap:,.0f}-byte cap"))
            continue
        left = eval_budget - (time.monotonic() - started) - EVAL_MARGIN_SECONDS
        label, excerpt, result = evaluate_seed(run, workspace, profile, tokens_path, vocab,
                                               probe_tokens, left,
                                               run_dir / "evaluator" / f"seed{seed}")
        if result:
            evals.append(float(result["eval_seconds"]))
        if label != "ok":
            failures.append((label, excerpt))
            continue
        bpbs.append(_lm.bits_per_byte(-result["logp"], n_bytes))

    metrics["n_seeds"] = float(len(bpbs))
    if walls:
        metrics["train_seconds"] = float(np.mean(walls))
    if sizes:
        metrics["artifact_bytes"] = float(max(sizes))
    if evals:
        metrics["eval_seconds"] = float(np.mean(evals))
    if bpbs:
        metrics["val_bpb"] = float(np.mean(bpbs))
        metrics["val_bpb_std"] = float(np.std(bpbs, ddof=1)) if len(bpbs) > 1 else 0.0
    metrics.update(n_val_tokens=float(len(tokens)), n_val_bytes=float(n_bytes.sum()))
    gates = applied_gates(harness, GATES)
    return failed(failures, metrics, gates) or Outcome("ok", score=round(metrics["val_bpb"], 6),
                                                       metrics=metrics, gates=gates)


if __name__ == "__main__":
    if sys.argv[1:2] == ["logprobs"]:
        sys.exit(child_main(sys.argv[2:]))
    sys.exit(run_cli(None, PROFILES, prepare, score))
