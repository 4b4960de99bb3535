"""The algorithm's written claims agree with the code: docstring references, config texts, the docs page."""

import importlib
import math
import re
from pathlib import Path

import pytest
import torch

import verity.algo
from verity.algo.config import AlgoConfig, estimator_setting_keys
from verity.algo.kl import kl_estimate

ALGO_DIR = Path(verity.algo.__file__).parent
DOCS = ALGO_DIR.parents[1] / "docs" / "algorithms.md"


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for name in parts[split:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_every_dotted_name_in_algo_docstrings_exists() -> None:
    names = {
        name for path in ALGO_DIR.glob("*.py") for name in re.findall(r"``(verity(?:\.\w+)+)``", path.read_text())
    }
    assert names  # the pattern finds something
    assert [name for name in sorted(names) if not _resolves(name)] == []


def test_k1_text_has_the_code_sign() -> None:
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    # r = pi_ref / pi = 0.5, so k1 = -log r = log 2 = log pi - log pi_ref
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(math.log(2))
    text = AlgoConfig.model_fields["kl_estimator"].description
    assert "r = pi_ref/pi" in text and "k1 = -log r" in text
    assert "k1 `-log r`" in DOCS.read_text()


def test_docs_name_only_real_config_keys() -> None:
    keys = set(re.findall(r"`algo\.(\w+)", DOCS.read_text()))
    assert keys and keys <= set(AlgoConfig.model_fields) | estimator_setting_keys()
