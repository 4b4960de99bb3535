"""The data that flows between Verity's seams.

Every stage of the RL loop speaks in these types: a sampler yields ``Item``s, an engine turns prompts into
``Completion``s, verifiers turn completions into ``Score``s, and the loop packs ``Rollout``s into training tensors
(``verity.train.batching``). This module imports no torch, so reward workers start fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Item:
    """One task instance: a prompt and what a verifier needs to score an answer to it.

    ``meta`` carries every extra field of the source row (reasoning-gym's entry, a jsonl row's other columns);
    verifiers receive it as keyword arguments. ``images`` are the images the prompt shows, in order, as the
    source gave them (file paths, encoded bytes, ``{"bytes"|"path": ...}`` dicts, Pillow images or arrays;
    ``verity.data.images`` reads them); an item without images is a text item.
    """

    id: str
    task: str
    prompt: str
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    images: tuple[Any, ...] = ()


@dataclass(frozen=True)
class RawPrompt:
    """An image prompt as it was before the processor expanded its image placeholders: ``ids``, the rendered
    prompt's tokens with one placeholder per image, ``images`` (Pillow images) and ``length``, how many tokens
    the expanded prompt has. An engine that expands placeholders itself (vLLM) takes this form."""

    ids: list[int]
    images: list[Any]
    length: int


class PromptIds(list):
    """A prompt's token ids with the extra model inputs its images need (``pixel_values`` and what else the
    model's processor returns, one entry per input, batch dimension first). It is a plain ``list[int]`` to
    every caller that only reads tokens, so image prompts travel the text prompts' paths unchanged; the engine
    and the learner read ``media`` (``verity.model.vision.media_of``). ``raw`` is the prompt before expansion."""

    def __init__(self, ids: list[int], media: dict[str, Any], raw: RawPrompt | None = None) -> None:
        super().__init__(ids)
        self.media = media
        self.raw = raw

    def __add__(self, tokens: list[int]) -> PromptIds:  # type: ignore[override]
        """The prompt continued by ``tokens`` (a partial completion, an environment's reply): still the same
        images, so the image inputs stay with it."""
        return PromptIds([*self, *tokens], self.media, self.raw)

    def unexpanded(self) -> list[int]:
        """The token ids with the image placeholders as the rendered prompt had them (one per image), followed by
        whatever continued the prompt."""
        if self.raw is None:
            raise ValueError("this image prompt does not carry its unexpanded form")
        return [*self.raw.ids, *self[self.raw.length :]]


@dataclass(frozen=True)
class Score:
    """A verifier's verdict. ``value`` is the reward; ``reason`` says why a score is a failure (crash, timeout,
    garbage output), and ``components`` keeps the parts of a composed reward for logging.

    A process verifier also scores each step of the completion: ``steps`` holds ``(end, value)`` pairs in order,
    ``end`` the character offset in the completion text where the step ends (the next step starts there; text
    after the last end belongs to the last step). A step-level estimator (``grpo_process``) trains on them;
    every other estimator reads ``value``."""

    value: float
    reason: str | None = None
    components: dict[str, float] = field(default_factory=dict)
    steps: tuple[tuple[int, float], ...] = ()

    @property
    def failed(self) -> bool:
        return self.reason is not None


@dataclass
class Completion:
    """What an engine returns for one sampled sequence.

    ``logprobs[i]`` is the behaviour policy's log-probability of ``token_ids[i]`` (under the tempered, untruncated
    distribution); ``finish_reason`` is ``"stop"`` (eos or a stop token) or ``"length"`` (hit max new tokens).
    """

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    version: int = 0


@dataclass(frozen=True)
class Turn:
    """One model turn of a multi-turn episode: completion tokens ``[start, end)`` were written by the model, the
    environment answered them with ``reward``, and ``tool`` names the tool the turn called (None: no call)."""

    start: int
    end: int
    reward: float = 0.0
    tool: str | None = None


@dataclass
class Rollout:
    """One scored sample: the prompt tokens, the completion, its reward and its group.

    ``loss_mask`` marks the completion tokens that are trained on (1) and tokens written by an environment (0).
    ``turns`` holds the model turns of a multi-turn episode, in order (None for a single-turn sample).
    """

    item: Item
    group: int
    prompt_ids: list[int]
    completion: Completion
    score: Score = field(default_factory=lambda: Score(0.0, reason="not scored"))
    loss_mask: list[int] | None = None
    turns: list[Turn] | None = None

    @property
    def reward(self) -> float:
        return self.score.value


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy decoding (log-probs then use temperature 1). Behaviour
    log-probs are always those of the tempered, untruncated distribution (what the learner's ratio assumes), even
    when ``top_p``/``top_k`` restrict what is sampled. ``stop_ids`` end a completion besides the tokenizer's
    end-of-sequence (kept as its last token, like end-of-sequence)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k restriction
    n: int = 1
    stop_ids: frozenset[int] = field(default_factory=frozenset)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
