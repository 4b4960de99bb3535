"""What a sandboxed program can see of the host, and how its answers are compared."""

import os
import secrets
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
    allowed = {"bin", "dev", "etc", "lib", "lib64", "proc", "root", "scratch", "tmp", "usr", install.split("/")[1]}
    assert set(eval(top)) <= allowed
    assert scratch == "/scratch ['solution.py']"
    assert install_rest == "False False"
    assert system == "False False False"
    assert not os.path.exists(f"/tmp/{secret}")


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
