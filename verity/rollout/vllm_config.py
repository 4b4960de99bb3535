"""The ``rollout.vllm`` section: settings of the vLLM engine (``verity.rollout.vllm``), apart from the engine so
the config reads them without importing it."""

from __future__ import annotations

from pydantic import Field

from verity.schema import Section


class VLLMConfig(Section):
    """Settings of the vLLM engine (``rollout.engine: vllm``); see docs/vllm.md."""

    gpu_memory_utilization: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of each GPU's memory vLLM may take (weights, KV cache), beside the learner.",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one engine shards the model over.")
    enable_sleep_mode: bool = Field(
        False,
        description="Free the engine's GPU memory while the learner trains (colocation); woken before rollouts.",
    )
    enforce_eager: bool = Field(False, description="Run without CUDA graphs (slower decode, faster start-up).")
    max_model_len: int | None = Field(
        None, gt=0, description="Longest prompt + completion (default: the model's)."
    )
    kv_cache_gib: float | None = Field(
        None,
        gt=0,
        description="KV-cache size in GiB; None: 1 GiB on CPU, and on a GPU what gpu_memory_utilization leaves.",
    )
    max_num_seqs: int | None = Field(
        None, gt=0, description="Most sequences decoded together (vLLM's default: 256 on GPU, 128 on CPU)."
    )
    enable_prefix_caching: bool = Field(
        True, description="Reuse a prompt's KV cache across its group's samples and across requests."
    )
    sync_timeout_s: float = Field(120.0, gt=0, description="Longest wait for the engine to take new weights.")
