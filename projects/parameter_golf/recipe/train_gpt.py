"""Parameter Golf: our own compact GPT trainer in the spirit of the public challenge stack.

Profile tiny (CPU, 1 thread, offline stdlib text, SentencePiece vocab 512): see knowledge.md for the
measured baseline. Profile real (FineWeb SP1024, 8 GPUs under torchrun): not measured by us; the
public naive baseline scores 1.2244 bpb in 15,863,489 bytes (docs/reference/environments.md 2.3).

What one run does:
1. Reads uint16 token shards (public challenge header) from --data-dir; never the validation set,
   which only the harness-owned evaluator holds.
2. Trains a GPT: tied embeddings, RMSNorm, RoPE (optionally partial), QK-norm with a per-head query
   gain, grouped KV heads, ReLU^2 (or LeakyReLU^2) MLP, U-Net skips between the first and second
   half of the blocks, tanh logit softcap; optional hashed-bigram input embedding.
3. Muon (Newton-Schulz orthogonalised Nesterov momentum) for block matrices, Adam for embeddings and
   scalars; constant LR then a warmdown over the last WARMDOWN_FRAC of steps, or of wall time when
   MAX_WALLCLOCK_SECONDS > 0; optional EMA of the weights.
4. Exports the artifact `model.ptz`: per-row int8/int6 quantization, small tensors in fp16, then a
   general-purpose compressor.

The evaluator (evaluators/parameter_golf.py) counts this file's bytes plus the artifact's, loads the
artifact with `load_artifact`, and asks `score_stream` for log-probabilities over the validation
stream (sliding window, then optional score-first test-time training); it computes bpb itself and
runs legality probes on the same functions. Anything this script prints is informational.

Usage: python recipe/train_gpt.py --profile {tiny,real} --seed N --data-dir D --out-dir O
"""

from __future__ import annotations

