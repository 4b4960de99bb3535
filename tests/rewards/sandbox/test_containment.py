"""Hostile runs that end the worker, overrun the pool's limit, or try to leave something behind."""

import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from verity.rewards.config import RewardConfig
from verity.rewards.executor import RewardExecutor
from verity.rewards.sandbox import cgroup as sandbox_cgroup
from verity.rewards.sandbox import core as sandbox
from verity.rewards.sandbox.core import SandboxLimits, isolation, run_python
from verity.types import Item

pytestmark = pytest.mark.security
ISO = isolation()
REPO = Path(__file__).resolve().parents[2]


def _status(pid: str) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.split()[0] for k, _, v in (line.partition(":\t") for line in lines) if v.split()}


def live_processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, real uid) of every process not yet a zombie."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            status = _status(entry) if entry.isdigit() else None
        except OSError:
            continue
        if status and status["State"] != "Z":
            found[int(entry)] = (int(status["PPid"]), int(status["Uid"]))
    return found


def run_uids(ancestor: int) -> set[int]:
    """The private uids of the sandbox runs below ``ancestor`` (the uid marks detached grandchildren too)."""
    procs = live_processes()
    tree, grew = {ancestor}, True
    while grew:
        below = {pid for pid, (ppid, _) in procs.items() if ppid in tree}
        grew, tree = bool(below - tree), tree | below
    return {procs[pid][1] for pid in tree if pid in procs and procs[pid][1] >= 1_000_000}


def processes_of(uids: set[int]) -> list[int]:
    return [pid for pid, (_, uid) in live_processes().items() if uid in uids]


