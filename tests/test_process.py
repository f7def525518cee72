"""The budget is enforced from outside: one property per test."""

import os
import sys
import time

from mlflow_autoresearch import process


def _run(tmp_path, code, timeout, grace=process.GRACE_SECONDS):
    started = time.monotonic()
    proc = process.start([sys.executable, "-c", code], tmp_path, process.child_env(),
                         tmp_path / "out.txt", tmp_path / "err.txt")
    return proc, process.wait(proc, timeout, started, grace)


def test_output_is_captured_and_exit_code_kept(tmp_path):
    _, done = _run(tmp_path, "import sys; print('hello'); sys.exit(3)", 30)
    assert done.exit_code == 3 and not done.timed_out
    assert (tmp_path / "out.txt").read_text().strip() == "hello"


def test_runner_kills_process_group_on_budget(tmp_path):
    # The child forks a grandchild that writes its pid, then both sleep: both must die.
    code = ("import os, time, subprocess, sys; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            f"open({str(tmp_path / 'gc.pid')!r}, 'w').write(str(p.pid)); time.sleep(600)")
    _, done = _run(tmp_path, code, 1.5)
    assert done.timed_out and done.seconds < 1.5 + process.GRACE_SECONDS + 2
    grandchild = int((tmp_path / "gc.pid").read_text())
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{grandchild}") or \
        open(f"/proc/{grandchild}/stat").read().split()[2] == "Z"


def test_sigterm_is_followed_by_sigkill(tmp_path):
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(600)")
    _, done = _run(tmp_path, code, 1.0, grace=0.5)
    assert done.timed_out and done.exit_code == -9 and done.seconds < 5


def test_reap_orphan_only_kills_the_named_run(tmp_path):
    env = process.child_env({"MLFLOW_RUN_ID": "abc123"})
    proc = process.start([sys.executable, "-c", "import time; time.sleep(600)"], tmp_path, env,
                         tmp_path / "o.txt", tmp_path / "e.txt")
    time.sleep(0.3)
    assert not process.reap_orphan(proc.pid, "someone-else")
    assert proc.poll() is None
    assert process.reap_orphan(proc.pid, "abc123")
    assert proc.wait(timeout=10) < 0
