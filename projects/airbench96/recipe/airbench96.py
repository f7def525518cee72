"""Airbench96: our own implementation of airbench96_faster (KellerJordan/cifar10-airbench).

Headline, profile tiny (digits96, 1,297 train / 500 test images at 16x16), measured by us: mean
TTA test accuracy 0.984 over seeds 0-2, 0.982 over seeds 0-4 and 0.9847 over seeds 0-11 (gate
0.98); 4.02 s mean cold-process wall time per seed (seeds 0-5 three times, n=18, min 3.52 s),
from `python` start to predictions written, on 1 thread of a 2-vCPU Intel Xeon shared with other
work; CPython 3.11.7, torch 2.13.0+cpu, numpy 2.4.6. Training is deterministic per seed on CPU.

Profile real (CIFAR-10, one GPU): not measured by us. Upstream airbench96_faster reaches 96.00%
mean TTA accuracy (n=200) in 27.3 s on an A100 with torch 2.4 (docs/reference/environments.md 4.1).

What one run does:
1. Whitening: a frozen 2x2 conv whose filters are the eigenvectors of the training patches'
   covariance (and their negatives), scaled by 1/sqrt(eigenvalue + eps). Its bias trains for
   WHITEN_BIAS_EPOCHS epochs and is then frozen.
2. Three ConvGroups (conv, maxpool, BN, GELU; conv, BN, GELU; conv, BN, residual, GELU), global
   max pool, bias-free linear head scaled by HEAD_SCALE. Convs start as Dirac (identity) filters;
   BN has a trainable bias and a fixed scale of 1.
3. Proxy filtering: a narrow copy of the network ranks each batch by loss and the main net trains
   only on the BATCH_KEEP hardest examples; the proxy itself takes a step every PROXY_TRAIN_EVERY.
4. SGD-Nesterov with LR and weight decay given per 1,024 examples and decoupled from momentum;
   BN biases get BIAS_LR_SCALE times the LR; summed cross-entropy with label smoothing.
5. Linear warmup from WARMUP_START, then linear decay to 0; Lookahead towards a slow copy whose
   pull grows as (t/T)^3, and the slow copy is the final model.
6. Augmentation: alternating (derandomized) flip, only when meta.json says the data is mirror
   symmetric; random translation with reflect padding; cutout.
7. Test-time augmentation: level 1 averages the mirror (when symmetric), level 2 adds two 1-px
   shifted views.

The recipe never sees test labels. It writes `test_predictions.npy`; the harness-owned evaluator
(evaluators/airbench96.py) scores them and times this process from outside. Everything this script
prints or writes to `result.json` is informational.

Usage: python recipe/airbench96.py --profile {tiny,real} --seed N --data-dir D --out-dir O
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

# =================================================================================================
# Knobs. One per line, `NAME = <literal>  # comment`; a dict {"tiny": x, "real": y} differs by
# profile. Upstream values from airbench96_faster (docs/reference/environments.md 4.2); tiny sizes
# from environments.md 5.5.
# =================================================================================================
# Network
WIDTH1 = {"tiny": 32, "real": 128, "search": 32}  # channels of ConvGroup 1
WIDTH2 = {"tiny": 64, "real": 384, "search": 64}  # channels of ConvGroup 2
WIDTH3 = {"tiny": 64, "real": 512, "search": 64}  # channels of ConvGroup 3
DEPTH = 3  # convs per ConvGroup: 3 adds a residual around the last two, 2 has none
HEAD_SCALE = 0.1111  # logit multiplier after the linear head (upstream 1/9)
WHITEN_KERNEL = 2  # side of the whitening patches; the conv has 2*C*k*k output channels
WHITEN_EPS = 0.0005  # added to patch-covariance eigenvalues before the inverse square root
WHITEN_IMAGES = 5000  # training images whose patches define the whitening filters
WHITEN_BIAS_EPOCHS = 3  # epochs the whitening bias trains before it is frozen
# Proxy filtering
PROXY_WIDTH1 = {"tiny": 8, "real": 32, "search": 8}  # channels of the proxy's ConvGroup 1
PROXY_WIDTH2 = {"tiny": 16, "real": 64, "search": 16}  # channels of the proxy's ConvGroup 2
PROXY_WIDTH3 = {"tiny": 16, "real": 64, "search": 16}  # channels of the proxy's ConvGroup 3
PROXY_DEPTH = 2  # convs per proxy ConvGroup
PROXY_TRAIN_EVERY = 4  # the proxy takes an optimizer step every this many batches
BATCH_SIZE = {"tiny": 128, "real": 1024, "search": 128}  # examples the proxy ranks per step
BATCH_KEEP = {"tiny": 64, "real": 512, "search": 64}  # hardest examples trained on; = BATCH_SIZE: no proxy
# Optimizer
LR = {"tiny": 55.0, "real": 9.0, "search": 55.0}  # per 1,024 examples, momentum-decoupled; tiny: 80 steps
MOMENTUM = 0.85  # Nesterov momentum
WEIGHT_DECAY = 0.012  # weight decay per 1,024 examples, decoupled from the learning rate
BIAS_LR_SCALE = 64.0  # BN-bias learning-rate multiplier (weight decay is not scaled)
LABEL_SMOOTHING = 0.2  # cross-entropy label smoothing
# Schedule
EPOCHS = {"tiny": 8, "real": 45, "search": 8}  # passes over the training set (fractions allowed)
WARMUP = 0.1  # fraction of steps with a linear LR warmup
WARMUP_START = 0.2  # LR multiplier at step 0
LOOKAHEAD_EVERY = 5  # steps between Lookahead syncs; 0 = off
LOOKAHEAD_DECAY = 0.95  # slow-copy decay per step; a sync uses decay**EVERY * (t/T)**3
# Augmentation and evaluation
FLIP = True  # alternating flip, used only when meta.json says mirror_symmetric
TRANSLATE = {"tiny": 2, "real": 4, "search": 2}  # maximum random shift in pixels (reflect padding); 0 = off
CUTOUT = {"tiny": 4, "real": 12, "search": 4}  # side of the zeroed square in pixels; 0 = off
TTA_LEVEL = 2  # 0 plain, 1 + mirror (symmetric data only), 2 + two 1-px shifted views
EVAL_EVERY = 1  # epochs between progress evaluations (upstream: every epoch); 0 = never
# Systems
DEVICE = {"tiny": "cpu", "real": "cuda", "search": "cpu"}  # torch device
DTYPE = {"tiny": "float32", "real": "float16", "search": "float32"}  # network and data dtype; BN always runs in float32
CHANNELS_LAST = True  # NHWC memory format for convs (faster on CPU oneDNN too)
COMPILE = {"tiny": False, "real": True, "search": False}  # torch.compile(mode="max-autotune") both networks
THREADS = {"tiny": 1, "real": 0, "search": 1}  # torch CPU threads, 0 = default (1 beats 2 on 2 vCPUs)
# =================================================================================================

KNOB_NAMES = tuple(name for name in list(globals()) if name.isupper())
PROFILES = ("tiny", "real", "search")
EVAL_CHUNK = 2000  # images per forward pass at evaluation time


def load_knobs(profile: str) -> SimpleNamespace:
    """The knobs above with per-profile dicts resolved, as lower-case attributes.

    Integral floats become ints: a relative edit such as WIDTH3 "*0.75" leaves 48.0 where a size
    must be an int, and nothing here needs an integral value to stay a float.
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

