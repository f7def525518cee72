"""What the language-model evaluators share: offline text, tokenizer tables, bpb, child processes.

Harness-owned (outside every workspace), imports neither `mlflow` nor `mlflow_autoresearch`.

- Offline text for the tiny profiles (docs/reference/environments.md 5.2): the help topics of
  `pydoc_data` and the standard library's own sources, split into documents by a seeded shuffle.
- Bytes per token from a SentencePiece model, with the public Parameter Golf rule
  (environments.md 2.2): control/unknown/unused pieces 0 bytes, byte-fallback pieces 1 byte,
  normal pieces the UTF-8 length without the leading "\u2581", plus 1 for that space unless the
  previous token is a boundary. Summed over a stream, this is the UTF-8 length of the text the
  tokens decode to (after the tokenizer's normalization).
- `bits_per_byte`: summed token losses in nats over summed target bytes.
- `flip_probe`: the token-flip test of causality (a later token must not move an earlier loss).
- `run_child`: the evaluator's own subprocess with a deadline, for work that imports a trial's
  model code (which must never run inside the evaluator itself). It stays in the evaluator's
  process group, which the harness kills on every exit path, and dies with the evaluator (a
  parent-death signal); `score_in_child` runs one seed's scoring that way and labels a hang or
  a crash.
"""

from __future__ import annotations

import ctypes
import importlib.util
import math
import os
import random
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from _common import crash_excerpt, read_tail, sandboxed

SPACE = "\u2581"  # SentencePiece's word-boundary marker
NORMALIZATION_TOLERANCE = 1e-4  # |sum of probabilities - 1| allowed (environments.md 6)


# -------------------------------------------------------------------------------------------------
# Offline text
# -------------------------------------------------------------------------------------------------

def offline_documents(max_doc_chars: int) -> list[str]:
    """Every pydoc help topic and standard-library source file, in a fixed order, each cut to
    `max_doc_chars`. Test suites, site-packages and generated tables are left out."""
    from pydoc_data.topics import topics

    docs = [topics[key] for key in sorted(topics)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "site-packages", "dist-packages", "idle_test", "__pycache__"}
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if skip & set(rel.parts) or path.stat().st_size < 2000:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        docs.append(text[:max_doc_chars])
    return [d for d in docs if d.strip()]


def split_documents(docs: list[str], seed: int, val_fraction: float, max_chars: int
                    ) -> tuple[list[str], list[str]]:
    """Shuffle with `seed`, keep documents until `max_chars`, and take the first `val_fraction`
    of the kept documents as validation (as the public challenge takes its first documents)."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    kept, total = [], 0
    for i in order:
        if total >= max_chars:
            break
        kept.append(docs[i])
        total += len(docs[i])
    n_val = max(1, round(len(kept) * val_fraction))
    return kept[n_val:], kept[:n_val]


def train_sentencepiece(docs: list[str], vocab_size: int, prefix: Path) -> Path:
    """Train a byte-fallback BPE SentencePiece model on `docs`; returns the `.model` path.

    pad 0, bos 1, eos 2, unk 3, digits split, NFKC normalization: our settings, modelled on the
    public Parameter Golf tokenizers (SP1024 / SP8192). Unshuffled input on one thread, so the
    same documents give the same model.
    """
    import sentencepiece as spm

    prefix.parent.mkdir(parents=True, exist_ok=True)
    corpus = prefix.with_suffix(".txt")
    corpus.write_text("\n".join(line for doc in docs for line in doc.splitlines() if line.strip()),
                      encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, split_digits=True, normalization_rule_name="nmt_nfkc",
        add_dummy_prefix=False, character_coverage=0.9995, pad_id=0, bos_id=1, eos_id=2,
        unk_id=3, input_sentence_size=2_000_000, shuffle_input_sentence=False,
        num_threads=1, max_sentence_length=8192, minloglevel=2)
    corpus.unlink()
    return prefix.with_suffix(".model")


def encode_documents(model_path: Path, docs: list[str]) -> np.ndarray:
    """One uint16 stream: BOS, then each document's tokens, for every document in order."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    bos = sp.bos_id()
    pieces: list[int] = []
    for ids in sp.encode(docs):
        pieces.append(bos)
        pieces.extend(ids)
    if sp.get_piece_size() > 65535:
        raise ValueError("vocabulary too large for uint16 tokens")
    return np.asarray(pieces, dtype=np.uint16)


# -------------------------------------------------------------------------------------------------
# Bits per byte
# -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ByteTables:
    """Per token id: bytes of its piece, whether it opens with a space, whether it is a boundary."""

    base_bytes: np.ndarray      # int64
    leading_space: np.ndarray   # bool
    boundary: np.ndarray        # bool

    @property
    def vocab_size(self) -> int:
        return len(self.base_bytes)