import argparse
import bz2
import io
import json
import lzma
import math
import os
import sys
import time
import zlib
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
# profile. Real values follow the public naive baseline (environments.md 2.3); tiny sizes follow
# environments.md 5.3.
# =================================================================================================
# Architecture
NUM_LAYERS = {"tiny": 4, "real": 9, "search": 4}  # transformer blocks; the first half feed U-Net skips to the second
MODEL_DIM = {"tiny": 64, "real": 512, "search": 64}  # residual width
NUM_HEADS = {"tiny": 4, "real": 8, "search": 4}  # query heads
NUM_KV_HEADS = {"tiny": 2, "real": 4, "search": 2}  # key/value heads (grouped-query attention)
MLP_MULT = 2  # MLP hidden width = MLP_MULT * MODEL_DIM
ACTIVATION = "relu2"  # relu2 = relu(x)^2; leaky2 = leaky_relu(x, 0.5)^2
ROPE_DIMS = {"tiny": 16, "real": 64, "search": 16}  # rotary dimensions per head (the rest carry no position)
ROPE_BASE = 10000.0  # rotary frequency base
QK_GAIN_INIT = 1.5  # initial per-head query gain after QK-norm
LOGIT_SOFTCAP = 30.0  # tanh softcap on the output logits
UNET_SKIPS = True  # learned skips from block i to block L-1-i
# Token inputs
BIGRAM_BUCKETS = 0  # hashed (previous, current) token embedding buckets; 0 = off
EMBED_INIT_STD = 0.005  # std of the tied embedding at init
# Optimizer
MATRIX_LR = 0.04  # Muon learning rate for block matrices
EMBED_LR = 0.05  # Adam learning rate for the tied embedding
SCALAR_LR = 0.04  # Adam learning rate for gains, skip weights and other vectors
ADAM_BETA1 = 0.9  # Adam beta1
ADAM_BETA2 = 0.95  # Adam beta2
MUON_MOMENTUM = 0.95  # Muon Nesterov momentum after its warmup
MUON_MOMENTUM_START = 0.85  # Muon momentum at step 0
MUON_MOMENTUM_WARMUP = 0.2  # fraction of training over which Muon momentum ramps up
MUON_NS_STEPS = 5  # Newton-Schulz iterations per Muon update
MUON_WEIGHT_DECAY = 0.0  # decoupled weight decay on Muon matrices (times the LR)
GRAD_CLIP = 0.0  # global gradient-norm clip; 0 = off
# Schedule and batch
ITERATIONS = {"tiny": 200, "real": 20000, "search": 40}  # optimizer steps (an upper bound when the wall clock caps)
MAX_WALLCLOCK_SECONDS = {"tiny": 0.0, "real": 590.0, "search": 0.0}  # stop training here; 0 = step-based schedule
WARMDOWN_FRAC = {"tiny": 0.4, "real": 0.09, "search": 0.4}  # final fraction of steps (or wall time) the LR decays to 0
WARMDOWN_SHAPE = "linear"  # linear or cosine
TRAIN_SEQ_LEN = {"tiny": 128, "real": 1024, "search": 128}  # tokens per training sequence
TRAIN_BATCH_TOKENS = {"tiny": 2048, "real": 524288, "search": 2048}  # tokens per optimizer step, over all ranks
DATA_ORDER = "random"  # random = random contiguous windows; sequential = one pass through the stream
# Loss and regularisation
POSITION_WEIGHT = 0.0  # CE weight runs from 1 - w to 1 + w along each sequence; 0 = uniform
Z_LOSS = 0.0  # coefficient of the mean squared log-partition penalty
EMA_DECAY = 0.0  # exponential moving average of the weights, exported instead; 0 = off
# Quantization and compression
MATRIX_BITS = 8  # bits per weight of quantized block matrices (int8 = 8, int6 = 6)
EMBED_BITS = 8  # bits per weight of the quantized tied embedding
CLIP_PERCENTILE = 99.99984  # per-row clip at this percentile of |w| before quantizing
KEEP_FLOAT_NUMEL = {"tiny": 1024, "real": 65536, "search": 1024}  # tensors this small stay fp16
COMPRESSOR = "zlib"  # zlib, lzma or bz2
# Evaluation (what the evaluator asks score_stream to do)
EVAL_SEQ_LEN = {"tiny": 128, "real": 1024, "search": 128}  # context of each scoring window
EVAL_STRIDE = {"tiny": 64, "real": 64, "search": 64}  # new targets per window; = EVAL_SEQ_LEN is non-overlapping
EVAL_BATCH = {"tiny": 64, "real": 256, "search": 64}  # windows per forward pass
TTT_ENABLED = {"tiny": True, "real": True, "search": False}  # score-first test-time training on already scored validation chunks
TTT_CHUNK_TOKENS = {"tiny": 4096, "real": 32768, "search": 4096}  # tokens scored before each adaptation
TTT_LR = 0.002  # SGD learning rate of test-time training
TTT_MOMENTUM = 0.9  # SGD momentum of test-time training
TTT_EPOCHS = 1  # passes over each chunk
# Systems
DEVICE = {"tiny": "cpu", "real": "cuda", "search": "cpu"}  # torch device
THREADS = {"tiny": 1, "real": 0, "search": 1}  # torch CPU threads; 0 = torch's default
LOG_EVERY = {"tiny": 50, "real": 200, "search": 50}  # steps between training-loss lines
# =================================================================================================

KNOB_NAMES = tuple(name for name in list(globals()) if name.isupper())
PROFILES = ("tiny", "real", "search")
SHARD_MAGIC, SHARD_VERSION, HEADER_INTS = 20240520, 1, 256
ARTIFACT = "model.ptz"


def load_knobs(profile: str) -> SimpleNamespace:
    """The knobs above with per-profile dicts resolved, as lower-case attributes.

    Integral floats become ints (a relative edit such as MODEL_DIM "*1.5" leaves 96.0).
    """
    values = {}
    for name in KNOB_NAMES:
        value = globals()[name]
        value = value[profile] if isinstance(value, dict) else value
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        values[name.lower()] = value
    return SimpleNamespace(**values)


# =================================================================================================
# Data
# =================================================================================================

def read_shard(path: Path) -> np.ndarray:
    """uint16 tokens of one shard: 256 int32 header (magic, version, count), then the tokens."""
    header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
    if header[0] != SHARD_MAGIC or header[1] != SHARD_VERSION:
        raise ValueError(f"{path} is not a token shard (magic {header[0]}, version {header[1]})")
    tokens = np.fromfile(path, dtype=np.uint16, offset=HEADER_INTS * 4)
    if len(tokens) != header[2]:
        raise ValueError(f"{path}: header says {header[2]} tokens, file has {len(tokens)}")
    return tokens


