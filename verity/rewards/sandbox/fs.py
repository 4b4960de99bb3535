"""The files side of the sandbox: what the program's view holds, and removing what a run left behind."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

_LDD_TIMEOUT_S = 30.0
# The system's library directories hold shared libraries only: exposing one whole costs one mount, where a mount
# per library costs tens of milliseconds a run. Libraries anywhere else (e.g. inside a Python install, next to
# its site-packages) are exposed one file at a time.
_SYSTEM_LIBRARY_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64")
# Loaded with dlopen by glibc itself (thread cancellation), so no ELF file names it as needed.
_DLOPENED_BY_LIBC = ("libgcc_s.so.1",)


def _shared_libraries(binaries: list[str]) -> set[str]:
    """The shared libraries ``binaries`` load, as ``ldd`` resolves them, the dynamic loader included."""
    out = subprocess.run(["ldd", *binaries], capture_output=True, text=True, timeout=_LDD_TIMEOUT_S).stdout
    libraries = set()
    for line in out.splitlines():
        words = line.split()
        path = words[2] if len(words) > 2 and words[1] == "=>" else words[0] if words else ""
        if path.startswith("/") and not path.endswith(":"):  # "FILE:" heads each binary's list
            libraries.add(path)
    for directory in {os.path.dirname(os.path.realpath(lib)) for lib in libraries}:
        libraries.update(p for name in _DLOPENED_BY_LIBC if os.path.exists(p := os.path.join(directory, name)))
    return libraries


@functools.cache
def interpreter_view() -> tuple[list[str], list[str], list[str]]:
    """``(expose, links, cover)``. ``expose``: the host paths to bind for ``python -I -S`` (its executable, its
    standard library, the shared libraries of both or their system directory, the loader's cache), none inside
    another; ``links``: every path the interpreter and loader will open, whose symlinks the view recreates;
    ``cover``: the site-packages directories inside the standard library, which the view covers with an empty
    directory (``-S`` never imports from them)."""
    stdlib = {os.path.realpath(sysconfig.get_path(k)) for k in ("stdlib", "platstdlib")}
    dynload = [str(p) for d in stdlib for p in Path(d, "lib-dynload").glob("*.so")]
    executable = os.path.realpath(sys.executable)
    paths = {sys.executable, *stdlib}
    for lib in _shared_libraries([executable, *dynload]):
        directory = os.path.dirname(os.path.realpath(lib))
        system = any(directory == d or directory.startswith(d + "/") for d in _SYSTEM_LIBRARY_DIRS)
        paths.update((lib, directory) if system else (lib,))
    if os.path.exists("/etc/ld.so.cache"):
        paths.add("/etc/ld.so.cache")
    dirs = {os.path.realpath(p) for p in paths if os.path.isdir(p)}
    expose = sorted(p for p in paths if not any(os.path.realpath(p).startswith(d + "/") for d in dirs))
    site = {os.path.realpath(sysconfig.get_path(k)) for k in ("purelib", "platlib")}
    cover = sorted(p for p in site if os.path.isdir(p) and any(p.startswith(d + "/") for d in stdlib))
    return expose, sorted(paths), cover


def remove_tree(path: Path) -> None:
    """Delete ``path`` and everything under it, however deep and whatever the permissions a program set.

    No recursion and no long paths: a directory's subdirectories are moved up to ``path`` itself (renamed, so
    each is moved once) and emptied in turn, so two descriptors are open at a time and a 3,000-deep tree costs
    what 3,000 siblings cost. Each directory is made searchable by its owner before it is opened.
    """
    top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        pending = [(e.name, e.is_dir(follow_symlinks=False)) for e in os.scandir(top)]
        moved = 0
        while pending:
            name, is_dir = pending.pop()
            if not is_dir:
                os.unlink(name, dir_fd=top)
                continue
            os.chmod(name, 0o700, dir_fd=top)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
            try:
                for entry in list(os.scandir(fd)):
                    if entry.is_dir(follow_symlinks=False):
                        moved += 1
                        os.chmod(entry.name, 0o700, dir_fd=fd)
                        os.rename(entry.name, f".moved-{moved}", src_dir_fd=fd, dst_dir_fd=top)
                        pending.append((f".moved-{moved}", True))
                    else:
                        os.unlink(entry.name, dir_fd=fd)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=top)
    finally:
        os.close(top)
    os.rmdir(path)
