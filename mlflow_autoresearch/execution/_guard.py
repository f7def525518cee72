"""The guard: the leader of every process group the harness starts (run by path, not imported).

    python -I -S _guard.py HARNESS_PID -- COMMAND...

It asks Linux for a signal when the harness dies (a parent-death signal) and then kills its whole
process group, so a `kill -9` of the loop takes the recipe and everything it started in its group
with it. It runs nothing until the harness writes `go` on its stdin, so the harness can record the
group before the recipe starts and before the budget clock runs; if the harness dies or fails
first, the command never starts. It exits as its command did (same code, or the same signal).
SIGTERM is left to the command: the harness follows it with SIGKILL after its grace period.

Standard library only, imported by nobody: it starts in milliseconds and never runs our package.
"""

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
HARNESS_DIED = signal.SIGRTMIN + 3  # a signal no recipe sends by habit


def _kill_group(*_: object) -> None:
    os.killpg(0, signal.SIGKILL)


def main() -> int:
    harness, command = int(sys.argv[1]), sys.argv[3:]
    signal.signal(HARNESS_DIED, _kill_group)
    signal.signal(signal.SIGTERM, lambda *_: None)  # a handler, not SIG_IGN: exec resets it
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(HARNESS_DIED))
    if os.getppid() != harness:  # the harness died before the signal was armed
        _kill_group()
    if sys.stdin.readline().strip() != "go":
        return 125  # the harness failed before the start: run nothing
    sys.stdin.close()
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    code = child.wait()
    if code < 0:  # die of the same signal, so the harness sees what killed the command
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main())
