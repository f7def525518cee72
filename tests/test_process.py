"""Processes the harness starts: budgets enforced from outside, and nothing outlives the harness.
One property per test."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mlflow_autoresearch.execution import process
from support import process_gone

SLEEPER = "import time; time.sleep(600)"


def _run(tmp_path, code, timeout, grace=process.GRACE_SECONDS, on_start=None):
    return process.run([sys.executable, "-c", code], tmp_path, timeout, tmp_path / "out.txt",
                       tmp_path / "err.txt", process.child_env(), on_start, grace)


def test_output_is_captured_and_exit_code_kept(tmp_path):
    done = _run(tmp_path, "import sys; print('hello'); sys.exit(3)", 30)
    assert done.exit_code == 3 and not done.timed_out
    assert (tmp_path / "out.txt").read_text().strip() == "hello"


def test_a_signal_death_reads_as_that_signal(tmp_path):
    done = _run(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGABRT)", 30)
    assert done.exit_code == -signal.SIGABRT


def test_runner_kills_process_group_on_budget(tmp_path):
    # The child forks a grandchild that writes its pid, then both sleep: both must die.
    code = ("import os, time, subprocess, sys; "
            f"p = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}]); "
            f"open({str(tmp_path / 'gc.pid')!r}, 'w').write(str(p.pid)); time.sleep(600)")
    done = _run(tmp_path, code, 1.5)
    assert done.timed_out and done.seconds < 1.5 + process.GRACE_SECONDS + 2
    assert process_gone(int((tmp_path / "gc.pid").read_text()), 2)


def test_sigterm_is_followed_by_sigkill(tmp_path):
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(600)")
    done = _run(tmp_path, code, 1.0, grace=0.5)
    assert done.timed_out and done.exit_code == -9 and done.seconds < 5


def test_the_group_is_recorded_before_the_command_starts_and_off_its_clock(tmp_path):
    marker = tmp_path / "started"
    recorded = []

    def record(group):
        assert not marker.exists()  # nothing of the command ran yet
        recorded.append(group)
        time.sleep(1.5)  # a slow store: must not count against the budget

    done = _run(tmp_path, f"open({str(marker)!r}, 'w').write('x')", 1.0, on_start=record)
    assert marker.exists() and not done.timed_out and done.seconds < 1.0
    assert recorded[0].marker == f"{recorded[0].pgid}@{recorded[0].start_ticks}"


def test_a_failure_while_recording_kills_the_group_before_the_command_runs(tmp_path):
    marker = tmp_path / "started"

    def record(group):
        raise OSError("store down")

    with pytest.raises(OSError):
        _run(tmp_path, f"open({str(marker)!r}, 'w').write('x')", 10, on_start=record)
    time.sleep(0.3)
    assert not marker.exists()


def test_an_interrupt_while_waiting_kills_the_group(tmp_path):
    script = tmp_path / "harness.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from mlflow_autoresearch.execution import process
        tmp = Path({str(tmp_path)!r})
        def record(group):
            (tmp / "pgid").write_text(str(group.pgid))
        try:
            process.run([sys.executable, "-c", {SLEEPER!r}], tmp, 600, tmp / "o.txt",
                        tmp / "e.txt", process.child_env(), record)
        except KeyboardInterrupt:
            (tmp / "interrupted").write_text("yes")
    """))
    harness = subprocess.Popen([sys.executable, str(script)])
    while not (tmp_path / "pgid").exists():
        time.sleep(0.05)
    pgid = int((tmp_path / "pgid").read_text())
    time.sleep(0.5)
    harness.send_signal(signal.SIGINT)
    harness.wait(timeout=30)
    assert (tmp_path / "interrupted").exists() and process_gone(pgid, 2)


def test_a_killed_harness_takes_its_children_with_it(tmp_path):
    """kill -9 of the harness: the guard's parent-death signal kills the whole group, the
    command's own children included."""
    script = tmp_path / "harness.py"
    code = ("import subprocess, sys, time; "
            f"p = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}]); "
            f"open({str(tmp_path / 'gc.pid')!r}, 'w').write(str(p.pid)); time.sleep(600)")
    script.write_text(textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from mlflow_autoresearch.execution import process
        tmp = Path({str(tmp_path)!r})
        process.run([sys.executable, "-c", {code!r}], tmp, 600, tmp / "o.txt", tmp / "e.txt",
                    process.child_env(), lambda g: (tmp / "pgid").write_text(str(g.pgid)))
    """))
    harness = subprocess.Popen([sys.executable, str(script)])
    while not (tmp_path / "gc.pid").exists():
        time.sleep(0.05)
    guard, grandchild = int((tmp_path / "pgid").read_text()), int((tmp_path / "gc.pid").read_text())
    harness.kill()
    harness.wait()
    assert process_gone(guard, 5) and process_gone(grandchild, 5)


def test_children_get_no_mlflow_variables_and_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    monkeypatch.setenv("MLFLOW_RUN_ID", "abc")
    for name in ("OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "DB_PASSWORD"):
        monkeypatch.setenv(name, "s3cret")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = process.child_env({"EXTRA": "1"})
    assert not [k for k in env if k.startswith("MLFLOW_")] and env["EXTRA"] == "1"
    assert "s3cret" not in env.values() and env["OMP_NUM_THREADS"] == "1"


def test_reap_kills_only_the_recorded_process(tmp_path):
    child = process.start([sys.executable, "-c", SLEEPER], tmp_path, process.child_env(),
                          tmp_path / "o.txt", tmp_path / "e.txt")
    child.go()
    recycled = process.Group(child.group.pgid, child.group.start_ticks + 1)
    assert not process.reap(recycled.marker)  # same id, another start time: not ours
    assert child.proc.poll() is None
    assert process.reap(child.group.marker)
    assert child.proc.wait(timeout=10) < 0
