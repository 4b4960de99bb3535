"""What the in-process Ray tests share: a small local cluster, one per test module (modules import ``cluster``
and mark their tests with ``pytest.mark.usefixtures("cluster")``), and the settings that fit runs into it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from conftest import REPO_DIR, TESTS_DIR

from verity.build import Parts, build_parts
from verity.runtime.ray.runtime import RayRuntime

# Half a CPU each, so two rollout actors and a reward actor fit the two-CPU cluster.
RAY = ("runtime.kind=ray", "runtime.ray.rollout_cpus=0.5", "runtime.ray.reward_cpus=0.5", "runtime.ray.threads=1")
ASYNC = (*RAY, "runtime.ray.mode=async", "algo.loss=decoupled_ppo", "runtime.ray.segment_tokens=2")


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    paths = (Path(__file__).parent, TESTS_DIR, REPO_DIR)  # actors import verifiers and test workers by path
    temp = tempfile.mkdtemp(prefix="vray")  # short: Ray's socket paths must stay under ~107 characters
    ray.init(
        num_cpus=2,
        object_store_memory=80 * 2**20,
        _temp_dir=temp,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(map(str, paths)), "OMP_NUM_THREADS": "1"}},
    )
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def ray_parts(cfg: Any) -> tuple[Parts, RayRuntime]:
    """Parts of a ``runtime.kind=ray`` config: build_parts puts the Ray runtime in."""
    parts = build_parts(cfg, lambda message: None)
    assert isinstance(parts.runtime, RayRuntime)
    return parts, parts.runtime
