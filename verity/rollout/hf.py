"""Rollouts with a transformers model and a hand-written decode loop.

Faster than ``model.generate`` for RL: each prompt is prefilled once and its KV cache shared by its G samples,
finished rows leave the batch, prompts are batched by length, decode steps use plain-product attention over a
position-major cache (``verity.rollout.attention``), and the behaviour log-prob of every sampled token comes from
the same logits that sampled it.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from verity.model.loading import load_policy
from verity.model.lora import apply_lora
from verity.model.modeling import autocast, cache_keyword, completion_logprobs, full_attention_only
from verity.model.vision import exclude_placeholders, media_of, media_positions, placeholder_ids, stack_media
from verity.rollout.attention import use_decode_attention
from verity.rollout.engine import EngineSpec, Weights, register_engine
from verity.types import Completion, SamplingParams


@register_engine("hf")
def build_hf_engine(spec: EngineSpec) -> HFEngine:
    """The learner's own module when the spec offers it (a sync then moves only the version), else a copy of the
    policy loaded from ``spec.model_path`` (with fresh adapters when the learner trains LoRA)."""
    if spec.model is not None:
        return HFEngine(spec.model, spec.tokenizer, batch_size=spec.batch_size, seed=spec.seed, shared=True)

    model, tokenizer = load_policy(spec.model_path, spec.dtype, spec.device)
    if spec.lora is not None:
        model = apply_lora(model, spec.lora)
    return HFEngine(model, tokenizer, batch_size=spec.batch_size, seed=spec.seed)


class HFEngine:
    """Engine over a Hugging Face causal LM. In the local runtime it shares the learner's module (``shared``: no
    copy, and a weight sync only moves the version)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        *,
        batch_size: int = 64,
        seed: int = 0,
        shared: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.shared = shared
        self.version = 0
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._cache_kw = cache_keyword(model)
        self._excluded = placeholder_ids(model)  # image placeholders: never sampled (the learner agrees)
        use_decode_attention(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def load_weights(self, weights: Weights, version: int) -> None:
        if not self.shared:
            state = self.model.state_dict()  # views of the live tensors: copying into them updates the model
            with torch.no_grad():
                for name, tensor in weights:
                    if name not in state:
                        raise KeyError(f"weight {name!r} is not in the engine's model (a different architecture?)")
                    state[name].copy_(tensor)
        self.version = version

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def get_rng_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def close(self) -> None:
        """Nothing to release: the model is an ordinary module."""

    def logprobs(
        self, prompts: list[list[int]], completions: list[list[int]], temperature: float
    ) -> list[list[float]]:
        return completion_logprobs(self.model, prompts, completions, temperature, self.pad_id)

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        was_training = self.model.training
        self.model.eval()
        try:
            results: list[list[Completion]] = [[] for _ in prompts]
            order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
            per_batch = max(1, self.batch_size // params.n)
            for start in range(0, len(order), per_batch):
                chunk = order[start : start + per_batch]
                outs = self._generate_batch([prompts[i] for i in chunk], params)
                for j, i in enumerate(chunk):
                    results[i] = outs[j * params.n : (j + 1) * params.n]
            return results
        finally:
            self.model.train(was_training)

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        device = self.device
        width = max(len(p) for p in prompts)
        # One mask for the whole decode, filled as tokens arrive; each step reads a prefix view of it.
        mask = torch.zeros((len(prompts), width + params.max_new_tokens), dtype=torch.long)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) : width] = 1
        ids, mask = ids.to(device), mask.to(device)
        # Without left padding every mask is all ones: the model then builds no mask at all (none is passed).
        padded = len({len(p) for p in prompts}) > 1
        cache = self._new_cache(width + params.max_new_tokens)
        # Image inputs enter the prefill only: decode steps read the image tokens' keys and values from the cache.
        media = stack_media([media_of(p) for p in prompts], device)
        positions, offset = media_positions(self.model, ids, mask[:, :width], media)
        logits = self._forward(ids, mask[:, :width] if padded else None, positions, cache, media)  # (B, V)
        # Share each prompt's prefill across its n samples.
        if params.n > 1:
            cache.batch_repeat_interleave(params.n)
            logits = logits.repeat_interleave(params.n, dim=0)
            mask = mask.repeat_interleave(params.n, dim=0)
            offset = offset.repeat_interleave(params.n) if offset is not None else None
        total = logits.shape[0]
        # (N,) the next token's position: the real tokens so far, shifted by ``offset`` under multimodal RoPE
        lengths = mask.sum(-1) if offset is None else mask.sum(-1) + offset
        active = torch.arange(total, device=device)  # original row of each batch row
        done = torch.zeros(total, dtype=torch.bool, device=device)  # finished rows still in the batch
        tokens: list[list[int]] = [[] for _ in range(total)]
        logps: list[list[float]] = [[] for _ in range(total)]
        finish = ["length"] * total
        stop_ids = torch.tensor(sorted({self.eos_id, *params.stop_ids}), device=device)
        for step in range(params.max_new_tokens):
            chosen, chosen_logp = self._sample(logits, params)
            stop = torch.isin(chosen, stop_ids)
            for row, tok, lp, st, was_done in zip(
                active.tolist(), chosen.tolist(), chosen_logp.tolist(), stop.tolist(), done.tolist(), strict=True
            ):
                if was_done:
                    continue
                tokens[row].append(tok)
                logps[row].append(lp)
                if st:
                    finish[row] = "stop"
            done |= stop
            if step == params.max_new_tokens - 1 or bool(done.all()):
                break
            # Finished rows leave the batch once they are an eighth of it: each removal copies the whole cache.
            if int(done.sum()) * 8 >= len(done):
                kept = (~done).nonzero().squeeze(-1)
                cache.batch_select_indices(kept)
                active, chosen, mask, lengths = active[kept], chosen[kept], mask[kept], lengths[kept]
                done = done[kept]
            mask[:, width + step] = 1
            step_mask = mask[:, : width + step + 1] if padded else None
            logits = self._forward(chosen[:, None], step_mask, lengths[:, None], cache)
            lengths = lengths + 1
        return [
            Completion(
                token_ids=tokens[r],
                logprobs=logps[r],
                text=self.decode(tokens[r]),
                finish_reason=finish[r],
                version=self.version,
            )
            for r in range(total)
        ]

    def _new_cache(self, capacity: int) -> Cache:
        """A KV cache with room for ``capacity`` positions allocated once, when every layer attends to the full
        context; otherwise (sliding windows, linear attention) the model's own growing cache."""
        if not full_attention_only(self.model):
            return DynamicCache(config=self.model.config)
        config = self.model.config.get_text_config(decoder=True)
        return Cache(layers=[PreallocatedLayer(capacity) for _ in range(config.num_hidden_layers)])

    def _forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor | None,
        positions: torch.Tensor,
        cache: Cache,
        media: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Last-position logits (N, V) of one prefill or decode step, extending ``cache``."""
        kwargs = {self._cache_kw: cache, "logits_to_keep": 1, **(media or {})}
        with autocast(ids.device):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)
        return exclude_placeholders(out.logits[:, -1, :].float(), self._excluded)

    def _sample(self, logits: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Next tokens (N,) and their log-probs under the tempered, untruncated distribution."""
        if params.greedy:
            logp = torch.log_softmax(logits, dim=-1)
            chosen = logp.argmax(-1)
            return chosen, logp.gather(-1, chosen[:, None]).squeeze(-1)
        logp = torch.log_softmax(logits / params.temperature, dim=-1)
        probs = logp.exp()
        if params.top_k > 0:
            probs = _top_k_filter(probs, params.top_k)
        if params.top_p < 1.0:
            probs = _top_p_filter(probs, params.top_p)
        chosen = torch.multinomial(probs.cpu(), 1, generator=self.generator).squeeze(-1).to(logits.device)
        return chosen, logp.gather(-1, chosen[:, None]).squeeze(-1)


