"""The evaluators' own child (the one that imports a trial's model code) dies with the evaluator
and stays where the harness's kills reach it."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from support import process_gone

from .conftest import EVALUATORS

SLEEPER = "import os, time; open(os.environ['PID_FILE'], 'w').write(str(os.getpid())); time.sleep(600)"


def _evaluator(tmp_path: Path) -> subprocess.Popen:
    """An evaluator process that runs one child through `_lm.run_child` with a long deadline."""
    script = tmp_path / "evaluator.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(EVALUATORS)!r})
        import _lm
        tmp = Path({str(tmp_path)!r})
        _lm.run_child([sys.executable, "-c", {SLEEPER!r}], 600, tmp / "o.txt", tmp / "e.txt",
                      {{"PID_FILE": str(tmp / "child.pid")}})
    """))
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    deadline = time.monotonic() + 30
    pid_file = tmp_path / "child.pid"  # created empty first, then written: wait for the pid
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def test_the_child_dies_when_the_evaluator_is_killed(tmp_path):
    evaluator = _evaluator(tmp_path)
    child = int((tmp_path / "child.pid").read_text())
    evaluator.kill()
    evaluator.wait()
    assert process_gone(child)


def test_the_child_is_in_the_evaluators_process_group(tmp_path):
    evaluator = _evaluator(tmp_path)
    child = int((tmp_path / "child.pid").read_text())
    assert os.getpgid(child) == evaluator.pid
    os.killpg(evaluator.pid, signal.SIGTERM)  # what the harness does at the eval budget
    evaluator.wait(timeout=10)
    assert process_gone(child)
