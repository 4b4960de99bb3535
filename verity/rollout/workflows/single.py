"""Single-turn sampling (``rollout.workflow: single``): ``params.n`` completions of the item's prompt, scored
afterwards by the run's verifiers (in the runtime: in-process worker processes, or Ray reward actors)."""

from __future__ import annotations

from verity.rollout.workflows.base import Context, Group, Task, Workflow, register_workflow
from verity.types import Rollout


@register_workflow("single")
class SingleTurn(Workflow):
    """One generate call for the group; the runtime's verifiers score it."""

    restates = True

    async def arun(self, task: Task, ctx: Context) -> Group:
        completions = await ctx.engine.generate(task.prompt_ids, task.params)
        return Group([Rollout(task.item, 0, task.prompt_ids, c) for c in completions])

    @classmethod
    def check(cls, run: object) -> list[str]:
        if getattr(run, "env", None) is not None:
            return [
                "rollout.workflow=single samples completions of the prompt; with env: use rollout.workflow=episode"
            ]
        return []