def load_train_tokens(data_dir: Path) -> np.ndarray:
    shards = sorted(data_dir.glob("fineweb_train_*.bin"))
    if not shards:
        sys.exit(f"parameter_golf: no fineweb_train_*.bin under {data_dir}; build it with "
                 f"`python evaluators/parameter_golf.py prepare --profile P --data-dir D` and "
                 f"pass D/public as --data-dir")
    return np.concatenate([read_shard(p) for p in shards])


def train_batches(tokens: np.ndarray, hp: SimpleNamespace, rank: int, world: int,
                  gen: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless (inputs, targets) of this rank's share of TRAIN_BATCH_TOKENS per step."""
    seq = hp.train_seq_len
    rows = max(1, hp.train_batch_tokens // (seq * world))
    stream = torch.from_numpy(tokens.astype(np.int64))
    n_windows = (len(stream) - 1) // seq
    cursor = 0
    while True:
        if hp.data_order == "sequential":
            starts = (torch.arange(rows) + cursor + rank * rows) % n_windows * seq
            cursor += rows * world
        else:
            starts = torch.randint(0, len(stream) - seq - 1, (rows * world,), generator=gen)
            starts = starts[rank * rows:(rank + 1) * rows]
        idx = starts.unsqueeze(1) + torch.arange(seq + 1)
        window = stream[idx]
        yield window[:, :-1], window[:, 1:]


# =================================================================================================
# Model
# =================================================================================================

def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


class Rotary(nn.Module):
    """Rotary embedding on the first `dims` of each head (partial RoPE when dims < head_dim)."""

    def __init__(self, dims: int, base: float):
        super().__init__()
        self.dims = dims
        self.register_buffer("inv_freq", base ** (-torch.arange(0, dims, 2).float() / dims),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.dims == 0:
            return x
        t = torch.arange(x.size(-2), device=x.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq)
        cos, sin = freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)
        rot, rest = x[..., :self.dims], x[..., self.dims:]
        a, b = rot[..., : self.dims // 2], rot[..., self.dims // 2:]
        rot = torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
        return torch.cat([rot, rest], dim=-1)


class Attention(nn.Module):
    def __init__(self, hp: SimpleNamespace):
        super().__init__()
        dim, self.heads, self.kv_heads = hp.model_dim, hp.num_heads, hp.num_kv_heads
        self.head_dim = dim // self.heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, self.kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(dim, self.kv_heads * self.head_dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.q_gain = nn.Parameter(torch.full((self.heads,), float(hp.qk_gain_init)))
        self.rotary = Rotary(min(hp.rope_dims, self.head_dim), hp.rope_base)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = self.rotary(rms_norm(q)) * self.q_gain.view(1, -1, 1, 1)
        k = self.rotary(rms_norm(k))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           enable_gqa=self.kv_heads != self.heads)
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, hp: SimpleNamespace):
        super().__init__()
        self.up = nn.Linear(hp.model_dim, hp.mlp_mult * hp.model_dim, bias=False)
        self.down = nn.Linear(hp.mlp_mult * hp.model_dim, hp.model_dim, bias=False)
        nn.init.zeros_(self.down.weight)
        self.activation = hp.activation

    def forward(self, x: Tensor) -> Tensor:
        h = self.up(x)
        h = F.leaky_relu(h, 0.5) if self.activation == "leaky2" else F.relu(h)
        return self.down(h.square())


class Block(nn.Module):
    """Pre-norm attention and MLP, with a learned mix of the residual and the input embedding."""

    def __init__(self, hp: SimpleNamespace):
        super().__init__()
        self.attn, self.mlp = Attention(hp), MLP(hp)
        self.resid_mix = nn.Parameter(torch.tensor([1.0, 0.0]))
        self.attn_scale = nn.Parameter(torch.ones(hp.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(hp.model_dim))

    def forward(self, x: Tensor, x0: Tensor) -> Tensor:
        x = self.resid_mix[0] * x + self.resid_mix[1] * x0
        x = x + self.attn_scale * self.attn(rms_norm(x))
        return x + self.mlp_scale * self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, hp: SimpleNamespace, vocab_size: int):
        super().__init__()
        self.vocab_size, self.softcap = vocab_size, hp.logit_softcap
        self.embed = nn.Embedding(vocab_size, hp.model_dim)
        nn.init.normal_(self.embed.weight, std=hp.embed_init_std)
        self.bigram = nn.Embedding(hp.bigram_buckets, hp.model_dim) if hp.bigram_buckets else None
        if self.bigram is not None:
            nn.init.zeros_(self.bigram.weight)
        self.blocks = nn.ModuleList(Block(hp) for _ in range(hp.num_layers))
        n_skips = hp.num_layers // 2 if hp.unet_skips else 0
        self.skip_weights = nn.Parameter(torch.ones(n_skips, hp.model_dim))

    def forward(self, idx: Tensor) -> Tensor:
        """Logits (batch, time, vocab), softcapped, in float32."""
        x = self.embed(idx)
        if self.bigram is not None:
            prev = F.pad(idx[:, :-1], (1, 0))
            x = x + self.bigram((prev * 1000003 + idx) % self.bigram.num_embeddings)
        x = x0 = rms_norm(x)
        n_skips, n = len(self.skip_weights), len(self.blocks)
        saved = []
        for i, block in enumerate(self.blocks):
            if i >= n - n_skips:
                x = x + self.skip_weights[n - 1 - i] * saved.pop()
            x = block(x, x0)
            if i < n_skips:
                saved.append(x)
        logits = F.linear(rms_norm(x), self.embed.weight).float()
        return self.softcap * torch.tanh(logits / self.softcap)


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
    """Nesterov momentum whose update is orthogonalised, scaled for the matrix's aspect ratio."""

    def __init__(self, params: list[Tensor], hp: SimpleNamespace):
        self.params, self.hp = params, hp
        self.lr, self.momentum = hp.matrix_lr, hp.muon_momentum
        self.buffers = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self) -> None:
        for p, buf in zip(self.params, self.buffers):
            if p.grad is None:
                continue
            buf.mul_(self.momentum).add_(p.grad)
            update = newton_schulz(p.grad.add(buf, alpha=self.momentum), self.hp.muon_ns_steps)
            update *= max(1.0, p.size(0) / p.size(1)) ** 0.5
            if self.hp.muon_weight_decay:
                p.mul_(1 - self.lr * self.hp.muon_weight_decay)
            p.add_(update, alpha=-self.lr)


