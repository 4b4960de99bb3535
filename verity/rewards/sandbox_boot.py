"""Inside the sandbox: hide the host's files, apply limits, drop privileges, then run the untrusted program.

Run as ``python -I -S sandbox_boot.py CONFIG_FILE`` by ``verity.rewards.sandbox`` (the config is a ``marshal``
dump). It imports nothing from Verity (the project directory may be hidden by the time the program runs) and only
built-in modules on the common path, because each import adds to the fixed cost of every run.

In a mount namespace it masks the configured paths with empty read-only tmpfs mounts, keeping the interpreter's
own directory reachable, and gives the program fresh size-limited /tmp, /var/tmp and /dev/shm. The working
directory is entered before masking, so it stays reachable even when it lies under a masked path.
"""

import builtins
import marshal
import os
import resource
import sys

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC = 1, 2, 4, 4096, 16384


def _mount(source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
    import ctypes  # only in a mount namespace: ctypes costs milliseconds to import

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
        raise OSError(ctypes.get_errno(), f"mount {fstype or 'bind'} on {target}")


def _mask(path: str, keep: list[str]) -> None:
    """Cover ``path`` with an empty tmpfs; if a kept path lies below it, bind that branch back in."""
    if os.path.islink(path) or not os.path.isdir(path):
        return
    inside = [k for k in keep if k == path or k.startswith(path.rstrip("/") + "/")]
    if any(k == path for k in inside):
        return
    branches = {k[len(path.rstrip("/")) + 1 :].split("/")[0] for k in inside}
    fds = {name: os.open(os.path.join(path, name), os.O_RDONLY | os.O_DIRECTORY) for name in branches}
    _mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=64k,mode=0755")
    for name, fd in fds.items():
        os.mkdir(os.path.join(path, name))
        _mount(f"/proc/self/fd/{fd}", os.path.join(path, name), "", _MS_BIND | _MS_REC)
        os.close(fd)
    _mount("", path, "", _MS_BIND | 32 | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)  # 32 = MS_REMOUNT


def _isolate_files(cfg: dict) -> None:
    # Masking mounts are only safe in a private mount namespace; being pid 1 proves we are inside the fresh
    # namespaces `unshare` made, so a mistaken direct run can never mask the host's files.
    if os.getpid() != 1:
        raise SystemExit("sandbox_boot: refusing to mount outside the sandbox's own namespaces")
    keep = [os.path.realpath(p) for p in cfg["keep"]]
    for path in cfg["hide"]:
        _mask(os.path.realpath(path), keep)
    for scratch in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(scratch):
            _mount("tmpfs", scratch, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={cfg['fsize']},mode=1777")


def _limit(cfg: dict) -> None:
    for name, value in (
        ("RLIMIT_AS", cfg["memory"]),
        ("RLIMIT_CPU", cfg["cpu"]),
        ("RLIMIT_FSIZE", cfg["fsize"]),
        ("RLIMIT_NOFILE", cfg["nofile"]),
        ("RLIMIT_CORE", 0),
        ("RLIMIT_NPROC", cfg["nproc"]),
    ):
        hard = value + 1 if name == "RLIMIT_CPU" else value  # SIGXCPU at the soft limit, SIGKILL one second later
        resource.setrlimit(getattr(resource, name), (value, hard))


def _drop_privileges(uid: int | None) -> None:
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def _run_calls(source: str, calls: list[str], results_fd: int) -> None:
    """Function-call tests: define the solution, then record each call's ``repr`` (or the exception's name) as a
    marshal record ``(ok, text)``, flushed one by one so a later hang keeps the earlier results."""
    out = os.fdopen(results_fd, "wb", buffering=0)
    namespace = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        exec(compile(source, "solution.py", "exec"), namespace)
    except BaseException as exc:
        out.write(marshal.dumps((False, type(exc).__name__)))
        return
    for call in calls:
        try:
            record = (True, repr(eval(call, namespace)))
        except BaseException as exc:
            record = (False, type(exc).__name__)
        out.write(marshal.dumps(record))


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        cfg = marshal.load(f)
    os.chdir(cfg["workdir"])
    if cfg["mount_ns"]:
        _isolate_files(cfg)
    _limit(cfg)
    _drop_privileges(cfg["uid"])
    os.environ["HOME"] = os.getcwd()
    with open("solution.py") as f:
        source = f.read()
    if cfg["calls"] is None:
        sys.argv = ["solution.py"]
        exec(compile(source, "solution.py", "exec"), {"__name__": "__main__", "__builtins__": builtins})
    else:
        _run_calls(source, cfg["calls"], cfg["results_fd"])


main()
