"""Harness-owned launcher for the training phase (protected: no edit may touch this file).

Runs the recipe as `__main__` after installing a Python audit hook that ends the process the moment
it opens anything under the data directory's `private/` sibling, where only the evaluator's
validation data lives (the "no validation data in training" rule, environments.md 2.1). The hook
prints one line naming the file and exits with DATA_ACCESS_EXIT, which the evaluator labels
`illegal`. Audit hooks cannot be removed once installed; this is a tripwire for honest mistakes and
casual peeking, not a sandbox (a subprocess or C code can still read the file).

With `--nproc N` > 1 outside torchrun, it re-executes itself under `torch.distributed.run`, so
every rank runs behind the same hook.

Usage: python harness/launch.py [--nproc N] RECIPE ARGS... (ARGS must include --data-dir D)
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

DATA_ACCESS_EXIT = 86


def private_dir(args: list[str]) -> Path:
    """D/../private for the recipe's `--data-dir D`."""
    data_dir = Path(args[args.index("--data-dir") + 1])
    return (data_dir.resolve().parent / "private").resolve()


def guard(private: Path) -> None:
    """Install the audit hook that stops the process on any open under `private`."""
    def hook(event: str, args: tuple) -> None:
        if event not in ("open", "os.listdir", "os.scandir") or not args:
            return
        target = args[0]
        if not isinstance(target, (str, bytes, os.PathLike)):
            return
        try:
            path = Path(os.fsdecode(target)).resolve()
        except (OSError, ValueError):
            return
        if path == private or private in path.parents:
            os.write(2, f"\nparameter_golf harness: the training phase opened validation data "
                        f"{path}\n".encode())
            os._exit(DATA_ACCESS_EXIT)

    sys.addaudithook(hook)


def main() -> None:
    args = sys.argv[1:]
    nproc = 1
    if args[:1] == ["--nproc"]:
        nproc, args = int(float(args[1])), args[2:]
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                  f"--nproc_per_node={nproc}", __file__, *args])
    recipe, recipe_args = args[0], args[1:]
    guard(private_dir(recipe_args))
    sys.argv = [recipe, *recipe_args]
    sys.path.insert(0, str(Path(recipe).resolve().parent))
    runpy.run_path(recipe, run_name="__main__")


if __name__ == "__main__":
    main()