def make_optimizers(model: GPT, hp: SimpleNamespace) -> tuple[Muon, torch.optim.Adam]:
    """Muon for 2-D block matrices; Adam for the embedding tables and every vector or scalar."""
    matrices = [p for name, p in model.blocks.named_parameters() if p.ndim == 2]
    ids = {id(p) for p in matrices}
    tables = [model.embed.weight] + ([model.bigram.weight] if model.bigram is not None else [])
    table_ids = {id(p) for p in tables}
    scalars = [p for p in model.parameters() if id(p) not in ids and id(p) not in table_ids]
    adam = torch.optim.Adam(
        [dict(params=tables, lr=hp.embed_lr, base_lr=hp.embed_lr),
         dict(params=scalars, lr=hp.scalar_lr, base_lr=hp.scalar_lr)],
        betas=(hp.adam_beta1, hp.adam_beta2), eps=1e-8)
    return Muon(matrices, hp), adam


def lr_scale(progress: float, hp: SimpleNamespace) -> float:
    """1 until the warmdown starts at 1 - WARMDOWN_FRAC of progress, then down to 0."""
    start = 1.0 - hp.warmdown_frac
    if progress <= start or hp.warmdown_frac <= 0:
        return 1.0
    left = max(0.0, (1.0 - progress) / hp.warmdown_frac)
    return left if hp.warmdown_shape == "linear" else 0.5 * (1 - math.cos(math.pi * left))


def loss_fn(logits: Tensor, targets: Tensor, hp: SimpleNamespace) -> Tensor:
    """Cross-entropy, optionally weighted along the sequence, plus an optional z-loss."""
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    ce = ce.view_as(targets)
    if hp.position_weight:
        w = torch.linspace(1 - hp.position_weight, 1 + hp.position_weight, targets.size(1))
        ce = ce * w.to(ce.device)
    loss = ce.mean()
    if hp.z_loss:
        loss = loss + hp.z_loss * torch.logsumexp(logits, dim=-1).square().mean()
    return loss


