"""Slots: the share of this machine each of the local executor's concurrent trials holds.

An environment's profile says what one trial needs (`resources: {cpus, gpus}`); `plan` splits
the cores this process may use and the GPUs it sees into `--workers` slots so that no two
concurrent trials share a core (unless a trial asks for a fraction of one) or a GPU, and refuses
a `--workers` the machine cannot hold. One slot has every core: the serial loop as before.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass

from ...environment import Environment
from ...errors import HarnessError


@dataclass(frozen=True)
class Slot:
    """One trial's share: its cores, and its GPUs (None: CUDA_VISIBLE_DEVICES left alone)."""

    index: int
    cores: tuple[int, ...]
    gpus: tuple[str, ...] | None = None

    def variables(self) -> dict[str, str]:
        return {} if self.gpus is None else {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus)}


def plan(env: Environment, workers: int, cores: list[int] | None = None,
         gpus: list[str] | None = None) -> list[Slot]:
    """`workers` slots for trials of `env`, from `cores` and `gpus` (default: this process's
    CPU affinity and the GPUs it sees).

    Raises:
        HarnessError: `workers` is below 1, or the slots would need more cores or GPUs than
            there are.
    """
    cores = sorted(os.sched_getaffinity(0)) if cores is None else cores
    gpus = visible_gpus() if gpus is None else gpus
    if workers < 1:
        raise HarnessError(f"--workers must be at least 1, got {workers}")
    where = f"resources of {env.name} ({env.profile}): cpus {env.cpus:g}, gpus {env.gpus}"
    if workers * env.gpus > len(gpus):
        raise HarnessError(
            f"--workers {workers} needs {workers * env.gpus} GPU(s) ({where}), but "
            f"{len(gpus)} are visible: lower --workers")
    if workers == 1:  # one trial at a time has the machine to itself
        return [Slot(0, tuple(cores), _gpus(0, env.gpus, gpus) if env.gpus else None)]
    per_core = 1 if env.cpus >= 1 else math.floor(1 / env.cpus)  # slots sharing one core
    whole = math.ceil(env.cpus) if env.cpus >= 1 else 1
    if math.ceil(workers / per_core) * whole > len(cores):
        raise HarnessError(
            f"--workers {workers} needs {workers} x {env.cpus:g} core(s) ({where}), but this "
            f"process may use {len(cores)}: lower --workers, or the profile's resources.cpus in "
            f"{env.root.name}/autoresearch.yaml if a trial needs less")
    if workers <= len(cores):
        size = max(whole, len(cores) // workers)
        shares = [tuple(cores[i * size:(i + 1) * size]) for i in range(workers)]
    else:
        shares = [(cores[i % len(cores)],) for i in range(workers)]
    return [Slot(i, share, _gpus(i, env.gpus, gpus)) for i, share in enumerate(shares)]


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES where set, else what nvidia-smi
    lists, else none."""
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named is not None:
        return [g for g in named.split(",") if g.strip()]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listed.splitlines()) if line.startswith("GPU ")]


def _gpus(index: int, need: int, gpus: list[str]) -> tuple[str, ...] | None:
    """Slot `index`'s GPUs; a slot that needs none sees none, where there are any to hide."""
    if not need:
        return () if gpus else None
    return tuple(gpus[index * need:(index + 1) * need])
