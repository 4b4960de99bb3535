"""Environments for multi-turn episodes: the contract, a registry, and built-in environments."""

from verity.envs.base import Env, StepResult, register_env
from verity.envs.registry import env_factory, env_names

__all__ = ["Env", "StepResult", "env_factory", "env_names", "register_env"]
