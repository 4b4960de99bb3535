"""Inside the sandbox: build the program's view of the files, then run the program under a supervisor.

Run as ``python -I -S boot.py CONFIG_FILE`` by ``verity.rewards.sandbox.core`` (the config is a ``marshal``
dump). It imports nothing from Verity and only built-in modules on the common path, because each import adds to
the fixed cost of every run.

This process is the supervisor. It forks once: the child joins the run's cgroups (if any), applies the limits,
installs a seccomp filter (the keyring calls, and without namespaces System V IPC and POSIX message queues, fail
with EPERM; ctypes is imported for it only then), drops to the run's uid and runs the program; the supervisor
keeps its privileges (so the program cannot signal it) and waits until the child exits, the wall limit passes,
or the watch pipe reaches end of file. The worker that started the run holds the pipe's only write end, so
however that worker dies, the supervisor ends the run: in a pid namespace it is pid 1 and the kernel kills every
process of the namespace when it exits; without one it first kills every process of the run's uid.

In a mount namespace the supervisor builds the view from nothing (an allow-list): a read-only tmpfs root holding
only the interpreter's executable, its standard library (site-packages covered by an empty directory) and the
shared libraries they load, bound read-only at their host paths; /dev/null, /dev/zero, /dev/random and
/dev/urandom; a fresh /proc; and fresh size-limited tmpfs mounts at /tmp, /dev/shm and /scratch (the working
directory, holding a copy of solution.py). It then pivots into that root and detaches the host's tree, so
datasets, run directories, caches and homes do not exist for the program, and nothing it writes reaches the host
or outlives the namespace.
"""

import _signal as signal  # the C module: `signal` imports enum, milliseconds on every run
import builtins
import marshal
import os
import resource
import select
import sys

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_BIND, _MS_REC = 1, 2, 4, 8, 32, 4096, 16384
_MNT_DETACH = 2
SCRATCH = "/scratch"
_DEVICES = ("null", "zero", "random", "urandom")
_MAX_LINKS = 40  # symlinks followed while resolving one path, like the kernel's limit
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_RET_KILL_PROCESS, _RET_ERRNO_EPERM, _RET_ALLOW = 0x80000000, 0x00050000 | 1, 0x7FFF0000
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06  # classic BPF opcodes
_X32_SYSCALL_BIT = 0x40000000


class _Mounts:
    """The mount system calls, through libc (ctypes is imported only here: it costs milliseconds)."""

    def __init__(self) -> None:
        import ctypes

        self._ctypes = ctypes
        self._libc = ctypes.CDLL(None, use_errno=True)

    def _check(self, ret: int, what: str) -> None:
        if ret != 0:
            raise OSError(self._ctypes.get_errno(), f"sandbox_boot: {what} failed")

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
        ret = self._libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode())
        self._check(ret, f"mount {fstype or source} on {target}")

    def pivot_into(self, root: str, syscall_nr: int) -> None:
        """Make ``root`` the root directory and detach the old tree (the ``pivot_root(".", ".")`` idiom)."""
        os.chdir(root)
        self._check(self._libc.syscall(syscall_nr, b".", b"."), "pivot_root")
        self._check(self._libc.umount2(b".", _MNT_DETACH), "detaching the host's root")
        os.chdir("/")


def _replicate_links(root: str, path: str) -> str:
    """Recreate under ``root`` every symlink met while resolving ``path`` on the host; return the real path."""
    real, parts, links = "/", [p for p in path.split("/") if p], 0
    while parts:
        name = parts.pop(0)
        host = os.path.join(real, name)
        if name == "..":
            real = os.path.dirname(real)
        elif os.path.islink(host):
            links += 1
            if links > _MAX_LINKS:
                raise OSError(f"sandbox_boot: too many symlinks resolving {path}")
            target = os.readlink(host)
            if not os.path.lexists(root + host):
                os.makedirs(root + real, exist_ok=True)
                os.symlink(target, root + host)
            parts = [p for p in target.split("/") if p] + parts
            real = "/" if target.startswith("/") else real
        elif name != ".":
            real = host
    return real


def _bind(m: _Mounts, root: str, path: str, flags: int) -> None:
    """Bind host ``path`` at the same path under ``root``, remounted with ``flags`` (e.g. read-only)."""
    real = _replicate_links(root, path)
    target = root + real
    if os.path.isdir(real):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    m.mount(real, target, "", _MS_BIND | _MS_REC)
    m.mount("", target, "", _MS_REMOUNT | _MS_BIND | _MS_NOSUID | flags)


