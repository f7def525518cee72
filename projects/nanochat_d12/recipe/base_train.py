"""NanoChat-D12: our own nanochat-style GPT pretraining recipe, scored by CORE.

Profile tiny (CPU, 1 thread, offline stdlib text, SentencePiece vocab 1024, depth 2): see
knowledge.md for the measured baseline. Profile real (ClimbMix, depth 12, 8 GPUs under torchrun):
not measured by us; the paper's d12 baseline scored CORE 0.1618 (docs/reference/paper.md 5.2).

What one run does:
1. Reads parquet shards with a `text` column from --data-dir/base_data and the SentencePiece
   tokenizer from --data-dir/tokenizer; tokenizes each document behind a BOS token.
2. Trains a GPT in nanochat's shape: width DEPTH * ASPECT_RATIO, heads of HEAD_DIM, rotary
   embeddings, QK-norm with a fixed scale, ReLU^2 MLP, untied head, tanh logit softcap,
   sliding-window layers by WINDOW_PATTERN with the last layer always full, optional GQA.
3. Muon for block matrices, AdamW for embedding, head and scalars; the horizon is
   TARGET_PARAM_DATA_RATIO x scaling parameters (matrices + head) in tokens; LR warmup, constant,
   then a linear warmdown over the last WARMDOWN_RATIO to FINAL_LR_FRAC; Muon momentum
   MOMENTUM_START -> MOMENTUM_PEAK, then MOMENTUM_WARMDOWN during the warmdown; Muon weight decay
   decays to 0 with a cosine.
4. Saves `model.pt` (weights and the architecture knobs).

The evaluator (evaluators/nanochat_d12.py) loads model.pt through `load_checkpoint` in its own child
process and computes CORE and validation bpb with its own code. Anything printed is informational.

Usage: python recipe/base_train.py --profile {tiny,real} --seed N --data-dir D --out-dir O
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

# =================================================================================================
# Knobs. One per line, `NAME = <literal>  # comment`; a dict {"tiny": x, "real": y} differs by
# profile. Real values are nanochat's d12 defaults (docs/reference/environments.md 3.1); tiny
# sizes follow environments.md 5.4.
# =================================================================================================
# Architecture (DEPTH is fixed by the evaluator's depth gate)
DEPTH = {"tiny": 2, "real": 12, "search": 2}  # transformer blocks
ASPECT_RATIO = 64  # model width = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM
HEAD_DIM = {"tiny": 64, "real": 128, "search": 64}  # channels per attention head
KV_HEAD_RATIO = 1  # query heads per key/value head (1 = no GQA)
MAX_SEQ_LEN = {"tiny": 128, "real": 2048, "search": 128}  # training context
WINDOW_PATTERN = {"tiny": "SL", "real": "SSSL", "search": "SL"}  # S = sliding window, L = full; tiled, last layer L
SHORT_WINDOW = {"tiny": 32, "real": 512, "search": 32}  # tokens an S layer attends to
ROPE_BASE = 100000.0  # rotary frequency base
QK_SCALE = 1.2  # multiplier on q and k after QK-norm
LOGIT_SOFTCAP = 15.0  # tanh softcap on the logits
MLP_MULT = 4  # MLP hidden width = MLP_MULT * width
# Optimizer
MATRIX_LR = 0.02  # Muon learning rate for block matrices
EMBEDDING_LR = 0.3  # AdamW learning rate for the token embedding
UNEMBEDDING_LR = 0.008  # AdamW learning rate for the untied head
SCALAR_LR = 0.5  # AdamW learning rate for per-layer scalars
ADAM_BETA1 = 0.8  # AdamW beta1
ADAM_BETA2 = 0.95  # AdamW beta2
WEIGHT_DECAY = 0.28  # Muon weight decay at step 0; decays to 0 with a cosine
MUON_NS_STEPS = 5  # Newton-Schulz iterations per Muon update
# Schedule
TARGET_PARAM_DATA_RATIO = {"tiny": 0.5, "real": 12, "search": 0.1}  # training tokens per scaling parameter
TOTAL_BATCH_TOKENS = {"tiny": 2048, "real": 524288, "search": 2048}  # tokens per optimizer step over all ranks
DEVICE_BATCH = {"tiny": 16, "real": 32, "search": 16}  # sequences per forward pass per rank
WARMUP_STEPS = {"tiny": 10, "real": 40, "search": 2}  # linear LR warmup
WARMDOWN_RATIO = 0.65  # final fraction of steps with a linear LR warmdown
FINAL_LR_FRAC = 0.05  # LR multiplier at the last step
MOMENTUM_START = 0.85  # Muon momentum at step 0
MOMENTUM_PEAK = 0.97  # Muon momentum after MOMENTUM_WARMUP_STEPS
MOMENTUM_WARMUP_STEPS = {"tiny": 50, "real": 400, "search": 10}  # steps to reach MOMENTUM_PEAK
MOMENTUM_WARMDOWN = 0.90  # Muon momentum during the LR warmdown
# Data
DOC_ALIGNED = True  # start every training row at a document's BOS (else anywhere in the stream)
# Systems
ATTENTION_BACKEND = "sdpa"  # "sdpa": torch SDPA (windows need a bool mask: slow path); "triton": kernels/
COMPUTE_DTYPE = {"tiny": "float32", "real": "bfloat16", "search": "float32"}  # autocast dtype of the forward on CUDA
DEVICE = {"tiny": "cpu", "real": "cuda", "search": "cpu"}  # torch device
THREADS = {"tiny": 1, "real": 0, "search": 1}  # torch CPU threads; 0 = torch's default
LOG_EVERY = {"tiny": 50, "real": 100, "search": 50}  # steps between training-loss lines
# =================================================================================================

KNOB_NAMES = tuple(name for name in list(globals()) if name.isupper())
PROFILES = ("tiny", "real", "search")
CHECKPOINT = "model.pt"
ARCH_KNOBS = ("depth", "aspect_ratio", "head_dim", "kv_head_ratio", "max_seq_len",
              "window_pattern", "short_window", "rope_base", "qk_scale", "logit_softcap",
              "mlp_mult", "attention_backend")


def load_knobs(profile: str) -> SimpleNamespace:
    """The knobs above with per-profile dicts resolved, as lower-case attributes."""
    values = {}
    for name in KNOB_NAMES:
        value = globals()[name]
        value = value[profile] if isinstance(value, dict) else value
        if isinstance(value, float) and value.is_integer() and name != "TARGET_PARAM_DATA_RATIO":
            value = int(value)
        values[name.lower()] = value
    return SimpleNamespace(**values)


# =================================================================================================
# Data
# =================================================================================================

def load_tokens(data_dir: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(token stream, BOS positions, vocabulary size) of every training shard."""
    import pyarrow.parquet as pq
    import sentencepiece as spm

    shards = sorted((data_dir / "base_data").glob("shard_*.parquet"))
    model = data_dir / "tokenizer" / "tokenizer.model"
    if not shards or not model.is_file():
        sys.exit(f"nanochat_d12: no base_data/shard_*.parquet or tokenizer under {data_dir}; "
                 f"build them with `python evaluators/nanochat_d12.py prepare --profile P "
                 f"--data-dir D` and pass D/public as --data-dir")
    sp = spm.SentencePieceProcessor(model_file=str(model))
    texts = [t for shard in shards for t in pq.read_table(shard, columns=["text"])["text"].to_pylist()]
    stream: list[int] = []
    starts = []
    for ids in sp.encode(texts):
        starts.append(len(stream))
        stream.append(sp.bos_id())
        stream.extend(ids)
    return np.asarray(stream, dtype=np.int64), np.asarray(starts), sp.get_piece_size()


