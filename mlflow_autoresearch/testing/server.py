"""A real `mlflow server` on loopback, for tests and benchmarks that need a tracking server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

START_SECONDS = 90.0


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    """`mlflow server --workers 1` on 127.0.0.1:`port` (its job runner off), its store under
    `folder`, in a session of its own; returns once it answers. Stop it with
    `os.killpg(proc.pid, signal)`; starting it again on the same folder and port is a restart.

    Raises:
        RuntimeError: it did not answer within START_SECONDS.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "server-artifacts")],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                raise RuntimeError(f"mlflow server did not start on port {port}") from None
            time.sleep(0.3)