def train(model: GPT, tokens: np.ndarray, hp: SimpleNamespace, seed: int, rank: int,
          world: int) -> tuple[dict[str, Tensor], int, float]:
    """Train; return the weights to export (the EMA when on), the step count and the last loss."""
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    muon, adam = make_optimizers(model, hp)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if hp.ema_decay else None
    batches = train_batches(tokens, hp, rank, world, gen)
    started = time.perf_counter()
    loss_value, step = float("nan"), 0
    for step in range(hp.iterations):
        elapsed = time.perf_counter() - started
        if world > 1:  # every rank must stop at the same step: rank 0's clock decides
            clock = torch.tensor([elapsed], device=device)
            dist.broadcast(clock, 0)
            elapsed = clock.item()
        if hp.max_wallclock_seconds > 0:
            progress = elapsed / hp.max_wallclock_seconds
            if progress >= 1.0:
                break
        else:
            progress = step / hp.iterations
        scale = lr_scale(progress, hp)
        warm = min(1.0, progress / hp.muon_momentum_warmup) if hp.muon_momentum_warmup else 1.0
        muon.momentum = hp.muon_momentum_start + warm * (hp.muon_momentum - hp.muon_momentum_start)
        muon.lr = hp.matrix_lr * scale
        for group in adam.param_groups:
            group["lr"] = group["base_lr"] * scale
        inputs, targets = (t.to(device) for t in next(batches))
        loss = loss_fn(model(inputs), targets, hp)
        model.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            for p in model.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
        if hp.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
        muon.step()
        adam.step()
        if ema is not None:
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    ema[k].lerp_(v, 1 - hp.ema_decay)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss is {loss_value} at step {step}")
        if rank == 0 and hp.log_every and (step + 1) % hp.log_every == 0:
            print(f"step {step + 1} train_loss {loss_value:.4f} "
                  f"elapsed {time.perf_counter() - started:.1f}s", flush=True)
    weights = ema if ema is not None else model.state_dict()
    return {k: v.detach().cpu() for k, v in weights.items()}, step + 1, loss_value


# =================================================================================================
# Artifact: quantize, compress, and back
# =================================================================================================

def quantize_rows(w: Tensor, bits: int, percentile: float) -> tuple[Tensor, Tensor]:
    """Per-row symmetric integers in [-(2^(bits-1)-1), 2^(bits-1)-1] (stored as int8), fp16 scales."""
    qmax = 2 ** (bits - 1) - 1
    w = w.float()
    clip = torch.quantile(w.abs(), percentile / 100.0, dim=1, keepdim=True).clamp_min(1e-8)
    scale = (clip / qmax).half()
    q = torch.round(w.clamp(-clip, clip) / scale.float()).clamp(-qmax, qmax).to(torch.int8)
    return q, scale


def pack(weights: dict[str, Tensor], hp: SimpleNamespace, vocab_size: int) -> bytes:
    """The compressed artifact: quantized matrices, fp16 small tensors, and the vocabulary size."""
    entries = {}
    for name, w in weights.items():
        if w.ndim == 2 and w.numel() > hp.keep_float_numel:
            bits = hp.embed_bits if name.startswith(("embed", "bigram")) else hp.matrix_bits
            entries[name] = quantize_rows(w, bits, hp.clip_percentile)
        else:
            entries[name] = w.half()
    buffer = io.BytesIO()
    torch.save({"vocab_size": vocab_size, "weights": entries}, buffer)
    raw = buffer.getvalue()
    if hp.compressor == "lzma":
        return lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)
    if hp.compressor == "bz2":
        return bz2.compress(raw, 9)
    return zlib.compress(raw, 9)


def unpack(blob: bytes, hp: SimpleNamespace) -> tuple[dict[str, Tensor], int]:
    """Decompress and dequantize an artifact; returns float32 weights and the vocabulary size."""
    raw = {"lzma": lzma.decompress, "bz2": bz2.decompress}.get(hp.compressor, zlib.decompress)(blob)
    doc = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    weights = {}
    for name, entry in doc["weights"].items():
        if isinstance(entry, (tuple, list)):
            q, scale = entry
            weights[name] = q.float() * scale.float()
        else:
            weights[name] = entry.float()
    return weights, int(doc["vocab_size"])


def load_artifact(path: Path, profile: str) -> GPT:
    """The model an artifact holds, in eval mode on the profile's device (used by the evaluator)."""
    hp = load_knobs(profile)
    if hp.threads > 0:
        torch.set_num_threads(hp.threads)
    weights, vocab_size = unpack(Path(path).read_bytes(), hp)
    model = GPT(hp, vocab_size)
    model.load_state_dict(weights)
    return model.to(hp.device).eval()


# =================================================================================================
# Scoring: sliding windows, then score-first test-time training
# =================================================================================================