def train_batches(stream: np.ndarray, starts: np.ndarray, hp: SimpleNamespace, rank: int,
                  world: int, gen: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless (inputs, targets) of DEVICE_BATCH rows of MAX_SEQ_LEN for this rank."""
    seq, rows = hp.max_seq_len, hp.device_batch
    tokens = torch.from_numpy(stream)
    valid = torch.from_numpy(starts[starts < len(stream) - seq - 1])
    while True:
        if hp.doc_aligned:
            pick = valid[torch.randint(0, len(valid), (rows * world,), generator=gen)]
        else:
            pick = torch.randint(0, len(stream) - seq - 1, (rows * world,), generator=gen)
        pick = pick[rank * rows:(rank + 1) * rows]
        window = tokens[pick.unsqueeze(1) + torch.arange(seq + 1)]
        yield window[:, :-1], window[:, 1:]


# =================================================================================================
# Model
# =================================================================================================

def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


def rotary(x: Tensor, base: float) -> Tensor:
    """Rotary embedding over the whole head; x is (B, H, T, D)."""
    d, t = x.size(-1), x.size(-2)
    inv = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    freqs = torch.outer(torch.arange(t, device=x.device, dtype=torch.float32), inv)
    cos, sin = freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)
    a, b = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def window_sizes(hp: SimpleNamespace) -> list[int]:
    """Per layer: attention window in tokens (0 = full), the pattern tiled, last layer full."""
    sizes = [hp.short_window if hp.window_pattern[i % len(hp.window_pattern)] == "S" else 0
             for i in range(hp.depth)]
    sizes[-1] = 0
    return sizes


def triton_attention():
    """The repository's fused attention (kernels/attention.py: causal, GQA, sliding windows; SDPA on
    machines where Triton cannot run). The harness puts the repository root on PYTHONPATH
    (autoresearch.yaml `python_path`), outside the workspace, so the kernels are not editable."""
    try:
        from kernels.attention import flash_attn_func
    except ImportError as error:
        raise ImportError(f"ATTENTION_BACKEND 'triton' needs the repository's kernels/ package on "
                          f"PYTHONPATH (autoresearch.yaml python_path adds it to trials): {error}") from None
    return flash_attn_func


class Attention(nn.Module):
    def __init__(self, hp: SimpleNamespace, width: int, window: int):
        super().__init__()
        if hp.attention_backend not in ("sdpa", "triton"):
            raise ValueError(f"ATTENTION_BACKEND must be 'sdpa' or 'triton', got {hp.attention_backend!r}")
        self.flash = triton_attention() if hp.attention_backend == "triton" else None
        self.head_dim = hp.head_dim
        self.heads = width // hp.head_dim
        self.kv_heads = max(1, self.heads // hp.kv_head_ratio)
        self.q = nn.Linear(width, self.heads * hp.head_dim, bias=False)
        self.kv = nn.Linear(width, 2 * self.kv_heads * hp.head_dim, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.window, self.qk_scale, self.rope_base = window, hp.qk_scale, hp.rope_base

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(b, t, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = rotary(rms_norm(q), self.rope_base) * self.qk_scale
        k = rotary(rms_norm(k), self.rope_base) * self.qk_scale
        if self.flash is not None:
            # (B, T, H, D) views, one dtype (custom ops see autocast's mixed outputs); a layer of
            # `window` tokens sees keys i - window < j <= i, FlashAttention's left = window - 1.
            q, k, v = (z.transpose(1, 2).to(v.dtype) for z in (q, k, v))
            y = self.flash(q, k, v, causal=True, window_size=(self.window - 1 if self.window else -1, 0))
            return self.proj(y.reshape(b, t, -1))
        gqa = self.kv_heads != self.heads
        if self.window and self.window < t:
            i = torch.arange(t, device=x.device)
            mask = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < self.window)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))


class Block(nn.Module):
    def __init__(self, hp: SimpleNamespace, width: int, window: int):
        super().__init__()
        self.attn = Attention(hp, width, window)
        self.up = nn.Linear(width, hp.mlp_mult * width, bias=False)
        self.down = nn.Linear(hp.mlp_mult * width, width, bias=False)
        nn.init.zeros_(self.down.weight)
        self.resid_lambda = nn.Parameter(torch.ones(()))
        self.x0_lambda = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, x0: Tensor) -> Tensor:
        x = self.resid_lambda * x + self.x0_lambda * x0
        x = x + self.attn(rms_norm(x))
        return x + self.down(F.relu(self.up(rms_norm(x))).square())


class GPT(nn.Module):
    """nanochat-shaped GPT; forward maps token ids (B, T) to float32 logits (B, T, vocab)."""

    def __init__(self, hp: SimpleNamespace, vocab_size: int):
        super().__init__()
        width = math.ceil(hp.depth * hp.aspect_ratio / hp.head_dim) * hp.head_dim
        self.vocab_size, self.depth, self.softcap = vocab_size, hp.depth, hp.logit_softcap
        self.embed = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.embed.weight, std=0.8)
        self.blocks = nn.ModuleList(Block(hp, width, w) for w in window_sizes(hp))
        self.head = nn.Linear(width, vocab_size, bias=False)
        nn.init.normal_(self.head.weight, std=0.001)

    def forward(self, idx: Tensor) -> Tensor:
        x = x0 = rms_norm(self.embed(idx))
        for block in self.blocks:
            x = block(x, x0)
        logits = self.head(rms_norm(x)).float()
        return self.softcap * torch.tanh(logits / self.softcap)

    def scaling_params(self) -> int:
        """Block matrices plus the head: nanochat's count for the tokens:params horizon."""
        blocks = sum(p.numel() for p in self.blocks.parameters() if p.ndim == 2)
        return blocks + self.head.weight.numel()


