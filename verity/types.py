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


class PromptIds(list):
    """A prompt's token ids with the extra model inputs its images need (``pixel_values`` and what else the
    model's processor returns, one entry per input, batch dimension first). It is a plain ``list[int]`` to
    every caller that only reads tokens, so image prompts travel the text prompts' paths unchanged; the engine
    and the learner read ``media`` (``verity.vision.media_of``)."""

    def __init__(self, ids: list[int], media: dict[str, Any]) -> None:
        super().__init__(ids)
        self.media = media

    def __add__(self, tokens: list[int]) -> PromptIds:  # type: ignore[override]
        """The prompt continued by ``tokens`` (a partial completion, an environment's reply): still the same
        images, so the image inputs stay with it."""
        return PromptIds([*self, *tokens], self.media)


@dataclass(frozen=True)
class Score:
    """A verifier's verdict. ``value`` is the reward; ``reason`` says why a score is a failure (crash, timeout,
    garbage output), and ``components`` keeps the parts of a composed reward for logging."""

    value: float
    reason: str | None = None
    components: dict[str, float] = field(default_factory=dict)

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
