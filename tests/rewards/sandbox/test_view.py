"""What a sandboxed program can see of the host, and how its answers are compared."""

import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from verity.rewards.code import code_reward
from verity.rewards.sandbox.core import SandboxLimits, isolation, run_python

pytestmark = pytest.mark.security
needs_namespaces = pytest.mark.skipif(not isolation().namespaces, reason="needs namespaces (unshare as root)")


@pytest.fixture
def world_readable_dataset() -> Iterator[Path]:
    """A dataset file any user may read, outside home, the working directory and /tmp (as a mounted disk is)."""
    directory = Path(tempfile.mkdtemp(prefix="verity-test-data-", dir="/var/lib"))
    directory.chmod(0o755)
    dataset = directory / "tests.jsonl"
    dataset.write_text('{"input": "1", "output": "hidden-answer"}\n')
    dataset.chmod(0o644)
    yield dataset
    dataset.unlink()
    directory.rmdir()


@needs_namespaces
def test_dataset_outside_home_and_cwd_is_not_visible(world_readable_dataset: Path) -> None:
    program = f"""
import os
for path in ({str(world_readable_dataset)!r}, {str(world_readable_dataset.parent)!r}):
    if os.path.exists(path):
        print("ESCAPED", path)
"""
    result, _ = run_python(program)
    assert (result.returncode, result.stdout) == (0, "")


def _top_level(path: str) -> set[str]:
    return {name.split("/")[1] for name in (path, os.path.realpath(path))}


@needs_namespaces
def test_only_the_interpreter_and_scratch_are_visible() -> None:
    install = sys.base_prefix
    secret = f"ESCAPED-{secrets.token_hex(4)}"
    program = f"""
import os
print(sorted(os.listdir("/")))
print(os.getcwd(), sorted(os.listdir(".")))
print(os.path.exists({sysconfig.get_path("purelib") + "/pydantic"!r}), os.path.exists({install + "/include"!r}))
print(os.path.exists("/etc/passwd"), os.path.exists("/usr/share"), os.path.exists("/run/lock"))
open("/tmp/{secret}", "w").write("x")
"""
    result, _ = run_python(program, limits=SandboxLimits(wall_s=10, cpu_s=10))
    top, scratch, install_rest, system = result.stdout.splitlines()
    # Wherever Python was installed: the tops of its executable and standard library (as named and as resolved),
    # the system's library directories and the loader's cache, and the view's own places.
    interpreter = {sys.executable, *(sysconfig.get_path(k) for k in ("stdlib", "platstdlib"))}
    allowed = {"dev", "proc", "scratch", "tmp", "etc", "lib", "lib64", "usr"}
    allowed |= set().union(*(_top_level(path) for path in interpreter))
    assert set(eval(top)) <= allowed
    assert scratch == "/scratch ['solution.py']"
    assert install_rest == "False False"
    assert system == "False False False"
    assert not os.path.exists(f"/tmp/{secret}")


@pytest.fixture(params=["tmp", "dev-shm", "behind-a-symlink"])
def outside_venv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A virtual environment made by this interpreter under /tmp, under /dev/shm, or reached through a symlink
    (its python), the places CI runners and quick experiments put one."""
    shm = request.param == "dev-shm"
    parent = Path(tempfile.mkdtemp(prefix="verity-venv-", dir="/dev/shm")) if shm else tmp_path
    venv = parent / "venv"
    make = [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)]
    subprocess.run(make, check=True)
    if request.param == "behind-a-symlink":
        (parent / "link").symlink_to(venv)
        venv = parent / "link"
    yield venv
    if shm:
        shutil.rmtree(parent)


@needs_namespaces
def test_programs_run_through_an_interpreter_in_a_temporary_virtual_environment(outside_venv: Path) -> None:
    completion = program("def f(x):\n    return x + 1")
    script = f"""
import sys
from verity.rewards.code import code_reward
from verity.rewards.sandbox.core import run_python
result, _ = run_python("import sys; print(sys.version_info[:2], sum(range(10)))")
print(repr(result.stdout), result.returncode, repr(result.stderr[-300:]))
print(code_reward({completion!r}, tests=["assert f(1) == 2", "assert f(2) == 3"]))
print(sys.executable)
"""
    paths = [str(Path(__file__).resolve().parents[3]), *(p for p in sys.path if p.endswith("site-packages"))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    out = subprocess.run(
        [str(outside_venv / "bin" / "python"), "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 3, out.stderr[-1000:]
    version = f"({sys.version_info[0]}, {sys.version_info[1]})"
    assert lines[0] == f"'{version} 45\\n' 0 ''"
    assert lines[1] == "1.0"
    assert lines[2] == str(outside_venv / "bin" / "python")


def program(body: str) -> str:
    return f"```python\n{body}\n```"


def test_integers_compare_exactly_floats_with_tolerance() -> None:
    approximate_fib = "def fib(n):\n    phi = (1 + 5 ** 0.5) / 2\n    return round(phi ** n / 5 ** 0.5)"
    exact_fib = "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"
    tests = ["assert fib(90) == 2880067194370816120"]
    assert code_reward(program(approximate_fib), tests=tests) == 0.0
    assert code_reward(program(exact_fib), tests=tests) == 1.0
    assert code_reward(program("def f():\n    return 0.1 + 0.2"), tests=["assert f() == 0.3"]) == 1.0
    near_tuple = program("def f():\n    return (1, 10**17 + 1)")
    assert code_reward(near_tuple, tests=["assert f() == (1, 100000000000000000)"]) == 0.0