DATA_FILES = ("train.pt", "test_images.pt", "meta.json")


def require_data(data_dir: Path) -> None:
    """Exit with instructions when the prepared data is not there."""
    missing = [str(data_dir / name) for name in DATA_FILES if not (data_dir / name).is_file()]
    if missing:
        sys.exit(f"airbench96: no data: missing {', '.join(missing)}; build it with "
                 f"`python evaluators/airbench96.py prepare --profile P --data-dir D` and pass "
                 f"D/public as --data-dir")


def load_data(data_dir: Path, device: torch.device, dtype: torch.dtype
              ) -> tuple[Tensor, Tensor, Tensor, dict]:
    """Read train.pt, test_images.pt and meta.json; return normalized NCHW train/test images.

    Images arrive as uint8 NHWC and are normalized by the training set's per-channel mean and std.
    """
    train = torch.load(data_dir / DATA_FILES[0], map_location="cpu", weights_only=True)
    test = torch.load(data_dir / DATA_FILES[1], map_location="cpu", weights_only=True)
    meta = json.loads((data_dir / DATA_FILES[2]).read_text())
    # uint8 travels to the device (4x less than float32) and is converted there.
    train_images = train["images"].to(device).permute(0, 3, 1, 2).float().div_(255)
    test_images = test["images"].to(device).permute(0, 3, 1, 2).float().div_(255)
    mean = train_images.mean(dim=(0, 2, 3), keepdim=True)
    std = train_images.std(dim=(0, 2, 3), keepdim=True)

    def normalize(x: Tensor) -> Tensor:
        return ((x - mean) / std).to(dtype)

    return (normalize(train_images), train["labels"].long().to(device), normalize(test_images),
            meta)