@torch.no_grad()
def score_targets(model: GPT, stream: Tensor, first: int, last: int, hp: SimpleNamespace
                  ) -> Iterator[tuple[int, Tensor]]:
    """Log-probabilities for targets first..last-1, EVAL_STRIDE new targets per window.

    The window for targets [t0, t1) reads tokens [max(0, t1 - 1 - EVAL_SEQ_LEN), t1 - 1), so every
    target is predicted from at most EVAL_SEQ_LEN earlier tokens and none of its own or later ones.
    """
    seq, stride = hp.eval_seq_len, hp.eval_stride
    blocks = [(t0, min(t0 + stride, last)) for t0 in range(first, last, stride)]
    for i in range(0, len(blocks), hp.eval_batch):
        group = blocks[i:i + hp.eval_batch]
        full = [b for b in group if b[1] - 1 >= seq]
        short = [b for b in group if b[1] - 1 < seq]
        for t0, t1 in short:
            logits = model(stream[None, :t1 - 1])[0, t0 - 1:]
            yield t0, F.log_softmax(logits, dim=-1)
        if full:
            windows = torch.stack([stream[t1 - 1 - seq:t1 - 1] for _, t1 in full])
            logprobs = F.log_softmax(model(windows), dim=-1)
            for row, (t0, t1) in enumerate(full):
                yield t0, logprobs[row, seq - (t1 - t0):]


def adapt(model: GPT, chunk: Tensor, hp: SimpleNamespace) -> None:
    """Test-time training: SGD on one chunk of already scored tokens, TTT_EPOCHS passes."""
    seq = hp.eval_seq_len
    n = (len(chunk) - 1) // seq
    if n == 0:
        return
    inputs = chunk[:n * seq].view(n, seq)
    targets = chunk[1:n * seq + 1].view(n, seq)
    params = [p for p in model.parameters() if p.ndim == 2]
    opt = torch.optim.SGD(params, lr=hp.ttt_lr, momentum=hp.ttt_momentum)
    model.train()
    for _ in range(hp.ttt_epochs):
        for i in range(0, n, hp.eval_batch):
            loss = F.cross_entropy(model(inputs[i:i + hp.eval_batch]).flatten(0, 1),
                                   targets[i:i + hp.eval_batch].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()


def score_stream(model: GPT, tokens: Tensor, hp: SimpleNamespace, ttt: bool
                 ) -> Iterator[tuple[int, Tensor]]:
    """(first target, log-probabilities (k, vocab)) for every target tokens[1:], in order.

    With `ttt`, the stream is scored in TTT_CHUNK_TOKENS chunks and the model adapts on each chunk
    only after all of its targets were yielded (score first, then update).
    """
    stream = tokens.to(hp.device).long()
    chunk = hp.ttt_chunk_tokens if ttt else len(stream)
    for first in range(1, len(stream), chunk):
        last = min(len(stream), first + chunk)
        yield from score_targets(model, stream, first, last, hp)
        if ttt:
            adapt(model, stream[first - 1:last], hp)


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
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if hp.device.startswith("cuda"):
        if not torch.cuda.is_available():
            sys.exit(f"parameter_golf: profile {profile!r} needs CUDA GPUs and torch sees none; "
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
    meta = json.loads((args.data_dir / "meta.json").read_text())
    tokens = load_train_tokens(args.data_dir)
    torch.manual_seed(args.seed)
    model = GPT(hp, int(meta["vocab_size"])).to(hp.device)
    weights, steps, last_loss = train(model, tokens, hp, args.seed, rank, world)
    trained = time.perf_counter()
    if rank == 0:
        blob = pack(weights, hp, int(meta["vocab_size"]))
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / ARTIFACT).write_bytes(blob)
        code_bytes = Path(__file__).stat().st_size
        result = {"profile": args.profile, "seed": args.seed, "steps": steps,
                  "train_loss": round(last_loss, 4),
                  "n_params": sum(p.numel() for p in model.parameters()),
                  "model_bytes": len(blob), "code_bytes": code_bytes,
                  "artifact_bytes": len(blob) + code_bytes,
                  "train_seconds": round(trained - started, 3)}
        (args.out_dir / "result.json").write_text(json.dumps(result, indent=1))
        # Greppable summary (informational: the evaluator measures bytes, time and bpb itself).
        for key, value in result.items():
            print(f"{key}: {value}")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
