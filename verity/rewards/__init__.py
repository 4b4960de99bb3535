"""Verifiers, their registry, composition and the executor that runs them safely.

A verifier is ``fn(completion: str, **fields) -> float | Score | None``; see ``verity.rewards.registry``.
"""

from verity.rewards.compose import Component, ComposedReward
from verity.rewards.config import RewardConfig, VerifierSpec
from verity.rewards.executor import RewardExecutor
from verity.rewards.extract import extract_answer, extract_code
from verity.rewards.registry import registered_verifiers, resolve_verifier
from verity.rewards.verifier import register_verifier

__all__ = [
    "Component",
    "ComposedReward",
    "RewardConfig",
    "RewardExecutor",
    "VerifierSpec",
    "extract_answer",
    "extract_code",
    "register_verifier",
    "registered_verifiers",
    "resolve_verifier",
]
