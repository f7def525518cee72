"""The launcher: runs one command under the limits, in bubblewrap where the policy says so.

    python -I -S _launch.py POLICY_JSON -- COMMAND...

Run by path, standard library only, so it starts in milliseconds (`sandbox.py` imports it for
the cgroup paths). The policy (written by `sandbox.Sandbox.wrap`): `kind` (`bwrap` or `none`),
`limits` (memory_mb, processes, file_mb), `read` and `write` (paths the command sees read-only
or writable), `cwd`, and `group`, the name of its cgroup (chosen by the harness, which reads the
group's CPU time after the command ends and removes it; else one of its own, swept later). It
puts itself under the limits (inherited by everything it executes), then replaces itself with
`bwrap ... -- COMMAND` or with COMMAND.

Limits: memory and processes through a cgroup of their own (v1, or v2 with both controllers
available to it) where this process may make one; otherwise memory through `RLIMIT_AS` (not on
GPU machines: CUDA reserves far more address space than it uses) and processes not at all
(`RLIMIT_NPROC` counts every process of the user, and never binds root). File size always
through `RLIMIT_FSIZE`. The namespaces are bubblewrap's: none is made here.
"""

import glob
import json
import os
import resource
import sys
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_DIR = "autoresearch"
STALE_CGROUP_SECONDS = 60.0
SYSTEM_DIRS = ("/usr", "/etc")  # not /opt: images keep applications (and their data) there
TOP_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
GPU_DEVICES = ("/dev/nvidia*", "/dev/dri")
MB = 1 << 20


def bwrap_argv(policy: dict) -> list[str]:
    """The bubblewrap command line for `policy` (everything before the command)."""
    argv = ["bwrap", "--die-with-parent", "--new-session", "--unshare-all", "--cap-drop", "ALL"]
    for path in SYSTEM_DIRS:
        argv += ["--ro-bind-try", path, path]
    for path in TOP_LINKS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    devices = _gpu_devices()
    for device in devices:
        argv += ["--dev-bind", device, device]
    if devices:  # CUDA and NVML read the PCI topology and driver state under /sys
        argv += ["--ro-bind", "/sys", "/sys"]
    argv += ["--size", str(policy["limits"]["file_mb"] * MB), "--tmpfs", "/tmp"]
    binds = [(p, "--ro-bind") for p in policy["read"]] + [(p, "--bind") for p in policy["write"]]
    for path, how in sorted(binds, key=lambda b: len(Path(b[0]).parts)):  # parents first
        argv += [how, path, path]
    argv += ["--remount-ro", "/", "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp"]
    if policy.get("cwd"):
        argv += ["--chdir", policy["cwd"]]
    return [*argv, "--"]


def apply_limits(limits: dict, name: str) -> None:
    """Put this process under `limits` (inherited by what it executes), in cgroup `name`."""
    file_bytes = limits["file_mb"] * MB
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    if not _join_cgroup(limits, name) and not _gpu_devices():
        memory = limits["memory_mb"] * MB
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    if not _v2():  # v1 accounts CPU in a hierarchy of its own; v2's cpu.stat is always there
        _join({CGROUP_ROOT / "cpuacct": {}}, name)


def cpu_seconds(name: str) -> float | None:
    """The CPU time of every process that ever ran in cgroup `name` (None: no such group):
    the kernel's own count, which neither reaping nor a PID namespace can hide."""
    try:
        if _v2():
            stat = (_group(CGROUP_ROOT, name) / "cpu.stat").read_text().split()
            return int(stat[stat.index("usage_usec") + 1]) / 1e6
        return int((_group(CGROUP_ROOT / "cpuacct", name) / "cpuacct.usage").read_text()) / 1e9
    except (OSError, ValueError):
        return None


def remove(name: str) -> None:
    """Remove cgroup `name` from every hierarchy (once its processes are gone)."""
    roots = [CGROUP_ROOT] if _v2() else [CGROUP_ROOT / c for c in ("memory", "pids", "cpuacct")]
    for root in roots:
        try:
            _group(root, name).rmdir()
        except OSError:
            pass


def _v2() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").is_file()


def _group(root: Path, name: str) -> Path:
    return root / _own_cgroup(root).lstrip("/") / CGROUP_DIR / name


def _gpu_devices() -> list[str]:
    return sorted(d for pattern in GPU_DEVICES for d in glob.glob(pattern))


def _join_cgroup(limits: dict, name: str) -> bool:
    """Create cgroup `name` with the memory and process limits and move this process into it;
    False (nothing changed) where a limit cannot be set. Swap is limited where it exists."""
    memory, processes = limits["memory_mb"] * MB, limits["processes"]
    if _v2():
        return _join({CGROUP_ROOT: {"memory.max": memory, "pids.max": processes,
                                    "memory.swap.max?": 0}}, name)
    return _join({CGROUP_ROOT / "memory": {"memory.limit_in_bytes": memory,
                                           "memory.memsw.limit_in_bytes?": memory},
                  CGROUP_ROOT / "pids": {"pids.max": processes}}, name)


def _join(files: dict[Path, dict[str, int]], name: str) -> bool:
    """Make cgroup `name` under each root, write its files (a `?` suffix: where it exists), and
    move this process into it; on any failure leave every one again and return False."""
    made = []
    try:
        for root, values in files.items():
            parent = _group(root, name).parent
            parent.mkdir(exist_ok=True)
            _sweep(parent)
            group = parent / name
            group.mkdir()
            made.append(group)
            for key, value in values.items():  # a missing required file raises: no limit
                if not key.endswith("?") or (group / key[:-1]).exists():
                    (group / key.rstrip("?")).write_text(str(value))
            (group / "cgroup.procs").write_text(str(os.getpid()))
        return True
    except OSError:
        for group in reversed(made):
            _leave(group)
        return False


def _own_cgroup(root: Path) -> str:
    """This process's cgroup path in the hierarchy mounted at `root` (v1) or the unified one."""
    controller = root.name
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, names, path = line.split(":", 2)
        if (root == CGROUP_ROOT and number == "0") or controller in names.split(","):
            return path
    raise OSError(f"no cgroup of {controller}")


def _sweep(parent: Path) -> None:
    """Remove the empty cgroups earlier launches left (a cgroup outlives its last process)."""
    for group in parent.iterdir():
        try:
            if group.is_dir() and time.time() - group.stat().st_mtime > STALE_CGROUP_SECONDS:
                group.rmdir()
        except OSError:
            pass  # still in use


def _leave(group: Path) -> None:
    try:
        (group.parent.parent / "cgroup.procs").write_text(str(os.getpid()))
    except OSError:
        pass
    try:
        group.rmdir()
    except OSError:
        pass


def main(argv: list[str]) -> None:
    """`launcher POLICY_JSON -- COMMAND...`: apply the limits, then execute the command."""
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: _launch.py POLICY_JSON -- COMMAND...")
    policy, command = json.loads(argv[0]), argv[2:]
    apply_limits(policy["limits"], policy.get("group") or f"{os.getpid()}-{time.time_ns()}")
    if policy["kind"] == "bwrap":
        command = bwrap_argv(policy) + command
    elif policy.get("cwd"):
        os.chdir(policy["cwd"])
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.exit(f"sandbox launcher: cannot execute {command[0]}: {exc}")


if __name__ == "__main__":
    main(sys.argv[1:])