# =================================================================================================
# Optimization
# =================================================================================================

def newton_schulz(g: Tensor, steps: int) -> Tensor:
    """Approximately orthogonalise a matrix (quintic Newton-Schulz, the public Muon coefficients)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (g.norm() + 1e-7)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x.T if tall else x


class Muon:
    """Nesterov momentum, orthogonalised update, decoupled weight decay (lr * wd)."""

    def __init__(self, params: list[Tensor], ns_steps: int):
        self.params, self.ns_steps = params, ns_steps
        self.lr, self.momentum, self.weight_decay = 0.0, 0.0, 0.0
        self.buffers = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self) -> None:
        for p, buf in zip(self.params, self.buffers):
            if p.grad is None:
                continue
            buf.mul_(self.momentum).add_(p.grad)
            update = newton_schulz(p.grad.add(buf, alpha=self.momentum), self.ns_steps)
            update *= max(1.0, p.size(0) / p.size(1)) ** 0.5
            p.mul_(1 - self.lr * self.weight_decay)
            p.add_(update, alpha=-self.lr)


def make_optimizers(model: GPT, hp: SimpleNamespace) -> tuple[Muon, torch.optim.AdamW]:
    """Muon on block matrices; AdamW (LRs scaled by (width/768)^-0.5) on the rest."""
    width = model.embed.embedding_dim
    scale = (width / 768) ** -0.5
    matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
    scalars = [p for p in model.blocks.parameters() if p.ndim < 2]
    groups = [dict(params=[model.embed.weight], lr=hp.embedding_lr * scale),
              dict(params=[model.head.weight], lr=hp.unembedding_lr * scale),
              dict(params=scalars, lr=hp.scalar_lr)]
    for group in groups:
        group["base_lr"] = group["lr"]
    adam = torch.optim.AdamW(groups, betas=(hp.adam_beta1, hp.adam_beta2), eps=1e-10,
                             weight_decay=0.0)
    return Muon(matrices, hp.muon_ns_steps), adam


def lr_multiplier(step: int, total: int, hp: SimpleNamespace) -> float:
    """Linear warmup, constant, then a linear warmdown to FINAL_LR_FRAC over WARMDOWN_RATIO."""
    if step < hp.warmup_steps:
        return (step + 1) / hp.warmup_steps
    warmdown = round(hp.warmdown_ratio * total)
    if step < total - warmdown:
        return 1.0
    progress = (total - step) / max(1, warmdown)
    return progress + (1 - progress) * hp.final_lr_frac


def muon_momentum(step: int, total: int, hp: SimpleNamespace) -> float:
    if step >= total - round(hp.warmdown_ratio * total):
        return hp.momentum_warmdown
    frac = min(1.0, step / max(1, hp.momentum_warmup_steps))
    return hp.momentum_start + frac * (hp.momentum_peak - hp.momentum_start)


def train(model: GPT, stream: np.ndarray, starts: np.ndarray, hp: SimpleNamespace, seed: int,
          rank: int, world: int) -> tuple[int, float]:
    """Train for the horizon TARGET_PARAM_DATA_RATIO sets; returns (steps, last loss)."""
    total = max(1, round(hp.target_param_data_ratio * model.scaling_params()
                         / hp.total_batch_tokens))
    accum = max(1, hp.total_batch_tokens // (hp.device_batch * hp.max_seq_len * world))
    muon, adam = make_optimizers(model, hp)
    batches = train_batches(stream, starts, hp, rank, world, torch.Generator().manual_seed(seed))
    device = next(model.parameters()).device
    lowp = device.type == "cuda" and hp.compute_dtype != "float32"
    started, loss_value = time.perf_counter(), float("nan")
    for step in range(total):
        lrm = lr_multiplier(step, total, hp)
        muon.lr = hp.matrix_lr * lrm
        muon.momentum = muon_momentum(step, total, hp)
        muon.weight_decay = hp.weight_decay * 0.5 * (1 + math.cos(math.pi * step / total))
        for group in adam.param_groups:
            group["lr"] = group["base_lr"] * lrm
        model.zero_grad(set_to_none=True)
        for _ in range(accum):
            inputs, targets = (t.to(device) for t in next(batches))
            with torch.autocast("cuda", dtype=getattr(torch, hp.compute_dtype), enabled=lowp):
                logits = model(inputs)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            (loss / accum).backward()
        if world > 1:
            for p in model.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
        muon.step()
        adam.step()
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss is {loss_value} at step {step}")
        if rank == 0 and hp.log_every and (step + 1) % hp.log_every == 0:
            print(f"step {step + 1}/{total} loss {loss_value:.4f} "
                  f"elapsed {time.perf_counter() - started:.1f}s", flush=True)
    return total, loss_value


# =================================================================================================
# Checkpoint
# =================================================================================================

def save_checkpoint(path: Path, model: GPT, hp: SimpleNamespace) -> None:
    arch = {k: getattr(hp, k) for k in ARCH_KNOBS}
    torch.save({"arch": arch, "vocab_size": model.vocab_size,
                "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)


def load_checkpoint(path: Path, profile: str) -> GPT:
    """The saved model in eval mode on CPU or the profile's device (used by the evaluator)."""
    hp = load_knobs(profile)
    if hp.threads > 0:
        torch.set_num_threads(hp.threads)
    doc = torch.load(path, map_location="cpu", weights_only=True)
    for key, value in doc["arch"].items():
        setattr(hp, key, value)
    model = GPT(hp, int(doc["vocab_size"]))
    model.load_state_dict(doc["weights"])
    device = hp.device if not hp.device.startswith("cuda") or torch.cuda.is_available() else "cpu"
    return model.to(device).eval()