def _build_view(cfg: dict) -> None:
    # Mounting is only safe in a private mount namespace; being pid 1 proves we are inside the fresh namespaces
    # `unshare` made, so a mistaken direct run can never touch the host's mounts.
    if os.getpid() != 1:
        raise SystemExit("sandbox_boot: refusing to mount outside the sandbox's own namespaces")
    m = _Mounts()
    root = cfg["root"]
    m.mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    # The private writable places first: the interpreter, its environment or the checkout may live under one of
    # them (/tmp, /dev/shm), and binding it creates its directories, which a later mount would hide.
    owner = f"uid={cfg['uid']},gid={cfg['uid']}"
    os.makedirs(root + SCRATCH)
    m.mount("tmpfs", root + SCRATCH, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={cfg['fsize']},mode=0700,{owner}")
    for path in ("/tmp", "/dev/shm"):
        os.makedirs(root + path)
        m.mount("tmpfs", root + path, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={cfg['fsize']},mode=1777")
    for path in cfg["expose"]:
        _bind(m, root, path, _MS_RDONLY | _MS_NODEV)
    for path in cfg["links"]:
        _replicate_links(root, path)
    for path in cfg["cover"]:
        m.mount("tmpfs", root + path, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV, "size=4k,mode=0755")
    for name in _DEVICES:
        _bind(m, root, f"/dev/{name}", 0)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "fd/0"), ("stdout", "fd/1"), ("stderr", "fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    with (
        open(os.path.join(cfg["workdir"], "solution.py"), "rb") as src,
        open(root + SCRATCH + "/solution.py", "wb") as dst,
    ):
        dst.write(src.read())
    os.chown(root + SCRATCH + "/solution.py", cfg["uid"], cfg["uid"])
    os.makedirs(root + "/proc")
    m.mount("proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    m.mount("", root, "", _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    m.pivot_into(root, cfg["pivot_root_nr"])


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


def _deny_syscalls(arch: int, denied: list[int], x32: bool) -> None:
    """Install a seccomp filter: the ``denied`` system calls fail with EPERM (as container runtimes' default
    profiles have it for the keyring calls), a call from another ABI than ``arch`` kills the process (it would
    reach the same kernel objects under other numbers), and so does, with ``x32``, an x32-ABI call."""
    import ctypes

    program = [(_LD_W_ABS, 0, 0, 4), (_JEQ_K, 1, 0, arch), (_RET_K, 0, 0, _RET_KILL_PROCESS), (_LD_W_ABS, 0, 0, 0)]
    if x32:  # jumps over the checks below, ALLOW and EPERM, to the last KILL
        program.append((_JGE_K, len(denied) + 2, 0, _X32_SYSCALL_BIT))
    program += [(_JEQ_K, len(denied) - i, 0, nr) for i, nr in enumerate(denied)]  # each jumps to EPERM
    program += [(_RET_K, 0, 0, _RET_ALLOW), (_RET_K, 0, 0, _RET_ERRNO_EPERM), (_RET_K, 0, 0, _RET_KILL_PROCESS)]

    class Instruction(ctypes.Structure):
        _fields_ = [
            ("code", ctypes.c_uint16),
            ("jt", ctypes.c_uint8),
            ("jf", ctypes.c_uint8),
            ("k", ctypes.c_uint32),
        ]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Instruction))]

    filters = (Instruction * len(program))(*(Instruction(*i) for i in program))
    libc = ctypes.CDLL(None, use_errno=True)
    fprog = Program(len(program), filters)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.prctl(
        _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0
    ):
        raise OSError(ctypes.get_errno(), "sandbox_boot: installing the seccomp filter failed")


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


def _run_program(cfg: dict, cgroup_fds: list[int]) -> None:
    os.close(cfg["watch_fd"])
    for fd in cgroup_fds:  # join the run's cgroups ("0": the writing process), opened before the pivot
        os.write(fd, b"0")
        os.close(fd)
    _limit(cfg)
    if cfg["seccomp"] is not None:  # before the uid changes: ctypes may sit where the run's uid cannot read
        _deny_syscalls(*cfg["seccomp"])
    _drop_privileges(cfg["uid"])
    os.environ["HOME"] = os.getcwd()
    with open("solution.py") as f:
        source = f.read()
    if cfg["calls"] is None:
        sys.argv = ["solution.py"]
        exec(compile(source, "solution.py", "exec"), {"__name__": "__main__", "__builtins__": builtins})
    else:
        _run_calls(source, cfg["calls"], cfg["results_fd"])


def _kill_run(cfg: dict) -> None:
    """Kill what the program started where no pid namespace does it: every process of the run's private uid, or
    (without one) the process group, this supervisor included."""
    if cfg["uid"] is None:
        os.killpg(0, signal.SIGKILL)
    pid = os.fork()
    if pid == 0:
        try:
            _drop_privileges(cfg["uid"])
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _supervise(cfg: dict, child: int) -> None:
    """Wait for the program, the wall limit or the worker's death; then end the run with the program's status."""
    pidfd = os.pidfd_open(child)
    ready, _, _ = select.select([pidfd, cfg["watch_fd"]], [], [], cfg["wall"])
    if pidfd in ready:
        _, status = os.waitpid(child, 0)
    else:  # the worker died or the wall limit passed: nobody will read a result
        os.kill(child, signal.SIGKILL)
        status = signal.SIGKILL
    if not cfg["mount_ns"] and (cfg["uid"] is not None or pidfd not in ready):
        _kill_run(cfg)
    if os.WIFSIGNALED(status):
        if os.WTERMSIG(status) != signal.SIGKILL:  # whose action cannot be set, and is the default
            signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))  # outside a pid namespace the caller sees the signal itself
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        cfg = marshal.load(f)
    cgroup_fds = [os.open(os.path.join(group, "cgroup.procs"), os.O_WRONLY) for group in cfg["cgroups"]]
    if cfg["mount_ns"]:
        _build_view(cfg)
        os.chdir(SCRATCH)
    else:
        os.chdir(cfg["workdir"])
    child = os.fork()
    if child == 0:
        _run_program(cfg, cgroup_fds)
    else:
        for fd in cgroup_fds:
            os.close(fd)
        _supervise(cfg, child)


main()
