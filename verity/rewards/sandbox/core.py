"""Run untrusted Python in a separate, limited process; nothing it starts outlives the call.

Every run gets a fresh temporary directory (removed afterwards), a minimal environment, resource limits
(``setrlimit``: CPU time, address space, processes, file size, open files, no core dumps), its own session so the
whole process group is killed on timeout, a supervisor that ends the run when the calling process dies (see
``verity.rewards.sandbox.boot``), and stdout/stderr captured to files read back up to a limit. Where the machine
allows it, it also gets Linux namespaces via ``unshare`` (no network, a private process tree that dies with its
supervisor, a file view holding only the interpreter and the scratch directory) and, when Verity runs as root, a
throw-away uid. A seccomp filter denies the kernel keyring calls (keys outlive every process of a uid and are
not separated but by user namespace), and without namespaces also System V IPC and POSIX message queues; without
namespaces what a private uid left in the host's shared places is removed after the call
(``verity.rewards.sandbox.leftovers``). Where the cgroup's cpu controller is available, the whole run may use
``cpu_s / wall_s`` CPUs, so all its processes together get at most about ``cpu_s`` CPU-seconds.
``isolation()`` reports which protections hold; docs/security.md has the threat model.
"""

from __future__ import annotations

import contextlib
import functools
import marshal
import os
import platform
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import verity.rewards.sandbox.cgroup as sandbox_cgroup
from verity.rewards.sandbox.fs import interpreter_view, remove_tree
from verity.rewards.sandbox.leftovers import remove_left_by_uid

_BOOT = str(Path(__file__).with_name("boot.py"))
_NAMESPACES = ["--net", "--pid", "--fork", "--kill-child", "--mount", "--ipc", "--uts"]  # boot mounts /proc
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41}  # the kernel's syscall numbers, per machine
# Per machine: its audit arch, then the numbers of add_key, request_key and keyctl, then those of the System V
# IPC calls (msg*, sem*, shm*) and POSIX message queues (mq_*), denied too where no IPC namespace holds them.
_GENERIC = ([217, 218, 219], [*range(180, 198)])  # the asm-generic table: mq_open .. shmdt
_SYSCALLS = {
    "x86_64": (0xC000003E, [248, 249, 250], [29, 30, 31, 64, 65, 66, 67, 68, 69, 70, 71, 220, *range(240, 246)]),
    "aarch64": (0xC00000B7, *_GENERIC),
    "riscv64": (0xC00000F3, *_GENERIC),
}
_UID_RANGE = (3_000_000, 4_000_000)  # uids no account uses, one drawn per run
_KILL_WAIT_S = 10.0  # for killed processes to be reaped: instant unless the kernel is stuck
_SUPERVISOR_SLACK_S = 1.0  # the supervisor's own wall limit trails the caller's, which normally acts first
_deadline: ContextVar[float | None] = ContextVar("verity_sandbox_deadline", default=None)


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run. ``cpu_s`` bounds each process (rlimit) and, where the run's cgroup has the cpu
    controller, all of them together: the run gets ``cpu_s / wall_s`` CPUs for at most ``wall_s`` seconds."""

    wall_s: float = 5.0
    cpu_s: int = 5
    memory_mb: int = 512
    processes: int = 32
    file_size_mb: int = 16
    open_files: int = 64
    output_bytes: int = 1 << 16


@dataclass(frozen=True)
class SandboxResult:
    """What a run produced. ``returncode`` is negative when a signal ended the program (128 + the signal in a
    pid namespace, whose init cannot end itself by a signal)."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass(frozen=True)
class Isolation:
    """Which protections beyond rlimits and process groups this machine gives the sandbox."""

    namespaces: bool  # network, pid and mount namespaces via unshare
    private_uid: bool  # a throw-away uid (needs root): host files readable by others only, own process budget
    parent_death: bool  # setpriv: --no-new-privs, and --pdeathsig for unshare
    cgroup: bool  # a cgroup per run bounds the memory and processes of the whole run, not only of each process
    cpu_bound: bool  # the run's cgroup also bounds the CPUs all its processes use together
    seccomp: bool  # a seccomp filter denies the keyring calls (and, without namespaces, SysV IPC and mqueues)


