"""Hostile completions: each must be contained, leave no process behind, leave the host untouched, and leave
the executor able to serve the next call."""

import os
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from verity.rewards.config import RewardConfig
from verity.rewards.executor import RewardExecutor
from verity.rewards.sandbox.core import isolation
from verity.types import Item

pytestmark = pytest.mark.security
ITEM = Item("h", "code", "p", None)
ISO = isolation()
needs_namespaces = pytest.mark.skipif(not ISO.namespaces, reason="needs Linux namespaces (unshare as root)")
needs_file_hiding = pytest.mark.skipif(
    not (ISO.namespaces or ISO.private_uid), reason="hiding host files needs a mount namespace or a private uid"
)


@pytest.fixture(scope="module")
def executor() -> Iterator[RewardExecutor]:
    cfg = RewardConfig(verifiers=["hostile_verifier:escaped"], workers=1, timeout_s=8.0)
    with RewardExecutor(cfg) as ex:
        yield ex


def sandbox_processes() -> list[int]:
    """Processes started by any sandbox run: the boot script's command line names it."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes() if entry.isdigit() else b""
        except OSError:
            continue
        if b"sandbox/boot.py" in cmdline:
            found.append(int(entry))
    return found


def attack(executor: RewardExecutor, program: str) -> float:
    """Score ``program``; assert nothing outlives the call and the executor still serves."""
    score = executor.score([ITEM], [f"```python\n{textwrap.dedent(program)}\n```"])[0]
    deadline = time.monotonic() + 2.0
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes() == []
    assert executor.score([ITEM], ["```python\nprint('ESCAPED')\n```"])[0].value == 1.0
    return score.value


@needs_namespaces
def test_no_network_outside_or_localhost(executor: RewardExecutor) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        program = f"""
        import socket
        for host, port in (("127.0.0.1", {port}), ("1.1.1.1", 53)):
            try:
                socket.create_connection((host, port), timeout=1).close()
                print("ESCAPED")
            except OSError:
                pass
        """
        assert attack(executor, program) == 0.0


@needs_file_hiding
def test_cannot_read_run_directory(executor: RewardExecutor, tmp_path: Path) -> None:
    secret = tmp_path / "run" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("hunter2")
    program = f"""
    try:
        if "hunter2" in open({str(secret)!r}).read():
            print("ESCAPED")
    except OSError:
        pass
    """
    assert attack(executor, program) == 0.0


@needs_file_hiding
def test_cannot_write_or_delete_outside(executor: RewardExecutor, tmp_path: Path) -> None:
    keep = tmp_path / "keep.txt"
    keep.write_text("intact")
    program = f"""
    import os
    for act in (lambda: open({str(tmp_path / "pwned")!r}, "w").write("x"), lambda: os.remove({str(keep)!r})):
        try:
            act()
            print("ESCAPED")
        except OSError:
            pass
    """
    assert attack(executor, program) == 0.0
    assert keep.read_text() == "intact"
    assert not (tmp_path / "pwned").exists()


def test_fork_bomb(executor: RewardExecutor) -> None:
    program = """
    import os
    while True:
        try:
            os.fork()
        except OSError:
            pass
    """
    assert attack(executor, program) == 0.0


def test_memory_bomb(executor: RewardExecutor) -> None:
    assert attack(executor, "x = bytearray(8 << 30)\nprint('ESCAPED')") == 0.0


def test_infinite_loop_is_cut_at_the_wall_limit(executor: RewardExecutor) -> None:
    start = time.monotonic()
    assert attack(executor, "while True:\n    pass\nprint('ESCAPED')") == 0.0
    assert time.monotonic() - start < 6.0


def test_huge_stdout_is_truncated(executor: RewardExecutor) -> None:
    program = "import sys\nfor _ in range(10**6):\n    sys.stdout.write('x' * 1000)\nprint('ESCAPED')"
    assert attack(executor, program) == 0.0


def test_child_ignoring_sigterm_and_detached_grandchild_die(executor: RewardExecutor) -> None:
    program = """
    import os, signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(30)
            print("ESCAPED")
        os._exit(0)
    time.sleep(30)
    """
    assert attack(executor, program) == 0.0


def test_killing_the_parent_does_not_stop_scoring(executor: RewardExecutor) -> None:
    program = """
    import os, signal
    for pid in (os.getppid(), 1):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    """
    assert attack(executor, program) == 0.0
    assert os.getpid() > 0  # this test process survived


def test_harness_tampering_cannot_fake_a_pass() -> None:
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
    cheats = [
        "import builtins\nbuiltins.AssertionError = type('Never', (Exception,), {})\ndef add(a, b): return 0",
        "import os\nprint('PASS')\nos._exit(0)",
        "import sys\ndef add(a, b): sys.exit(0)",
        "class Any:\n    def __eq__(self, other): return True\ndef add(a, b): return Any()",
    ]
    cfg = RewardConfig(verifiers=[{"name": "code", "settings": {"partial_credit": True}}], workers=1)
    item = Item("t", "code", "p", None, meta={"tests": tests})
    with RewardExecutor(cfg) as ex:
        scores = ex.score([item] * len(cheats), [f"```python\n{c}\n```" for c in cheats])
        assert [s.value for s in scores] == [0.0] * len(cheats)
        honest = ex.score([item], ["```python\ndef add(a, b):\n    return a + b\n```"])[0]
        assert honest.value == 1.0