def random_translate(padded: Tensor, size: int, shifts: Tensor) -> Tensor:
    """Crop `size`x`size` windows at per-image offsets `shifts` (N, 2) from pre-padded images.

    Two passes (rows, then columns) of one masked copy per offset value, instead of one per
    offset pair: 2(2r+1) copies rather than (2r+1)^2.
    """
    n, c, _, width = padded.shape
    offsets = range(width - size + 1)
    rows = torch.empty(n, c, size, width, dtype=padded.dtype, device=padded.device)
    for s in offsets:
        mask = shifts[:, 0] == s
        rows[mask] = padded[mask, :, s:s + size, :]
    out = torch.empty(n, c, size, size, dtype=padded.dtype, device=padded.device)
    for s in offsets:
        mask = shifts[:, 1] == s
        out[mask] = rows[mask, :, :, s:s + size]
    return out


def cutout(images: Tensor, size: int, corners: Tensor) -> Tensor:
    """Zero (the normalized mean) a `size`x`size` square at per-image top-left `corners` (N, 2)."""
    n, _, h, w = images.shape
    ys = torch.arange(h, device=images.device).view(1, h, 1) - corners[:, 0].view(n, 1, 1)
    xs = torch.arange(w, device=images.device).view(1, 1, w) - corners[:, 1].view(n, 1, 1)
    inside = (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
    return images.masked_fill(inside.unsqueeze(1), 0)


def train_batches(images: Tensor, labels: Tensor, hp: SimpleNamespace, flip: bool,
                  gen: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless batches of BATCH_SIZE from one freshly augmented, shuffled copy per epoch.

    Batches run across epoch boundaries, so every step sees a full batch. With `flip`, each image
    starts in a random orientation and the whole set mirrors on every other epoch (alternating
    flip): each image is seen both ways in any two consecutive epochs.
    """
    n, _, size, _ = images.shape
    device, batch = images.device, hp.batch_size
    base = images
    if flip:
        mirror = (torch.rand(n, generator=gen) < 0.5).to(device).view(-1, 1, 1, 1)
        base = torch.where(mirror, base.flip(-1), base)
    if hp.translate > 0:
        base = nnf.pad(base, (hp.translate,) * 4, mode="reflect")
    carry_x, carry_y = images[:0], labels[:0]
    epoch = 0
    while True:
        x = base
        if hp.translate > 0:
            shifts = torch.randint(0, 2 * hp.translate + 1, (n, 2), generator=gen).to(device)
            x = random_translate(base, size, shifts)
        if flip and epoch % 2 == 1:
            x = x.flip(-1)
        if hp.cutout > 0:
            corners = torch.randint(0, size - hp.cutout + 1, (n, 2), generator=gen).to(device)
            x = cutout(x, hp.cutout, corners)
        order = torch.randperm(n, generator=gen).to(device)
        x, y = torch.cat([carry_x, x[order]]), torch.cat([carry_y, labels[order]])
        full = len(x) // batch * batch
        for start in range(0, full, batch):
            yield x[start:start + batch], y[start:start + batch]
        carry_x, carry_y = x[full:], y[full:]
        epoch += 1


# =================================================================================================
# Network
# =================================================================================================

class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with a trainable bias and a scale fixed at 1 (eps 1e-12 as upstream)."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-12)
        self.weight.requires_grad_(False)


def dirac_conv(c_in: int, c_out: int) -> nn.Conv2d:
    """3x3 same-padded conv whose first c_in filters start as the identity (Dirac init)."""
    conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding="same", bias=False)
    nn.init.dirac_(conv.weight.data[:c_in])
    return conv


class ConvGroup(nn.Module):
    """conv -> maxpool -> BN -> GELU, then depth-1 more conv -> BN -> GELU (residual at depth 3)."""

    def __init__(self, c_in: int, c_out: int, depth: int):
        super().__init__()
        if depth not in (2, 3):
            raise ValueError(f"ConvGroup depth must be 2 or 3, got {depth}")
        self.convs = nn.ModuleList([dirac_conv(c_in, c_out)]
                                   + [dirac_conv(c_out, c_out) for _ in range(depth - 1)])
        self.norms = nn.ModuleList([BatchNorm(c_out) for _ in range(depth)])

    def forward(self, x: Tensor) -> Tensor:
        x = nnf.gelu(self.norms[0](nnf.max_pool2d(self.convs[0](x), 2)))
        skip = x
        x = nnf.gelu(self.norms[1](self.convs[1](x)))
        if len(self.convs) == 3:
            x = nnf.gelu(self.norms[2](self.convs[2](x)) + skip)
        return x


class Net(nn.Module):
    """Whitening conv -> GELU -> three ConvGroups -> global max pool -> scaled linear head."""

    def __init__(self, channels: int, widths: tuple[int, int, int], depth: int, n_classes: int,
                 whiten_kernel: int, head_scale: float):
        super().__init__()
        self.whiten = nn.Conv2d(channels, 2 * channels * whiten_kernel ** 2, whiten_kernel,
                                bias=True)
        self.whiten.weight.requires_grad_(False)
        c_in = self.whiten.out_channels
        groups = []
        for width in widths:
            groups.append(ConvGroup(c_in, width, depth))
            c_in = width
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(c_in, n_classes, bias=False)
        self.head_scale = head_scale

    def forward(self, x: Tensor) -> Tensor:
        x = self.groups(nnf.gelu(self.whiten(x)))
        return self.head(x.amax(dim=(2, 3))) * self.head_scale


@torch.no_grad()
def init_whitening(conv: nn.Conv2d, images: Tensor, eps: float) -> None:
    """Set the filters to the patch covariance's eigenvectors / sqrt(eigenvalue + eps), and negated.

    The covariance is the uncentered second moment of all k x k patches (the images are already
    normalized), so the conv's outputs are decorrelated with unit variance.
    """
    c, k = images.shape[1], conv.kernel_size[0]
    patches = images.float().unfold(2, k, 1).unfold(3, k, 1)        # N, C, H', W', k, k
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps).unsqueeze(1)).view(-1, c, k, k)
    conv.weight.copy_(torch.cat([filters, -filters]).to(conv.weight.dtype))
    conv.bias.zero_()


def build_net(meta: dict, widths: tuple[int, int, int], depth: int, hp: SimpleNamespace,
              device: torch.device, dtype: torch.dtype) -> Net:
    net = Net(int(meta["channels"]), widths, depth, int(meta["n_classes"]), hp.whiten_kernel,
              hp.head_scale)
    net = net.to(device=device, dtype=dtype)
    for module in net.modules():
        if isinstance(module, BatchNorm):
            module.float()  # BN statistics and bias stay in float32 under half precision
    if hp.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


# =================================================================================================
# Optimization
# =================================================================================================

class NesterovSGD:
    """SGD with Nesterov momentum and L2 weight decay, computed as torch.optim.SGD(nesterov=True).

    Written out in a few foreach ops because constructing any torch.optim optimizer imports
    torch._dynamo: about 1.1 s of a 4 s tiny run (torch 2.13 CPU, measured).
    """

    def __init__(self, groups: list[dict], momentum: float):
        self.groups = groups
        self.momentum = momentum
        self.buffers = {id(p): torch.zeros_like(p) for g in groups for p in g["params"]}

    def zero_grad(self) -> None:
        for group in self.groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for group in self.groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            buffers = [self.buffers[id(p)] for p in params]
            grads = torch._foreach_add([p.grad for p in params], params,
                                       alpha=group["weight_decay"])
            torch._foreach_mul_(buffers, self.momentum)
            torch._foreach_add_(buffers, grads)
            torch._foreach_add_(grads, buffers, alpha=self.momentum)
            torch._foreach_add_(params, grads, alpha=-group["lr"])


def make_optimizer(net: Net, hp: SimpleNamespace) -> NesterovSGD:
    """Nesterov SGD with LR and weight decay per 1,024 examples, decoupled from momentum.

    With Nesterov momentum m, a constant gradient produces steps 1 + 1/(1-m) times its size, so
    the LR is divided by that factor (and by 1,024): the step scale then does not move with m.
    The L2 term is multiplied by the LR, so weight decay is divided back out; BN biases get a
    larger LR but the same per-step decay.
    """
    kilostep = 1024 * (1 + 1 / (1 - hp.momentum))
    lr = hp.lr / kilostep
    decay = hp.weight_decay * hp.batch_size / kilostep
    bias_lr = lr * hp.bias_lr_scale
    bn_biases = [m.bias for m in net.modules() if isinstance(m, BatchNorm)]
    bn_ids = {id(p) for p in bn_biases}
    others = [p for p in net.parameters() if p.requires_grad and id(p) not in bn_ids]
    groups = [dict(params=bn_biases, lr=bias_lr, weight_decay=decay / bias_lr, base_lr=bias_lr),
              dict(params=others, lr=lr, weight_decay=decay / lr, base_lr=lr)]
    return NesterovSGD(groups, hp.momentum)


def lr_factor(step: int, total: int, warmup: float, start: float) -> float:
    """Linear warmup from `start` to 1 over the first `warmup` of steps, then linear decay to 0."""
    warmup_steps = int(total * warmup)
    if step < warmup_steps:
        return start + (1 - start) * step / warmup_steps
    return (total - step) / (total - warmup_steps)


class Lookahead:
    """A slow copy of every float tensor in the state dict (BN statistics included).

    Each sync pulls the slow copy towards the fast weights by 1 - decay and resets the fast
    weights to it; decay 1.0 just copies the slow weights back.
    """

    def __init__(self, net: nn.Module):
        self.slow = {k: v.detach().clone() for k, v in net.state_dict().items()
                     if v.is_floating_point()}

    @torch.no_grad()
    def sync(self, net: nn.Module, decay: float) -> None:
        for key, fast in net.state_dict().items():
            if key in self.slow:
                self.slow[key].lerp_(fast, 1 - decay)
                fast.copy_(self.slow[key])


# =================================================================================================
# Evaluation
# =================================================================================================

def shifted(x: Tensor, offset: int) -> Tensor:
    """The image moved one pixel diagonally (offset 0: up-left, 2: down-right), reflect-padded."""
    h, w = x.shape[-2:]
    return nnf.pad(x, (1, 1, 1, 1), mode="reflect")[..., offset:offset + h, offset:offset + w]


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor, tta_level: int, mirror: bool,
                   channels_last: bool) -> Tensor:
    """Logits averaged over test-time views.

    Level 0: the image. Level 1: plus its mirror when the data is mirror symmetric (else the image
    alone). Level 2: half level 1, half the mean of level 1 on two 1-px shifted copies.
    """
    if tta_level not in (0, 1, 2):
        raise ValueError(f"TTA_LEVEL must be 0, 1 or 2, got {tta_level}")

    def plain(x: Tensor) -> Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return model(x).float()

    def level1(x: Tensor) -> Tensor:
        return 0.5 * (plain(x) + plain(x.flip(-1))) if mirror else plain(x)

    def level2(x: Tensor) -> Tensor:
        return 0.5 * level1(x) + 0.25 * (level1(shifted(x, 0)) + level1(shifted(x, 2)))

    view = (plain, level1, level2)[tta_level]
    return torch.cat([view(chunk) for chunk in images.split(EVAL_CHUNK)])


# =================================================================================================
# Training
# =================================================================================================

def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train(train_images: Tensor, train_labels: Tensor, meta: dict, hp: SimpleNamespace, seed: int
          ) -> tuple[nn.Module, list[dict], int]:
    """Train the main net with proxy filtering; return the model to predict with (compiled when
    COMPILE), its progress log and the step count.

    Progress evaluations score the plain model on the first fifth of the training images: seen
    data, so only a health signal, at the cost upstream pays (it scores 10,000 test images, a
    fifth of CIFAR-10's training set, every epoch).
    """
    progress_images = len(train_images) // 5
    device, dtype = train_images.device, train_images.dtype
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build_net(meta, (hp.width1, hp.width2, hp.width3), hp.depth, hp, device, dtype)
    use_proxy = hp.batch_keep < hp.batch_size
    proxy = None
    if use_proxy:
        proxy = build_net(meta, (hp.proxy_width1, hp.proxy_width2, hp.proxy_width3),
                          hp.proxy_depth, hp, device, dtype)
        proxy.whiten.bias.requires_grad_(False)
    whiten_source = train_images[:hp.whiten_images]
    for model in (net, proxy) if use_proxy else (net,):
        init_whitening(model.whiten, whiten_source, hp.whiten_eps)
    run_net = torch.compile(net, mode="max-autotune") if hp.compile else net
    run_proxy = torch.compile(proxy, mode="max-autotune") if (hp.compile and use_proxy) else proxy

    optimizer = make_optimizer(net, hp)
    proxy_optimizer = make_optimizer(proxy, hp) if use_proxy else None
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing, reduction="none")
    flip = bool(hp.flip and meta.get("mirror_symmetric", False))
    steps_per_epoch = len(train_images) // hp.batch_size
    total_steps = math.ceil(steps_per_epoch * hp.epochs)
    whiten_freeze_step = int(hp.whiten_bias_epochs * steps_per_epoch)
    lookahead = Lookahead(net) if hp.lookahead_every > 0 else None
    progress: list[dict] = []
    batches = train_batches(train_images, train_labels, hp, flip, gen)

    net.train()
    if use_proxy:
        proxy.train()
    for step in range(total_steps):
        inputs, labels = next(batches)
        if hp.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        factor = lr_factor(step, total_steps, hp.warmup, hp.warmup_start)
        for opt in (optimizer, proxy_optimizer) if use_proxy else (optimizer,):
            for group in opt.groups:
                group["lr"] = group["base_lr"] * factor
        if step == whiten_freeze_step:
            net.whiten.bias.requires_grad_(False)

        if use_proxy:
            # The proxy ranks every batch but trains only on every PROXY_TRAIN_EVERY-th one.
            train_proxy = step % hp.proxy_train_every == 0
            with torch.set_grad_enabled(train_proxy):
                proxy_losses = loss_fn(run_proxy(inputs).float(), labels)
            keep = proxy_losses.detach().topk(hp.batch_keep).indices
            if train_proxy:
                proxy_optimizer.zero_grad()
                proxy_losses[keep].sum().backward()
                proxy_optimizer.step()
            inputs, labels = inputs[keep], labels[keep]

        loss = loss_fn(run_net(inputs).float(), labels).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        done = step + 1
        if lookahead is not None:
            if done % hp.lookahead_every == 0:
                pull = hp.lookahead_decay ** hp.lookahead_every * (done / total_steps) ** 3
                lookahead.sync(net, pull)
            if done == total_steps:
                lookahead.sync(net, 1.0)
        epoch_end = done % steps_per_epoch == 0 or done == total_steps
        epoch = math.ceil(done / steps_per_epoch)
        if hp.eval_every > 0 and epoch_end and (epoch % hp.eval_every == 0 or done == total_steps):
            net.eval()
            logits = predict_logits(run_net, train_images[:progress_images], 0, flip,
                                    hp.channels_last)
            net.train()
            accuracy = (logits.argmax(1) == train_labels[:progress_images]).float().mean().item()
            row = {"epoch": epoch, "step": done, "train_loss": loss.item() / len(labels),
                   "train_slice_accuracy": round(accuracy, 4)}
            progress.append(row)
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in row.items()), flush=True)
    net.eval()
    return run_net, progress, total_steps


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


def resolve_device(hp: SimpleNamespace, profile: str) -> torch.device:
    device = torch.device(hp.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"airbench96: profile {profile!r} needs a CUDA GPU and torch sees none; "
                 f"run --profile tiny on CPU")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if hp.threads > 0:
        torch.set_num_threads(hp.threads)
    return device


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    args = parse_args(argv)
    hp = load_knobs(args.profile)
    require_data(args.data_dir)
    device = resolve_device(hp, args.profile)
    dtype = getattr(torch, hp.dtype)
    train_images, train_labels, test_images, meta = load_data(args.data_dir, device, dtype)
    loaded = time.perf_counter()

    net, progress, steps = train(train_images, train_labels, meta, hp, args.seed)
    sync_device(device)
    trained = time.perf_counter()
    mirror = bool(meta.get("mirror_symmetric", False))
    logits = predict_logits(net, test_images, hp.tta_level, mirror, hp.channels_last)
    predictions = logits.argmax(1).cpu().numpy().astype(np.int64)
    sync_device(device)
    predicted = time.perf_counter()

    args.out_dir.mkdir(parents=True, exist_ok=True)
    np.save(args.out_dir / "test_predictions.npy", predictions)
    result = {
        "profile": args.profile, "seed": args.seed, "dataset": meta.get("name"),
        "steps": steps, "n_params": sum(p.numel() for p in net.parameters()),
        "load_seconds": round(loaded - started, 3),
        "train_seconds": round(trained - loaded, 3),
        "predict_seconds": round(predicted - trained, 3),
        "total_seconds": round(predicted - started, 3),
        "progress": progress,
    }
    (args.out_dir / "result.json").write_text(json.dumps(result, indent=1))
    # Greppable summary (informational: the evaluator measures time and accuracy itself).
    for key in ("steps", "n_params", "train_seconds", "predict_seconds", "total_seconds"):
        print(f"{key}: {result[key]}")


if __name__ == "__main__":
    main()
