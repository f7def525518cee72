"""The sandbox's own pieces: the spec's limits, `--sandbox` choices, the evaluator-child path,
and `autoresearch doctor`. The hostile recipes themselves: tests/test_tamper.py."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlflow_autoresearch import tags
from mlflow_autoresearch.campaign import Settings, run_campaign
from mlflow_autoresearch.cli import main
from mlflow_autoresearch.environment import LIMIT_KEYS, load_environment
from mlflow_autoresearch.errors import EnvironmentSpecError, HarnessError
from mlflow_autoresearch.execution.sandbox import (BWRAP, Limits, Sandbox, bwrap_works,
                                                   python_paths)
from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.testing import ScriptedAgent, replace_in
from support import ROOT, free_port, needs_bwrap



def _spec(env_dir: Path, **keys) -> None:
    path = env_dir / "autoresearch.yaml"
    spec = yaml.safe_load(path.read_text())
    spec.update(keys)
    path.write_text(yaml.safe_dump(spec))


def test_the_spec_limits_are_the_launchers_limits(toy_env):
    assert LIMIT_KEYS == tuple(f.name for f in dataclasses.fields(Limits))
    _spec(toy_env, limits={"memory_mb": 512}, profiles={"tiny": {"limits": {"file_mb": 8}}})
    assert load_environment(str(toy_env)).limits == {"memory_mb": 512, "file_mb": 8}
    _spec(toy_env, limits={"memory": 512, "processes": -1})
    with pytest.raises(EnvironmentSpecError) as err:
        load_environment(str(toy_env))
    problems = str(err.value)
    assert "unknown limit 'memory'; allowed: ['memory_mb', 'processes', 'file_mb']" in problems
    assert "'limits.processes' must be a positive integer, got -1" in problems


@pytest.fixture
def no_bwrap(tmp_path, monkeypatch):
    """A PATH on which `bash` is found and `bwrap` is not."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sh"):
        (bin_dir / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_auto_without_bwrap_warns_once_and_records_none(toy_env, store, tmp_path, no_bwrap):
    lines: list[str] = []
    settings = Settings(str(toy_env), trials=1, tracking_uri=store, workdir=tmp_path / "work")
    steps = replace_in("recipe/toy.py", "STEPS = 60", "STEPS = 90")
    agent = ScriptedAgent("opt", [("steps", steps)])
    summary = run_campaign(settings, {"opt": agent}, echo=lines.append)
    warnings = [line for line in lines if "WITHOUT a sandbox" in line]
    assert len(warnings) == 1 and "no `bwrap` on PATH" in warnings[0]
    assert {MlflowStore(store).raw(t.run_id).tags[tags.SANDBOX] for t in summary.trials} == {"none"}
    with pytest.raises(HarnessError, match="--sandbox bwrap: no `bwrap` on PATH .* --sandbox off"):
        run_campaign(dataclasses.replace(settings, sandbox=BWRAP), {"opt": agent},
                     echo=lines.append)


@needs_bwrap
def test_an_evaluator_child_sees_only_what_it_is_given(tmp_path):
    """`_common.sandboxed` with the variable the harness sets: the named file is read-only, a
    file beside it does not exist, the child's own folder is writable."""
    given, hidden, work = tmp_path / "given.txt", tmp_path / "hidden.txt", tmp_path / "work"
    given.write_text("data")
    hidden.write_text("labels")
    work.mkdir()
    code = ("import pathlib, sys\n"
            "print(pathlib.Path(sys.argv[1]).read_text())\n"
            "print(pathlib.Path(sys.argv[2]).exists())\n"
            "pathlib.Path(sys.argv[3], 'out.txt').write_text('done')\n"
            "try:\n    pathlib.Path(sys.argv[1]).write_text('x')\nexcept OSError as e:\n"
            "    print(e.strerror)\n")
    sandbox = Sandbox(BWRAP, Limits(), python_paths())
    script = (f"import sys; sys.path.insert(0, {str(ROOT / 'evaluators')!r}); "
              "from _common import sandboxed; import subprocess; "
              f"argv = sandboxed([sys.executable, '-c', {code!r}, {str(given)!r}, {str(hidden)!r}, "
              f"{str(work)!r}], [{str(given)!r}], [{str(work)!r}]); "
              "print(subprocess.run(argv, capture_output=True, text=True).stdout, end='')")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, **sandbox.child_env()}, check=True).stdout
    assert out.split("\n")[:3] == ["data", "False", "Read-only file system"], out
    assert (work / "out.txt").read_text() == "done" and given.read_text() == "data"


def test_doctor_prints_one_table_and_fails_on_a_missing_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    fresh = runner.invoke(main, ["doctor", "--tracking-uri", uri])
    assert "none yet; the first campaign creates it" in fresh.output and fresh.exit_code == 0
    assert not (tmp_path / "m.db").exists()  # the doctor creates no store
    MlflowStore(uri).check_writable()
    good = runner.invoke(main, ["doctor", "--tracking-uri", uri])
    rows = {line[6:].split("  ")[0].strip(): line[:5].strip()
            for line in good.output.splitlines() if line[:1] in "owF"}
    assert good.exit_code == 0, good.output
    assert rows["tracking store"] == "ok" and "a test write went through" in good.output
    assert rows["limits"] in ("ok", "warn")
    assert rows["data airbench96/tiny"] == "warn" and "fix: " in good.output
    if not bwrap_works():
        assert rows["sandbox"] == "ok" and rows["sandbox view"] == "ok"
    bad = runner.invoke(main, ["doctor", "--tracking-uri", f"http://127.0.0.1:{free_port()}"])
    assert bad.exit_code == 1
    assert any(line.startswith("FAIL  tracking store") for line in bad.output.splitlines())
