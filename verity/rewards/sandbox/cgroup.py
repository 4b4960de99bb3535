"""A control group per sandbox run, where the machine lets Verity make one.

rlimits bound each process on its own: a run of 32 processes of 512 MB each could hold 16 GB, and 32 busy ones
32 times the CPU time of one. A cgroup bounds the run as a whole: ``memory`` for every process together (the
kernel's OOM killer acts inside the group alone), ``pids`` for how many exist at once and, where the ``cpu``
controller is available, how many CPUs all of them use together (``cpu.max``, or v1's ``cpu.cfs_quota_us``).
Both cgroup v2 (when the caller's own group delegates the controllers to its children) and v1 (separate
hierarchies, as many containers mount them) are used; the program's process joins the groups before it drops its
privileges, so everything it starts is inside.
"""

from __future__ import annotations

import functools
import os
import secrets
import signal
import time
from pathlib import Path

_ROOT = Path("/sys/fs/cgroup")
_REMOVE_TIMEOUT_S = 5.0
_CPU_PERIOD_US = 100_000
_MIN_CPU_QUOTA_US = 1_000  # the kernel's smallest quota


def _own_groups() -> dict[str, str]:
    """Controller name ('' for cgroup v2) -> this process's group path, from /proc/self/cgroup."""
    groups = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            groups[name] = path
    return groups


def _usable(directory: Path) -> bool:
    probe = directory / f"verity-probe-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError:
        return False
    return True


@functools.cache
def parents() -> tuple[Path, ...]:
    """The directories to make a run's groups in: one for v2, a memory, a pids and (if usable) a cpu one for v1;
    () when none."""
    try:
        own = _own_groups()
    except (OSError, ValueError):
        return ()
    v2 = _ROOT / own.get("", "/").lstrip("/")
    if (_ROOT / "cgroup.controllers").exists() and {"memory", "pids"} <= set(
        (v2 / "cgroup.subtree_control").read_text().split() if (v2 / "cgroup.subtree_control").exists() else []
    ):
        return (v2,) if _usable(v2) else ()
    v1 = tuple(_ROOT / name / own.get(name, "/").lstrip("/") for name in ("memory", "pids"))
    if not all(_usable(p) for p in v1):
        return ()
    cpu = _ROOT / "cpu" / own.get("cpu", "/").lstrip("/")
    return (*v1, cpu) if (cpu / "cpu.cfs_quota_us").exists() and _usable(cpu) else v1


def bounds_cpu() -> bool:
    """Whether the run's groups bound the CPUs the whole run uses (the cpu controller is delegated to them)."""
    groups = parents()
    if len(groups) == 1:
        control = groups[0] / "cgroup.subtree_control"
        return control.exists() and "cpu" in control.read_text().split()
    return len(groups) == 3


def _prefix(pid: int) -> str:
    return f"verity-sandbox-{pid}-"


def create(memory_bytes: int, processes: int, cpus: float) -> list[str]:
    """Make the run's groups, limited to ``memory_bytes``, ``processes`` and ``cpus`` CPUs in all (the last where
    ``bounds_cpu()``); their directories. Their name carries this process's pid, so whoever kills this process can
    remove them (``remove_left_by``)."""
    quota = max(_MIN_CPU_QUOTA_US, round(cpus * _CPU_PERIOD_US))
    name = _prefix(os.getpid()) + secrets.token_hex(6)
    made: list[str] = []
    try:
        for parent in parents():
            group = parent / name
            group.mkdir()
            made.append(str(group))
            limits = {
                "memory.max": memory_bytes,
                "memory.swap.max": 0,
                "memory.limit_in_bytes": memory_bytes,
                "memory.memsw.limit_in_bytes": memory_bytes,
                "pids.max": processes,
                "cpu.max": f"{quota} {_CPU_PERIOD_US}",
                "cpu.cfs_period_us": _CPU_PERIOD_US,
                "cpu.cfs_quota_us": quota,
            }
            for key, value in limits.items():
                if (group / key).exists():
                    (group / key).write_text(str(value))
    except OSError:
        remove(made)
        raise
    return made


def remove(groups: list[str]) -> None:
    """Kill whatever is left in ``groups`` and remove them (a group can go only once it holds no process)."""
    deadline = time.monotonic() + _REMOVE_TIMEOUT_S
    for group in groups:
        while True:
            for pid in Path(group, "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    continue
            try:
                os.rmdir(group)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    message = f"sandbox cgroup {group} still holds processes after {_REMOVE_TIMEOUT_S:g} s"
                    raise OSError(message) from exc
                time.sleep(0.01)


def remove_left_by(pid: int) -> None:
    """Remove the groups of runs that process ``pid`` started and never removed (it was killed mid-run)."""
    remove([str(p) for parent in parents() for p in parent.glob(_prefix(pid) + "*")])