# =================================================================================================
# Entry point
# =================================================================================================

def parse_seed(text: str) -> int:
    """Accept `3` or `3.0` (MLflow may render a float parameter either way), reject `3.5`."""
    value = float(text)
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"seed must be an integer, got {text!r}")
    return int(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=PROFILES, default="tiny")
    parser.add_argument("--seed", type=parse_seed, default=0)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    return parser.parse_args(argv)


def setup_device(hp: SimpleNamespace, profile: str) -> tuple[int, int]:
    """(rank, world size); joins the torchrun process group when there is one."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if hp.device.startswith("cuda"):
        if not torch.cuda.is_available():
            sys.exit(f"nanochat_d12: profile {profile!r} needs CUDA GPUs and torch sees none; "
                     f"run --profile tiny on CPU")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        hp.device = f"cuda:{local}"
    if world > 1:
        dist.init_process_group("nccl" if hp.device.startswith("cuda") else "gloo")
    if hp.threads > 0:
        torch.set_num_threads(hp.threads)
    return rank, world


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    args = parse_args(argv)
    hp = load_knobs(args.profile)
    rank, world = setup_device(hp, args.profile)
    stream, starts, vocab_size = load_tokens(args.data_dir)
    torch.manual_seed(args.seed)
    model = GPT(hp, vocab_size).to(hp.device)
    steps, last_loss = train(model, stream, starts, hp, args.seed, rank, world)
    if rank == 0:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(args.out_dir / CHECKPOINT, model, hp)
        result = {"profile": args.profile, "seed": args.seed, "depth": hp.depth, "steps": steps,
                  "train_loss": round(last_loss, 4),
                  "scaling_params": model.scaling_params(),
                  "n_params": sum(p.numel() for p in model.parameters()),
                  "train_seconds": round(time.perf_counter() - started, 3)}
        (args.out_dir / "result.json").write_text(json.dumps(result, indent=1))
        # Greppable summary (informational: the evaluator computes CORE itself).
        for key, value in result.items():
            print(f"{key}: {value}")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
