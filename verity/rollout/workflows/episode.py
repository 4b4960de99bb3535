"""Multi-turn episodes with an environment (``rollout.workflow: episode``, the run's ``env:`` section).

Model turns and environment turns alternate (``verity.envs``): the environment's observation tokens join the
context with ``loss_mask = 0`` and log-prob 0, each model turn is kept as a ``Turn`` (its token span and reward),
and the episode's reward is the sum of its turn rewards, so the environment scores its own episodes.

A model turn ends at end-of-sequence, at one of the environment's ``stop_strings`` (a tool call's close tag), or
after ``budget.turn_tokens``. An episode ends when the environment says done, when the model's turn ends with
end-of-sequence (``finish_reason`` "stop"), or when the turn or token budget runs out ("length"). An environment
that raises in ``step`` ends its episode with reward 0 (counted in ``env/errors``), and so does one whose ``step``
takes longer than ``budget.step_timeout_s`` (``env/timeouts``): the call is left to finish on its own daemon thread
and its environment is dropped. An episode's ``completion.version`` is the version of its oldest model turn (a
turn may span weight updates in the Ray runtime's interruptible generation).

With ``env.guidance`` (Agent-RLVR), a group whose every episode scored below ``eval.threshold`` is played again
from its item's hint, and the guided group replaces the failed one (``env/guided_groups``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from verity.data.groups import retry_prompt
from verity.data.prompts import TaskPrompts
from verity.envs.base import Env, StepResult
from verity.envs.registry import env_factory
from verity.envs.timeouts import CallTimedOut, call_with_timeout
from verity.rollout.workflows.base import Context, Group, Task, Workflow, WorkflowSpec, register_workflow
from verity.types import Completion, Item, Rollout, SamplingParams, Score, Turn


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


@register_workflow("episode")
class EpisodeWorkflow(Workflow):
    """Plays an item's ``params.n`` episodes, each with a fresh environment, turn by turn."""

    episodic = True

    def __init__(self, spec: WorkflowSpec) -> None:
        """From the run's ``env:`` section. Environments whose factory takes ``tags`` get ``env.tool_tags`` unless
        their settings name their own; a vision-language model's processor encodes image items' first prompts
        (their images stay with the context for every turn)."""
        super().__init__(spec)
        cfg, env = spec.cfg, spec.cfg.env
        self.make_env = env_factory(env.name, env.settings, defaults={"tags": env.tool_tags.model_dump()})
        turn_tokens = env.turn_tokens or cfg.rollout.max_new_tokens
        self.budget = Budget(env.max_turns, env.max_tokens, turn_tokens, env.step_timeout_s)
        self.guidance = Guidance(env.hint_field, env.hint_template, cfg.eval.threshold) if env.guidance else None
        self.encode: Callable[[Item], list[int]] = partial(
            TaskPrompts(cfg.data, spec.processor).encode, spec.tokenizer
        )
        self.tokenizer = spec.tokenizer

    @classmethod
    def of(
        cls,
        tokenizer: Any,
        encode: Callable[[Item], list[int]],
        make_env: Callable[[], Env],
        budget: Budget,
        guidance: Guidance | None = None,
    ) -> EpisodeWorkflow:
        """Episodes from their parts, without a run config."""
        workflow = cls.__new__(cls)
        Workflow.__init__(workflow, WorkflowSpec(None, tokenizer))
        workflow.make_env, workflow.budget, workflow.guidance = make_env, budget, guidance
        workflow.encode, workflow.tokenizer = encode, tokenizer
        return workflow

    @classmethod
    def check(cls, run: Any) -> list[str]:
        if run.env is None:
            return ["rollout.workflow=episode plays an environment's episodes: add an env: section"]
        return []

    async def arun(self, task: Task, ctx: Context) -> Group:
        stats = {"env/errors": 0.0, "env/timeouts": 0.0, "env/guided_groups": 0.0}
        rollouts = await self._group(task, ctx, None, stats)
        guidance = self.guidance
        hint = task.item.meta.get(guidance.field) if guidance is not None else None
        failed = guidance is not None and all(r.reward < guidance.threshold for r in rollouts)
        if failed and not task.held_out and isinstance(hint, str):
            rollouts = await self._group(task, ctx, hint, stats)
            stats["env/guided_groups"] = 1.0
        return Group(rollouts, scored=True, stats=stats)

    async def _group(self, task: Task, ctx: Context, hint: str | None, stats: dict[str, float]) -> list[Rollout]:
        episodes = [self._start(task.item, hint) for _ in range(task.params.n)]
        await asyncio.gather(*(self._play(ep, task.params, ctx, stats) for ep in episodes))
        return [self._rollout(ep, ctx) for ep in episodes]

    def _start(self, item: Item, hint: str | None) -> _Episode:
        env = self.make_env()
        text = env.reset(item)
        if hint is not None and self.guidance is not None:
            text = retry_prompt(self.guidance.template, text, hint=hint)
        return _Episode(item, env, self.encode(replace(item, prompt=text)))

    async def _play(self, ep: _Episode, params: SamplingParams, ctx: Context, stats: dict[str, float]) -> None:
        stops = sorted(getattr(ep.env, "stop_strings", ()))
        # Stop strings that are single tokens also stop the engine's decoding, saving the tokens past them.
        single = [t for t in (self.tokenizer.encode(s, add_special_tokens=False) for s in stops) if len(t) == 1]
        stop_ids = params.stop_ids | {t[0] for t in single}
        for _ in range(self.budget.max_turns):
            room = self.budget.max_tokens - len(ep.tokens)
            turn = replace(params, n=1, max_new_tokens=min(self.budget.turn_tokens, room), stop_ids=stop_ids)
            (completion,) = await ctx.engine.generate(ep.prompt_ids + ep.tokens, turn)
            self._model_turn(ep, completion, stops, ctx, stats)
            if ep.done:
                return
        ep.end("length")

    def _model_turn(
        self, ep: _Episode, completion: Completion, stops: list[str], ctx: Context, stats: dict[str, float]
    ) -> None:
        keep = min(
            _cut_at_stop(completion.token_ids, stops, ctx.engine.decode), self.budget.max_tokens - len(ep.tokens)
        )
        ids = completion.token_ids[:keep]
        start = len(ep.tokens)
        ep.extend(ids, completion.logprobs[:keep], 1)
        ep.versions.append(completion.version)
        observation, reward, done, info = self._step(ep.env, ctx.engine.decode(ids), stats)
        ep.turns.append(Turn(start, len(ep.tokens), reward, info.get("tool")))
        if done or (ids and ids[-1] == self.tokenizer.eos_token_id):
            ep.end("stop")
            return
        obs_ids = self.tokenizer.encode(observation, add_special_tokens=False)
        if len(ep.turns) >= self.budget.max_turns or len(ep.tokens) + len(obs_ids) >= self.budget.max_tokens:
            ep.end("length")  # no turn left, or no room for the observation and a reply to it
            return
        ep.extend(obs_ids, [0.0] * len(obs_ids), 0)

    def _step(self, env: Env, text: str, stats: dict[str, float]) -> StepResult:
        """``env.step(text)``, waited for ``budget.step_timeout_s``: a broken or hung environment loses its
        episode, not the run. The step blocks the event loop on purpose: every episode of a round steps before
        the next round's generate call, so rounds stay whole batches."""
        try:
            observation, reward, done, info = call_with_timeout(
                lambda: env.step(text), self.budget.step_timeout_s, "env.step"
            )
            return str(observation), float(reward), bool(done), dict(info or {})
        except CallTimedOut:
            stats["env/timeouts"] += 1
            limit = f"env.step took over {self.budget.step_timeout_s:g}s (env.step_timeout_s)"
            return "", 0.0, True, {"error": limit}
        except Exception as err:
            stats["env/errors"] += 1
            return "", 0.0, True, {"error": f"{type(err).__name__}: {err}"}

    def _rollout(self, ep: _Episode, ctx: Context) -> Rollout:
        version = min(ep.versions, default=ctx.engine.version)
        completion = Completion(ep.tokens, ep.logprobs, ctx.engine.decode(ep.tokens), ep.finish, version)
        score = Score(sum(t.reward for t in ep.turns))
        return Rollout(ep.item, 0, ep.prompt_ids, completion, score, ep.mask, ep.turns)


def _cut_at_stop(ids: list[int], stops: list[str], decode: Callable[[list[int]], str]) -> int:
    """Length of the shortest prefix of ``ids`` whose text contains a stop string (all of ``ids`` if none)."""
    if not stops or not any(s in decode(ids) for s in stops):
        return len(ids)
    return next(k for k in range(1, len(ids) + 1) if any(s in decode(ids[:k]) for s in stops))
