"""Kernel objects and shared places a call could leave for the next call, and the CPU a whole call may use."""

import ctypes
import dataclasses
import os
import secrets
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from verity.rewards.sandbox import core as sandbox
from verity.rewards.sandbox.core import SandboxLimits, isolation, run_python
from verity.rewards.sandbox.leftovers import remove_left_by_uid, sysv_objects_of

pytestmark = pytest.mark.security
ISO = isolation()


@pytest.fixture(params=[True, False], ids=["namespaces", "no-namespaces"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[bool]:
    """Every test runs with the machine's namespaces and without any (as where unshare is not allowed)."""
    if request.param and not ISO.namespaces:
        pytest.skip("needs Linux namespaces (unshare as root)")
    monkeypatch.setattr(sandbox, "isolation", lambda: dataclasses.replace(ISO, namespaces=request.param))
    yield request.param


def run(program: str, **limits: float) -> str:
    result, _ = run_python(textwrap.dedent(program), limits=SandboxLimits(**{"wall_s": 10, "cpu_s": 10, **limits}))
    assert result.returncode == 0, result.stderr[-800:]
    return result.stdout


@pytest.mark.skipif(not ISO.private_uid, reason="a uid per call needs root")
def test_a_keyring_key_planted_by_one_call_is_not_found_by_the_next(mode: bool) -> None:
    secret = f"verity-key-{secrets.token_hex(6)}"
    planter = f"""
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    nr = {{"x86_64": 248, "aarch64": 217, "riscv64": 217}}[os.uname().machine]
    for keyring in (-4, -3, -5, -2):  # the user, session, user-session and process keyrings
        key = libc.syscall(nr, b"user", {secret.encode()!r}, b"the-answer", 10, keyring)
        if key > 0:
            libc.syscall(nr + 2, 5, key, 0x3F3F3F3F)  # keyctl(SETPERM): everyone may view and read it
    print("planted" if key > 0 else "refused")
    """
    assert run(planter) == "refused\n"
    reader = f"print({secret!r} in open('/proc/keys').read())"
    assert run(reader) == "False\n"
    assert secret not in Path("/proc/keys").read_text()


@pytest.mark.skipif(not ISO.private_uid, reason="a uid per call needs root")
def test_ipc_objects_planted_by_one_call_are_not_found_by_the_next(mode: bool) -> None:
    key = 0x5EC0000 + secrets.randbelow(1 << 16)
    queue = f"/verity-{secrets.token_hex(4)}"
    planter = f"""
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mq_open.restype = ctypes.c_int
    made = [libc.shmget({key}, 4096, 0o1666) >= 0, libc.msgget({key}, 0o1666) >= 0]
    made += [libc.semget({key}, 1, 0o1666) >= 0]
    made += [libc.mq_open({queue.encode()!r}, os.O_CREAT | os.O_RDWR, 0o666, None) >= 0]
    print(made)
    """
    run(planter)
    reader = f"""
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    found = [libc.shmget({key}, 0, 0) >= 0, libc.msgget({key}, 0) >= 0, libc.semget({key}, 0, 0) >= 0]
    print(found + [libc.mq_open({queue.encode()!r}, os.O_RDONLY) >= 0])
    """
    assert run(reader) == "[False, False, False, False]\n"
    tables = [Path(f"/proc/sysvipc/{kind}").read_text() for kind in ("shm", "msg", "sem")]
    on_host = [row.split()[0] for table in tables for row in table.splitlines()]
    assert str(key) not in on_host


@pytest.mark.skipif(not ISO.private_uid, reason="a uid per call needs root")
def test_files_filling_dev_shm_and_tmp_do_not_outlive_the_call(mode: bool) -> None:
    note = f"verity-fill-{secrets.token_hex(6)}"
    filler = f"""
    import os
    for place in ("/dev/shm", "/tmp", "/var/tmp"):
        for i in range(4):  # 4 x 8 MB in each place the program can write
            try:
                path = os.path.join(place, "{note}-" + str(i))
                with open(path, "wb") as f:
                    f.write(b"x" * (8 << 20))
                print(path)
            except OSError:
                break
    """
    written = run(filler, memory_mb=512).split()
    assert any(path.startswith("/dev/shm/") for path in written)
    assert [path for path in written if os.path.exists(path)] == []
    assert [name for name in os.listdir("/dev/shm") if name.startswith(note)] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="making objects as another uid needs root")
def test_what_a_uid_left_in_shared_places_is_removed() -> None:
    uid = 3_900_000 + secrets.randbelow(90_000)
    name = f"verity-left-{secrets.token_hex(4)}"
    libc = ctypes.CDLL(None, use_errno=True)
    child = os.fork()
    if child == 0:  # as the run's uid would: a shared memory segment, a message queue, a file in /dev/shm
        made = False
        try:
            os.setgid(uid)
            os.setuid(uid)
            made = libc.shmget(0, 4096, 0o1600) >= 0 and libc.msgget(0, 0o1600) >= 0
            Path(f"/dev/shm/{name}").write_text("x")
        finally:
            os._exit(0 if made else 1)
    assert os.waitpid(child, 0)[1] == 0
    assert sorted(kind for kind, _ in sysv_objects_of(uid)) == ["msg", "shm"]
    remove_left_by_uid(uid)
    assert sysv_objects_of(uid) == [] and not os.path.exists(f"/dev/shm/{name}")


@pytest.mark.skipif(not ISO.cpu_bound, reason="bounding a whole run's CPU needs the cgroup cpu controller")
def test_busy_processes_together_get_the_calls_cpu_time_only(mode: bool) -> None:
    # cpu_s = 2 over wall_s = 4: the whole run may use half a CPU, so six busy processes watched for 2 s use
    # about 1 CPU-second together, where unbounded they would take every core the machine has.
    program = """
    import os, time
    children = []
    for _ in range(6):
        pid = os.fork()
        if pid == 0:
            while True:
                pass
        children.append(pid)
    time.sleep(2)
    ticks = 0
    for pid in children:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    print(ticks / os.sysconf("SC_CLK_TCK"))
    """
    used = float(run(program, wall_s=4, cpu_s=2))
    assert used < 1.4, used
