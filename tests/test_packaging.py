"""A built wheel, installed into a fresh virtual environment and run from an empty folder, finds
the shipped environments and their evaluators (a clone is not needed)."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from support import ROOT


def _run(argv, cwd, timeout=600, env=None):
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_runs_the_shipped_environments(tmp_path):
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)],
         tmp_path)
    (wheel,) = wheels.glob("mlflow_autoresearch-*.whl")
    fresh = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], tmp_path)
    _run([sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"), "install",
          "--no-deps", "-q", str(wheel)], tmp_path)
    # The dependencies (mlflow, torch, ...) come from this test's environment; its site folder is
    # added as a plain path, so its editable install of the package is not picked up.
    site = Path(next(fresh.glob("lib/python*/site-packages")))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{fresh / 'bin'}{os.pathsep}{env['PATH']}"
    where = _run([str(fresh / "bin" / "python"), "-c",
                  "import mlflow_autoresearch; print(mlflow_autoresearch.__file__)"], empty, env=env)
    assert where.stdout.startswith(str(site))
    listed = _run([str(fresh / "bin" / "autoresearch"), "envs"], empty, env=env).stdout
    assert [line.split()[0] for line in listed.splitlines()] == \
        ["airbench96", "nanochat_d12", "parameter_golf"]
    assert str(site) in listed and str(ROOT) not in listed
    kernels = _run([str(fresh / "bin" / "python"), "-c",
                    "from mlflow_autoresearch import load_environment; "
                    "print(load_environment('nanochat_d12').python_path[0])"], empty, env=env)
    assert (Path(kernels.stdout.strip()) / "attention.py").is_file()
    ran = _run([str(fresh / "bin" / "autoresearch"), "run", "airbench96", "--trials", "0"], empty,
               env=env)
    assert ran.stdout.startswith("t0000 baseline  ok"), ran.stdout
    assert sorted(p.name for p in empty.iterdir()) == [".autoresearch", "mlflow.db", "mlruns"]