def _probe(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.cache
def isolation() -> Isolation:
    """Probe (once per process) which isolation tools work here; VERITY_SANDBOX_NAMESPACES=0 turns them off."""
    namespaces = (
        os.environ.get("VERITY_SANDBOX_NAMESPACES", "1") != "0"
        and os.geteuid() == 0
        and platform.machine() in _SYS_PIVOT_ROOT
        and shutil.which("unshare") is not None
        and shutil.which("ldd") is not None  # lists the libraries the file view must hold
        and _probe(["unshare", *_NAMESPACES, "true"])
    )
    setpriv = shutil.which("setpriv") is not None
    cgroup = bool(sandbox_cgroup.parents())
    seccomp = platform.machine() in _SYSCALLS and "Seccomp:" in Path("/proc/self/status").read_text()
    return Isolation(
        namespaces, os.geteuid() == 0, setpriv, cgroup, cgroup and sandbox_cgroup.bounds_cpu(), seccomp
    )


def _seccomp(iso: Isolation) -> tuple[int, list[int], bool] | None:
    """The boot script's filter: the keyring calls always; SysV IPC and mqueues unless an IPC namespace holds
    them."""
    if not iso.seccomp:
        return None
    arch, keyring, ipc = _SYSCALLS[platform.machine()]
    return arch, keyring if iso.namespaces else keyring + ipc, platform.machine() == "x86_64"


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Inside this block every run ends within ``seconds`` from now, whatever its own wall limit: the reward pool
    wraps each task in one, so a sandbox never outlives the time the pool gives the task."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _wall_limit(limits: SandboxLimits) -> float:
    end = _deadline.get()
    return limits.wall_s if end is None else min(limits.wall_s, end - time.monotonic())


def _command(cfg_path: str, iso: Isolation) -> list[str]:
    """With namespaces, ``unshare`` also dies with the caller (``--pdeathsig``) and takes the pid namespace's
    init along (``--kill-child``). Without them the supervisor must outlive the caller long enough to kill the
    run's processes, so it gets no parent-death signal; the watch pipe tells it instead."""
    python = [sys.executable, "-I", "-S", _BOOT, cfg_path]
    setpriv = ["setpriv", "--no-new-privs"] if iso.parent_death else []
    if not iso.namespaces:
        return [*setpriv, *python]
    return [*setpriv, *(["--pdeathsig", "KILL"] if setpriv else []), "unshare", *_NAMESPACES, *python]


def _scratch_prefix(pid: int) -> str:
    return f"verity-sandbox-{pid}-"


def clean_up_after(pid: int) -> None:
    """Remove what the runs of process ``pid`` left when it was killed mid-run: their scratch directories (the
    hidden stdin among them) and cgroups. Their processes died with it (see ``verity.rewards.sandbox.boot``)."""
    sandbox_cgroup.remove_left_by(pid)
    for base in Path(tempfile.gettempdir()).glob(_scratch_prefix(pid) + "*"):
        remove_tree(base)


def _read_capped(path: Path, limit: int) -> tuple[str, bool]:
    with path.open("rb") as f:
        data = f.read(limit + 1)
    return data[:limit].decode("utf-8", "replace"), len(data) > limit


def _wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for ``proc`` to exit; False on timeout. ``Popen.wait(timeout)`` polls with sleeps growing to 50 ms,
    which would dominate a short run, so wait on a pidfd when the kernel has them."""
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def _kill_everything(proc: subprocess.Popen, uid: int | None, iso: Isolation) -> None:
    """Kill the run's process group; without a pid namespace also every process of its private uid, which
    catches children that left the group (setsid) to outlive the call."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if uid is not None and not iso.namespaces:
        kill_all = ["kill", "-9", "-1"]
        subprocess.run(kill_all, user=uid, group=uid, extra_groups=[], check=False, timeout=_KILL_WAIT_S)
    proc.wait(timeout=_KILL_WAIT_S)


def run_python(
    source: str,
    stdin: str = "",
    limits: SandboxLimits | None = None,
    calls: list[str] | None = None,
) -> tuple[SandboxResult, list[tuple[bool, str]]]:
    """Run ``source`` as ``solution.py`` in the sandbox, feeding ``stdin``.

    With ``calls`` (Python expressions), the program is defined as a module and each call gives a record
    ``(True, repr(value))`` or ``(False, exception name)``, in order; the program never sees what the caller
    expects. Inside a ``deadline`` block the wall limit is cut to what is left of it; with nothing left the
    program does not start and the result is a timeout.
    """
    limits = limits or SandboxLimits()
    wall = _wall_limit(limits)
    if wall <= 0:
        return SandboxResult(None, "", "", True, False, 0.0), []
    iso = isolation()
    uid = _UID_RANGE[0] + secrets.randbelow(_UID_RANGE[1] - _UID_RANGE[0]) if iso.private_uid else None
    base = Path(tempfile.mkdtemp(prefix=_scratch_prefix(os.getpid())))  # 0700: the io files live beside workdir
    try:
        workdir = base / "work"
        workdir.mkdir()
        (workdir / "solution.py").write_text(source)
        if uid is not None:
            os.chown(workdir, uid, uid)
            os.chown(workdir / "solution.py", uid, uid)
        (base / "stdin").write_text(stdin)
        (base / "root").mkdir()
        cpus = limits.cpu_s / wall  # so the whole run gets about cpu_s CPU-seconds before the wall limit
        groups = sandbox_cgroup.create(limits.memory_mb << 20, limits.processes, cpus) if iso.cgroup else []
        try:
            limits = SandboxLimits(**{**vars(limits), "wall_s": wall})
            return _execute(base, workdir, limits, iso, uid, calls, groups)
        finally:
            sandbox_cgroup.remove(groups)
    finally:
        remove_tree(base)


def _execute(
    base: Path,
    workdir: Path,
    limits: SandboxLimits,
    iso: Isolation,
    uid: int | None,
    calls: list[str] | None,
    groups: list[str],
) -> tuple[SandboxResult, list[tuple[bool, str]]]:
    nproc = limits.processes + (0 if uid is not None else _processes_of(os.getuid()))
    with (
        (base / "stdin").open("rb") as stdin_f,
        (base / "stdout").open("wb") as out_f,
        (base / "stderr").open("wb") as err_f,
        (base / "results").open("wb") as res_f,
    ):
        watch_fd, keep_alive_fd = os.pipe()  # the supervisor's end of file on watch_fd: this process died
        expose, links, cover = interpreter_view() if iso.namespaces else ([], [], [])
        cfg = {
            "workdir": str(workdir),
            "mount_ns": iso.namespaces,
            "root": str(base / "root"),
            "expose": expose,
            "links": links,
            "cover": cover,
            "pivot_root_nr": _SYS_PIVOT_ROOT.get(platform.machine()),
            "watch_fd": watch_fd,
            "cgroups": groups,
            "wall": limits.wall_s + _SUPERVISOR_SLACK_S,
            "uid": uid,
            "memory": limits.memory_mb << 20,
            "cpu": limits.cpu_s,
            "fsize": limits.file_size_mb << 20,
            "nofile": limits.open_files,
            "nproc": nproc,
            "calls": calls,
            "results_fd": res_f.fileno(),
            "seccomp": _seccomp(iso),
        }
        (base / "config").write_bytes(marshal.dumps(cfg))
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        start = time.perf_counter()
        try:
            try:
                proc = subprocess.Popen(
                    _command(str(base / "config"), iso),
                    stdin=stdin_f,
                    stdout=out_f,
                    stderr=err_f,
                    env=env,
                    cwd=workdir,
                    start_new_session=True,
                    pass_fds=(res_f.fileno(), watch_fd),
                )
            finally:
                os.close(watch_fd)
            timed_out = not _wait_exit(proc, limits.wall_s)
            _kill_everything(proc, uid, iso)
            if uid is not None and not iso.namespaces:
                remove_left_by_uid(uid)
        finally:
            os.close(keep_alive_fd)
        wall = time.perf_counter() - start
    stdout, cut_out = _read_capped(base / "stdout", limits.output_bytes)
    stderr, cut_err = _read_capped(base / "stderr", limits.output_bytes)
    result = SandboxResult(proc.returncode, stdout, stderr, timed_out, cut_out or cut_err, wall)
    return result, _read_records(base / "results", limits.output_bytes)


def _read_records(path: Path, limit: int) -> list[tuple[bool, str]]:
    """The ``(ok, text)`` records of a function-call run, up to the first malformed one (the program may have
    scribbled on the file) or ``limit`` bytes."""
    records: list[tuple[bool, str]] = []
    with path.open("rb") as f:
        while f.tell() < limit:
            try:
                record = marshal.load(f)
            except (EOFError, ValueError, TypeError):
                break
            if not (isinstance(record, tuple) and len(record) == 2 and isinstance(record[1], str)):
                break
            records.append((bool(record[0]), record[1]))
    return records


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                continue
    return count