def sentencepiece_tables(model_path: Path) -> ByteTables:
    """The public Parameter Golf byte accounting for every piece of a SentencePiece model."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    n = sp.get_piece_size()
    base = np.zeros(n, dtype=np.int64)
    space = np.zeros(n, dtype=bool)
    boundary = np.zeros(n, dtype=bool)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            boundary[i] = True
        elif sp.is_byte(i):
            base[i] = 1
        else:
            piece = sp.id_to_piece(i)
            space[i] = piece.startswith(SPACE)
            base[i] = len(piece.removeprefix(SPACE).encode("utf-8"))
    return ByteTables(base, space, boundary)


def target_bytes(tokens: np.ndarray, tables: ByteTables) -> np.ndarray:
    """Bytes of each target tokens[1:], given the token before it (int64, one per target)."""
    prev, tgt = tokens[:-1].astype(np.int64), tokens[1:].astype(np.int64)
    extra = tables.leading_space[tgt] & ~tables.boundary[prev]
    return tables.base_bytes[tgt] + extra.astype(np.int64)


def bits_per_byte(nll_nats: np.ndarray, n_bytes: np.ndarray) -> float:
    """Summed token losses (nats) over summed bytes, in bits per byte (float64 throughout)."""
    total_bytes = float(np.sum(n_bytes, dtype=np.float64))
    if total_bytes <= 0:
        raise ValueError("no target bytes to score")
    return float(np.sum(nll_nats, dtype=np.float64)) / math.log(2) / total_bytes


# -------------------------------------------------------------------------------------------------
# Trial code, always in a child process
# -------------------------------------------------------------------------------------------------

def load_module(path: Path, name: str) -> ModuleType:
    """Import a recipe file from a trial's workspace as module `name` (its `__main__` never runs)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class ChildResult:
    exit_code: int
    timed_out: bool
    seconds: float


def score_in_child(argv: list[str], workspace: Path, recipe: str, timeout: float, work: Path, out: Path,
                   seed: int, what: str) -> tuple[str, str]:
    """Run the evaluator's child on one seed in the harness's sandbox (it sees the workspace,
    the evaluators and the files its argv names read-only, and writes only `work`), with the
    workspace's recipe folder first on its PYTHONPATH, killed at `timeout`: ("ok", "") once it
    wrote `out`, else (label, excerpt)."""
    path = os.pathsep.join(filter(None, [str(workspace / Path(recipe).parent), os.environ.get("PYTHONPATH")]))
    inputs = [Path(a) for a in argv[1:] if os.path.isabs(a) and os.path.exists(a)]
    argv = sandboxed(argv, [workspace, Path(__file__).resolve().parent, *inputs], [work])
    child = run_child(argv, timeout, work / "child.stdout.txt", work / "child.stderr.txt", {"PYTHONPATH": path})
    if child.timed_out:
        return "eval_budget_overrun", (f"seed {seed}: evaluation killed after {child.seconds:.1f} s, "
                                       f"past the eval budget")
    if child.exit_code != 0 or not out.is_file():
        why = crash_excerpt(read_tail(work / "child.stderr.txt"), recipe) or "(no stderr)"
        return "crash", f"seed {seed}: evaluating the {what} failed\n{why}"
    return "ok", ""


def run_child(argv: list[str], timeout: float, stdout: Path, stderr: Path,
              env: dict[str, str] | None = None) -> ChildResult:
    """Run `argv` in the evaluator's own process group; past `timeout` seconds, or if the
    evaluator is interrupted, kill it."""
    stdout.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                preexec_fn=die_with_parent, env={**os.environ, **(env or {})})
    try:
        code = proc.wait(timeout=max(0.0, timeout))
        timed_out = False
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
        timed_out = True
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return ChildResult(code, timed_out, time.monotonic() - started)


def die_with_parent() -> None:
    """Between fork and exec: ask Linux to SIGKILL this process when its parent dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


# -------------------------------------------------------------------------------------------------
# Legality
# -------------------------------------------------------------------------------------------------

def flip_probe(target_logprobs: Callable[[np.ndarray], np.ndarray], tokens: np.ndarray, vocab: int
               ) -> tuple[float, int]:
    """Score `tokens` twice, the second time with one token replaced at 3/4 of their length.

    `target_logprobs` maps a stream to each target tokens[1:]'s log-probability. Every target
    before the replaced token must keep a bit-identical log-probability (the PR #1240 token-flip
    test). Returns (largest change before the flip, first changed target or -1).
    """
    j = len(tokens) * 3 // 4 + 7
    flipped = tokens.copy()
    flipped[j] = (int(tokens[j]) + vocab // 2) % vocab
    before = slice(0, j - 1)  # targets 1..j-1 sit at indices 0..j-2
    diff = np.abs(target_logprobs(tokens)[before] - target_logprobs(flipped)[before])
    changed = np.flatnonzero(diff != 0)
    return float(diff.max(initial=0.0)), int(changed[0]) + 1 if len(changed) else -1
