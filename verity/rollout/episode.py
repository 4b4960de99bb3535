"""The Episode seam: from items to rollouts.

Single-turn episodes are one generation per sample (scored afterwards by the verifiers). Multi-turn episodes
alternate model turns and environment turns (``verity.envs``): the environment's observation tokens join the
context with ``loss_mask = 0`` and log-prob 0, each model turn is kept as a ``Turn`` (its token span and
reward), and the episode's reward is the sum of its turn rewards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from verity.envs.base import Env, StepResult
from verity.rollout.engine import Engine, SamplingParams
from verity.rollout.groups import failed_groups, replace_groups, retry_prompt
from verity.timeouts import CallTimedOut, call_with_timeout
from verity.types import Completion, Item, Rollout, Score, Turn

Encode = Callable[[Item], list[int]]


def single_turn_rollouts(
    engine: Engine, items: list[Item], prompt_ids: list[list[int]], params: SamplingParams
) -> list[Rollout]:
    """``params.n`` rollouts per item; rollouts of item i form group i."""
    outputs = engine.generate(prompt_ids, params)
    return [
        Rollout(item=item, group=g, prompt_ids=ids, completion=completion)
        for g, (item, ids, completions) in enumerate(zip(items, prompt_ids, outputs, strict=True))
        for completion in completions
    ]


@dataclass(frozen=True)
class Budget:
    """Limits of one episode: model turns, completion tokens (model + environment), tokens per model turn, and
    seconds per ``env.step``."""

    max_turns: int
    max_tokens: int
    turn_tokens: int
    step_timeout_s: float = 30.0


@dataclass(frozen=True)
class Guidance:
    """Agent-RLVR re-attempts: a group whose every episode scored below ``threshold`` is played again from
    ``template.format(prompt=..., hint=item.meta[field])``, and the guided group replaces the failed one."""

    field: str = "hint"
    template: str = "{prompt}\nHint: {hint}"
    threshold: float = 1.0


@dataclass
class _Episode:
    """The growing state of one episode."""

    item: Item
    group: int
    env: Env
    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)  # the policy version of each model turn
    finish: str = "length"
    done: bool = False

    def extend(self, ids: list[int], logprobs: list[float], trained: int) -> None:
        self.tokens += ids
        self.logprobs += logprobs
        self.mask += [trained] * len(ids)

    def end(self, finish: str) -> None:
        self.finish, self.done = finish, True


class EpisodeRunner:
    """Plays multi-turn episodes of all items at once: each round, one generate call over every live
    episode's context (prompt + completion so far), then one ``env.step`` per episode.

    A model turn ends at end-of-sequence, at one of the environment's ``stop_strings`` (a tool call's close tag),
    or after ``budget.turn_tokens``. An episode ends when the environment says done, when the model's turn ends
    with end-of-sequence (``finish_reason`` "stop"), or when the turn or token budget runs out ("length"). An
    environment that raises in ``step`` ends its episode with reward 0 (counted in ``env/errors``), and so does
    one whose ``step`` takes longer than ``budget.step_timeout_s`` (``env/timeouts``): the call is left to finish
    on its own daemon thread and its environment is dropped. An episode's ``completion.version`` is the version
    of its oldest model turn (a turn may span weight updates in the Ray runtime's interruptible generation).
    """

    def __init__(
        self,
        engine: Engine,
        tokenizer: Any,
        encode: Encode,
        make_env: Callable[[], Env],
        budget: Budget,
        guidance: Guidance | None = None,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.encode = encode
        self.make_env = make_env
        self.budget = budget
        self.guidance = guidance
        self.stats: dict[str, float] = {}

    def run(self, items: list[Item], params: SamplingParams, guided: bool = True) -> list[Rollout]:
        """``params.n`` scored episodes per item, group i for item i; ``stats`` counts this call's events."""
        self.stats = {"env/errors": 0.0, "env/timeouts": 0.0, "env/guided_groups": 0.0}
        episodes = [self._start(item, g, None) for g, item in enumerate(items) for _ in range(params.n)]
        self._play(episodes, params)
        rollouts = [self._rollout(ep) for ep in episodes]
        if guided and self.guidance is not None:
            rollouts = self._reattempt(items, rollouts, params, self.guidance)
        return rollouts

    def _start(self, item: Item, group: int, hint: str | None) -> _Episode:
        env = self.make_env()
        text = env.reset(item)
        if hint is not None and self.guidance is not None:
            text = retry_prompt(self.guidance.template, text, hint=hint)
        return _Episode(item, group, env, self.encode(replace(item, prompt=text)))

    def _play(self, episodes: list[_Episode], params: SamplingParams) -> None:
        stops = sorted({s for ep in episodes for s in getattr(ep.env, "stop_strings", ())})
        # Stop strings that are single tokens also stop the engine's decoding, saving the tokens past them.
        single = [t for t in (self.tokenizer.encode(s, add_special_tokens=False) for s in stops) if len(t) == 1]
        stop_ids = params.stop_ids | {t[0] for t in single}
        for _ in range(self.budget.max_turns):
            live = [ep for ep in episodes if not ep.done]
            if not live:
                break
            room = max(self.budget.max_tokens - len(ep.tokens) for ep in live)
            turn = replace(params, n=1, max_new_tokens=min(self.budget.turn_tokens, room), stop_ids=stop_ids)
            outputs = self.engine.generate([ep.prompt_ids + ep.tokens for ep in live], turn)
            for ep, (completion, *_) in zip(live, outputs, strict=True):
                self._model_turn(ep, completion, stops)
        for ep in episodes:
            if not ep.done:
                ep.end("length")

    def _model_turn(self, ep: _Episode, completion: Completion, stops: list[str]) -> None:
        keep = min(self._cut_at_stop(completion.token_ids, stops), self.budget.max_tokens - len(ep.tokens))
        ids = completion.token_ids[:keep]
        start = len(ep.tokens)
        ep.extend(ids, completion.logprobs[:keep], 1)
        ep.versions.append(completion.version)
        observation, reward, done, info = self._step(ep.env, self._decode(ids))
        ep.turns.append(Turn(start, len(ep.tokens), reward, info.get("tool")))
        if done or (ids and ids[-1] == self.tokenizer.eos_token_id):
            ep.end("stop")
            return
        obs_ids = self.tokenizer.encode(observation, add_special_tokens=False)
        if len(ep.turns) >= self.budget.max_turns or len(ep.tokens) + len(obs_ids) >= self.budget.max_tokens:
            ep.end("length")  # no turn left, or no room for the observation and a reply to it
            return
        ep.extend(obs_ids, [0.0] * len(obs_ids), 0)

    def _step(self, env: Env, text: str) -> StepResult:
        """``env.step(text)``, waited for ``budget.step_timeout_s``: a broken or hung environment loses its
        episode, not the run."""
        try:
            observation, reward, done, info = call_with_timeout(
                lambda: env.step(text), self.budget.step_timeout_s, "env.step"
            )
            return str(observation), float(reward), bool(done), dict(info or {})
        except CallTimedOut:
            self.stats["env/timeouts"] += 1
            limit = f"env.step took over {self.budget.step_timeout_s:g}s (env.step_timeout_s)"
            return "", 0.0, True, {"error": limit}
        except Exception as err:
            self.stats["env/errors"] += 1
            return "", 0.0, True, {"error": f"{type(err).__name__}: {err}"}

    def _cut_at_stop(self, ids: list[int], stops: list[str]) -> int:
        """Length of the shortest prefix of ``ids`` whose text contains a stop string (all of ``ids`` if none)."""
        if not stops or not any(s in self._decode(ids) for s in stops):
            return len(ids)
        return next(k for k in range(1, len(ids) + 1) if any(s in self._decode(ids[:k]) for s in stops))

    def _rollout(self, ep: _Episode) -> Rollout:
        version = min(ep.versions, default=self.engine.version)
        completion = Completion(ep.tokens, ep.logprobs, self._decode(ep.tokens), ep.finish, version)
        score = Score(sum(t.reward for t in ep.turns))
        return Rollout(ep.item, ep.group, ep.prompt_ids, completion, score, ep.mask, ep.turns)

    def _decode(self, ids: list[int]) -> str:
        return self.engine.decode(ids)

    def _reattempt(
        self, items: list[Item], rollouts: list[Rollout], params: SamplingParams, guidance: Guidance
    ) -> list[Rollout]:
        failed = failed_groups(rollouts, guidance.threshold)
        hinted = [g for g in failed if isinstance(items[g].meta.get(guidance.field), str)]
        if not hinted:
            return rollouts
        retry = [self._start(items[g], g, items[g].meta[guidance.field]) for g in hinted for _ in range(params.n)]
        self._play(retry, params)
        self.stats["env/guided_groups"] = float(len(hinted))
        return replace_groups(rollouts, [self._rollout(ep) for ep in retry], hinted)
