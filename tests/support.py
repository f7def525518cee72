"""Helpers for tests: paths, and private copies of environment folders to edit freely.

A plain module (not conftest.py) so test files can import it by name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "assets"


def copy_env(src: Path, dest: Path, evaluators: Path, **spec_overrides) -> Path:
    """Copy an environment folder beside a copy of its evaluators, with spec keys overridden."""
    env_dir = dest / src.name
    shutil.copytree(src, env_dir, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(evaluators, dest / "evaluators", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    spec_path = env_dir / "autoresearch.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["evaluator"] = str(dest / "evaluators" / Path(spec["evaluator"]).name)
    if "python_path" in spec:  # shared code stays where it is: point the copy at the original
        spec["python_path"] = [str((src / rel).resolve()) for rel in spec["python_path"]]
    for key, value in spec_overrides.items():
        spec[key] = value
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return env_dir
