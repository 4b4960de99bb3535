"""What a run's uid can leave in the host's shared places when the run has no namespaces of its own: System V IPC
objects, POSIX message queues and files in the world-writable directories. Removed after every such run, so
nothing the program wrote there holds memory after the call or is there for the next call to read."""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
from pathlib import Path

from verity.rewards.sandbox.fs import remove_tree

# The world-writable places of a usual Linux host (tmpfs or disk); a program can write only where others may.
SHARED_PLACES = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue", "/run/lock")
_IPC_RMID = 0
_SYSV = {"shm": "shmctl", "msg": "msgctl", "sem": "semctl"}  # /proc/sysvipc/NAME -> the call that removes one


def sysv_objects_of(uid: int) -> list[tuple[str, int]]:
    """``(kind, id)`` of every System V IPC object ``uid`` owns or created, from /proc/sysvipc."""
    found = []
    for kind in _SYSV:
        with contextlib.suppress(OSError):
            header, *rows = Path("/proc/sysvipc", kind).read_text().splitlines()
            names = header.split()
            for row in rows:
                fields = dict(zip(names, row.split(), strict=False))
                if str(uid) in (fields.get("uid"), fields.get("cuid")):
                    found.append((kind, int(fields[{"shm": "shmid", "msg": "msqid", "sem": "semid"}[kind]])))
    return found


def _remove_sysv(kind: str, ident: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if kind == "sem":
        libc.semctl(ident, 0, _IPC_RMID)
    else:
        getattr(libc, _SYSV[kind])(ident, _IPC_RMID, None)


def _remove_files_of(uid: int, top: str) -> None:
    """Remove every entry ``uid`` owns under ``top``, looking only into directories others may write to (the only
    ones where ``uid`` could have made an entry without owning the directory)."""
    pending = [top]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if info.st_uid == uid:
                    if stat.S_ISDIR(info.st_mode):
                        remove_tree(Path(entry.path))
                    else:
                        os.unlink(entry.path)
                elif stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_IWOTH:
                    pending.append(entry.path)


def remove_left_by_uid(uid: int) -> None:
    """Remove the IPC objects and shared-place files of a run's private uid (its processes are all dead)."""
    for kind, ident in sysv_objects_of(uid):
        _remove_sysv(kind, ident)
    for place in SHARED_PLACES:
        if os.path.isdir(place):
            _remove_files_of(uid, place)
