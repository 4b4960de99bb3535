"""A control group per sandbox run, where the machine lets Verity make one.

rlimits bound each process on its own: a run of 32 processes of 512 MB each could hold 16 GB. A cgroup bounds the
run as a whole: ``memory`` for every process together (the kernel's OOM killer acts inside the group alone) and
``pids`` for how many exist at once. Both cgroup v2 (when the caller's own group delegates the two controllers to
its children) and v1 (separate ``memory`` and ``pids`` hierarchies, as many containers mount them) are used; the
program's process joins the group before it drops its privileges, so everything it starts is inside.
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
    """The directories to make a run's groups in: one for v2, a memory and a pids one for v1; () when none."""
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
    return v1 if all(_usable(p) for p in v1) else ()


def _prefix(pid: int) -> str:
    return f"verity-sandbox-{pid}-"


def create(memory_bytes: int, processes: int) -> list[str]:
    """Make the run's groups, limited to ``memory_bytes`` and ``processes`` in all; their directories. Their name
    carries this process's pid, so whoever kills this process can remove them (``remove_left_by``)."""
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