def _top_k_filter(probs: torch.Tensor, top_k: int) -> torch.Tensor:
    """Zero all but the ``top_k`` most likely tokens of each row."""
    if top_k >= probs.shape[-1]:
        return probs
    kth = probs.topk(top_k, dim=-1).values[:, -1:]  # (N, 1)
    return probs.masked_fill(probs < kth, 0.0)


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail of each row beyond cumulative mass ``top_p`` (the top token always stays)."""
    sorted_probs, index = probs.sort(dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(-1)
    drop = cumulative - sorted_probs > top_p
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter(-1, index, sorted_probs)


class PreallocatedLayer(DynamicLayer):
    """A KV-cache layer that allocates room for ``capacity`` positions on its first update and writes each new
    step in place, instead of re-concatenating the whole cache every step (quadratic copying in the length).

    The buffers are position-major, ``(capacity, batch, heads, dim)``, so the filled prefix is one contiguous
    block: ``keys``/``values`` are (batch, heads, length, dim) views of it that attention reads at the speed of a
    contiguous tensor (a batch-major buffer sliced to its prefix read 1.5-3x slower on CPU), and dropping or
    repeating rows copies the filled positions only."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self._keys = self._empty(key_states, key_states.shape[0])
            self._values = self._empty(value_states, value_states.shape[0])
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache full: {end} positions requested, room for {self.capacity}")
        self._keys[self.length : end] = key_states.permute(2, 0, 1, 3)
        self._values[self.length : end] = value_states.permute(2, 0, 1, 3)
        self.length = end
        self._expose()
        return self.keys, self.values

    def _empty(self, like: torch.Tensor, batch: int) -> torch.Tensor:
        return like.new_empty((self.capacity, batch, like.shape[1], like.shape[-1]))

    def _expose(self) -> None:
        self.keys = self._keys[: self.length].permute(1, 2, 0, 3)
        self.values = self._values[: self.length].permute(1, 2, 0, 3)

    def _rebuild(self, rows: torch.Tensor) -> None:
        """New buffers holding batch rows ``rows`` (indices into the current batch) of the filled positions."""
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            new = self._empty(old.permute(1, 2, 0, 3), len(rows))
            torch.index_select(old[: self.length], 1, rows, out=new[: self.length])
            setattr(self, name, new)
        self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.length:
            batch = self._keys.shape[1]
            self._rebuild(torch.arange(batch, device=self._keys.device).repeat_interleave(repeats))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length:
            self._rebuild(indices.to(self._keys.device))