def wait_for(condition: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(condition())  # type: ignore[operator]


@pytest.mark.skipif(not ISO.private_uid, reason="finding a run's detached processes needs its private uid (root)")
@pytest.mark.parametrize("namespaces", ["1", "0"])
def test_run_dies_with_the_worker_that_started_it(namespaces: str) -> None:
    if namespaces == "1" and not ISO.namespaces:
        pytest.skip("needs Linux namespaces (unshare as root)")
    program = """
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(60)
        os._exit(0)
    time.sleep(60)
    """
    worker = (
        "from verity.rewards.sandbox.core import SandboxLimits, run_python\n"
        f"run_python({textwrap.dedent(program)!r}, limits=SandboxLimits(wall_s=60, cpu_s=60))"
    )
    env = {**os.environ, "VERITY_SANDBOX_NAMESPACES": namespaces}
    proc = subprocess.Popen([sys.executable, "-c", worker], cwd=REPO, env=env)
    uids: set[int] = set()

    def started() -> bool:
        uids.update(run_uids(proc.pid))
        return len(processes_of(uids)) == 2

    try:
        assert wait_for(started, 20.0), "the program and its detached grandchild did not start"
        proc.kill()
        proc.wait(10)
        assert wait_for(lambda: not processes_of(uids), 3.0), "the run outlived its killed worker"
        sandbox.clean_up_after(proc.pid)  # what the reward pool does after killing a worker
        assert [g for p in sandbox_cgroup.parents() for g in p.glob(f"verity-sandbox-{proc.pid}-*")] == []
        assert list(Path(tempfile.gettempdir()).glob(f"verity-sandbox-{proc.pid}-*")) == []
    finally:
        proc.kill()
        proc.wait(10)
        for pid in processes_of(uids):
            os.kill(pid, signal.SIGKILL)


def test_sandbox_ends_before_the_pool_limit_so_the_worker_survives() -> None:
    tests = [f"assert spin({i}) == {i}" for i in range(4)]  # 4 tests x 1.5 s in the sandbox > the pool's 4 s
    cfg = RewardConfig(verifiers=[{"name": "code", "settings": {"timeout_s": 1.5}}], workers=1, timeout_s=4.0)
    item = Item("spin", "code", "p", None, meta={"tests": tests})
    with RewardExecutor(cfg) as ex:
        ex.score([item], ["```python\ndef spin(x):\n    return x\n```"])  # the first call pays the view's setup
        ex.stats()
        start = time.monotonic()
        score = ex.score([item], ["```python\ndef spin(x):\n    while True:\n        pass\n```"])[0]
        elapsed = time.monotonic() - start
        assert (score.value, score.reason) == (0.0, None)
        assert ex.stats()["worker_restarts"] == 0
        assert elapsed < 4.0


def test_code_timeout_at_or_above_the_pool_limit_is_refused() -> None:
    with pytest.raises(ValueError, match=r"verifiers\[0\]\.settings\.timeout_s .* reward\.timeout_s"):
        RewardConfig(verifiers=[{"name": "code", "settings": {"timeout_s": 30}}], timeout_s=30)


@pytest.fixture
def scratch_parent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private parent for the sandbox's scratch directories, so leftovers of this test alone are seen."""
    parent = Path(tempfile.mkdtemp(prefix="verity-test-scratch-"))
    parent.chmod(0o711)  # a private uid must reach its scratch directory when there is no mount namespace
    monkeypatch.setattr(tempfile, "tempdir", str(parent))
    yield parent
    subprocess.run(["rm", "-rf", str(parent)], check=False, timeout=60)


@pytest.mark.parametrize("namespaces", [True, False])
def test_deep_and_locked_trees_leave_nothing_behind(
    scratch_parent: Path, namespaces: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if namespaces and not ISO.namespaces:
        pytest.skip("needs Linux namespaces (unshare as root)")
    monkeypatch.setattr(sandbox, "isolation", lambda: dataclasses.replace(ISO, namespaces=namespaces))
    program = """
    import os
    os.makedirs("locked/inner")
    open("locked/inner/f", "w").write("x")
    os.chmod("locked/inner", 0)
    os.chmod("locked", 0)
    for _ in range(3000):
        os.mkdir("d")
        os.chdir("d")
    open("bottom", "w").write("x")
    print("built")
    """
    result, _ = run_python(textwrap.dedent(program), limits=SandboxLimits(wall_s=10, cpu_s=10))
    assert result.stdout == "built\n", result.stderr[-500:]
    assert os.listdir(scratch_parent) == []


@pytest.mark.skipif(not ISO.namespaces, reason="needs Linux namespaces (unshare as root)")
def test_no_writable_place_outlives_the_call() -> None:
    note = f"verity-note-{secrets.token_hex(6)}"
    writer = f"""
    import os

    def below(path):
        try:
            return [os.path.join(path, name) for name in os.listdir(path)]
        except OSError:
            return []

    for top in ["/", *below("/")]:
        for place in [top, *below(top)]:
            if place.startswith(("/proc", "/sys")) or not os.path.isdir(place):
                continue
            try:
                open(os.path.join(place, {note!r}), "w").write("x")
                print(os.path.join(place, {note!r}))
            except OSError:
                pass
    """
    first, _ = run_python(textwrap.dedent(writer), limits=SandboxLimits(wall_s=10, cpu_s=10))
    written = first.stdout.split()
    try:
        assert written, f"the writer found no writable place at all: {first.stderr[-500:]}"
        reader = f"import os\nprint([p for p in {written!r} if os.path.exists(p)])"
        second, _ = run_python(reader)
        assert second.stdout == "[]\n", f"a later call found notes: {second.stdout}"
    finally:
        for path in written:
            if os.path.basename(path) == note and os.path.isfile(path):
                os.remove(path)


@pytest.mark.skipif(not ISO.cgroup, reason="bounding a whole run's memory needs a cgroup Verity may create")
def test_memory_limit_bounds_the_whole_run_not_each_process() -> None:
    program = """
    import os, time
    read, write = os.pipe()
    for _ in range(6):
        if os.fork() == 0:
            held = b"x" * (100 << 20)  # written, so every page is resident
            os.write(write, b"%8d" % os.getpid())
            time.sleep(4)
            os._exit(0)
    time.sleep(2)
    held_at_once = [int(pid) for pid in os.read(read, 100).split()]
    print(sum(os.waitpid(pid, os.WNOHANG)[0] == 0 for pid in held_at_once))
    """
    limits = SandboxLimits(wall_s=10, cpu_s=10, memory_mb=256, processes=16)
    result, _ = run_python(textwrap.dedent(program), limits=limits)
    assert result.stdout.strip() in {"0", "1", "2"}, (result.stdout, result.stderr[-300:])


@pytest.mark.parametrize("namespaces", [True, False])
def test_a_program_ended_by_a_signal_is_reported(namespaces: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if namespaces and not ISO.namespaces:
        pytest.skip("needs Linux namespaces (unshare as root)")
    monkeypatch.setattr(sandbox, "isolation", lambda: dataclasses.replace(ISO, namespaces=namespaces))
    for signum in (signal.SIGKILL, signal.SIGTERM):
        result, _ = run_python(f"import os\nos.kill(os.getpid(), {int(signum)})")
        assert (result.returncode in (-signum, 128 + signum), result.stderr) == (True, "")
