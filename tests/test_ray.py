"""The Ray executor, for real: tests/ray_cases.py run inside a network namespace of its own.

Ray, left to itself, binds the host's interface address and probes a public resolver to find
it; in a fresh network namespace (`unshare -n`, then `lo` up) 127.0.0.1 is the only address and
nothing can leave the machine. That needs root (CI is root); elsewhere the case skips.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from support import ROOT

# Two sessions: the cases that share one two-node cluster, and the coordinator that starts its
# own Ray and is killed.
CASES = ["TestRayExecutor or loopback or lost_node", "sigkill"]


def _netns_works() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


needs_netns = pytest.mark.skipif(not _netns_works() and not os.environ.get("CI"),
                                 reason="needs `unshare -n` (root) and `ip` for an isolated "
                                        "network")


@needs_netns
@pytest.mark.parametrize("case", CASES)
def test_ray_case_in_its_own_network(case, tmp_path):
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
            "--basetemp", str(tmp_path / "t"), "-k", case, "tests/ray_cases.py"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTEST_XDIST_WORKER": ""}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up && exec " + shlex.join(argv)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
