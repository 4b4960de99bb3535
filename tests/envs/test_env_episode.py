"""Turn bookkeeping of the episode runner on scripted policies: token spans, masks, log-probs, rewards, budgets,
broken environments and tools, and guided re-attempts."""

from __future__ import annotations

import time
from functools import partial

import pytest
from env_fakes import TURN_LOGPROB, Exploding, HangsOnSecondStep, NeverDone, Player, ScriptedEngine

from verity.data.prompts import encode_prompt
from verity.envs import env_factory
from verity.rollout.turns import episode_metrics
from verity.rollout.workflows.episode import Budget, Guidance
from verity.types import Item, SamplingParams, Turn

ITEM = Item("calc/0", "calc", "What is 12 * 34?", "408", {"hint": "use <tool>calc: 12*34</tool>"})
CALL, RESULT, ANSWER = "<tool>calc: 12*34</tool>", "<result>408</result>", "<answer>408</answer>"


DEFAULT_BUDGET = Budget(4, 96, 32)


def runner(tok, script, make_env=None, budget=DEFAULT_BUDGET, guidance=None):
    engine = ScriptedEngine(tok, script)
    make_env = make_env or env_factory("calculator", {})
    return Player(engine, tok, partial(encode_prompt, tok, system_prompt=None), make_env, budget, guidance)


def ids(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def calculator_script(text: str, turn: int) -> str:
    # Past the close tag the scripted model keeps talking; the runner must cut its turn at the tag.
    return CALL + "and more" if turn == 0 else ANSWER + "<|im_end|>"


def test_tool_episode_tokens_masks_logprobs_and_turns(char_tokenizer):
    run = runner(char_tokenizer, calculator_script)
    (r,) = run.run([ITEM], SamplingParams(32))
    call, result, answer = ids(char_tokenizer, CALL), ids(char_tokenizer, RESULT), ids(char_tokenizer, ANSWER)
    eos = char_tokenizer.eos_token_id
    assert r.completion.token_ids == call + result + answer + [eos]
    assert r.loss_mask == [1] * len(call) + [0] * len(result) + [1] * (len(answer) + 1)
    assert r.completion.logprobs == [TURN_LOGPROB] * len(call) + [0.0] * len(result) + [TURN_LOGPROB] * (
        len(answer) + 1
    )
    a, b = len(call), len(call) + len(result)
    assert r.turns == [Turn(0, a, 0.0, "calc"), Turn(b, b + len(answer) + 1, 1.0, None)]
    assert r.reward == 1.0 and r.completion.finish_reason == "stop" and r.completion.version == 3
    assert r.prompt_ids == encode_prompt(char_tokenizer, ITEM, None)
    # The second turn saw the first turn and the calculator's result in its context.
    assert run.engine.contexts[1].endswith(CALL + RESULT)


def test_wrong_answer_without_tool_scores_zero_in_one_turn(char_tokenizer):
    (r,) = runner(char_tokenizer, lambda text, turn: "<answer>400</answer><|im_end|>").run(
        [ITEM], SamplingParams(32)
    )
    assert r.reward == 0.0 and len(r.turns) == 1 and r.loss_mask == [1] * len(r.completion.token_ids)
    assert episode_metrics([r]) == {"env/turns": 1.0, "env/tool_calls": 0.0, "env/tool_rate": 0.0}


def test_never_finishing_env_is_ended_by_the_turn_budget(char_tokenizer):
    (r,) = runner(char_tokenizer, lambda text, turn: "go", NeverDone, Budget(3, 1000, 8)).run(
        [ITEM], SamplingParams(8)
    )
    assert len(r.turns) == 3 and r.completion.finish_reason == "length"
    assert r.reward == pytest.approx(1.5)  # 3 turns x 0.5
    # Observations follow the first two turns only: the episode ends after the third.
    assert r.completion.text == "go<result>again</result>go<result>again</result>go"


def test_token_budget_cuts_the_episode(char_tokenizer):
    (r,) = runner(char_tokenizer, lambda text, turn: "go", NeverDone, Budget(50, 30, 8)).run(
        [ITEM], SamplingParams(8)
    )
    assert len(r.completion.token_ids) <= 30 and r.completion.finish_reason == "length"
    # "go" + "<result>again</result>" is 2 + 7 tokens: three rounds fit in 27 tokens, the fourth reply does not.
    assert len(r.turns) == 4 and r.turns[-1].end - r.turns[-1].start == 2


def test_raising_environment_ends_its_episode_with_zero_reward(char_tokenizer):
    run = runner(char_tokenizer, lambda text, turn: "x", Exploding)
    (r,) = run.run([ITEM], SamplingParams(4))
    assert [t.reward for t in r.turns] == [0.25, 0.0] and r.completion.finish_reason == "stop"
    assert run.stats["env/errors"] == 1.0


def test_a_hanging_environment_ends_its_episode_at_the_step_timeout(char_tokenizer):
    """Three episodes whose second step hangs for 30 s: each waits 0.2 s (env.step_timeout_s), then ends with its
    first turn's reward and no more; the hung calls are left on their daemon threads."""
    run = runner(char_tokenizer, lambda text, turn: "x", HangsOnSecondStep, Budget(4, 96, 8, step_timeout_s=0.2))
    start = time.monotonic()
    rollouts = run.run([ITEM], SamplingParams(4, n=3))
    assert time.monotonic() - start < 3
    assert [[t.reward for t in r.turns] for r in rollouts] == [[0.25, 0.0]] * 3
    assert {r.completion.finish_reason for r in rollouts} == {"stop"}
    assert run.stats["env/timeouts"] == 3.0 and run.stats["env/errors"] == 0.0


@pytest.mark.parametrize(
    ("tool", "observation"),
    [
        ("test_raises", "error: ZeroDivisionError: tool bug"),
        ("test_hangs", "error: test_hangs timed out after 0.2 s"),
    ],
)
def test_failing_tool_becomes_an_observation(char_tokenizer, tool, observation):
    make_env = env_factory("tools", {"tools": [tool], "timeout_s": 0.2})
    script = {0: f"<tool>{tool}: 1</tool>", 1: ANSWER}
    (r,) = runner(char_tokenizer, lambda text, turn: script[turn], make_env).run([ITEM], SamplingParams(64))
    assert f"<result>{observation}</result>" in r.completion.text
    assert r.reward == 1.0 and [t.tool for t in r.turns] == [tool, None]


def test_guided_reattempt_replaces_an_all_failed_group(char_tokenizer):
    # Without the hint in its prompt the scripted model answers wrong; with it, it calls the tool.
    def script(text: str, turn: int) -> str:
        if "Hint: use" not in text:
            return "<answer>1</answer><|im_end|>"
        return calculator_script(text, turn)

    other = Item("calc/1", "calc", "What is 1 * 1?", "1")
    run = runner(char_tokenizer, script, guidance=Guidance(threshold=1.0))
    rollouts = run.run([ITEM, other], SamplingParams(32, n=2))
    assert [(r.group, r.reward) for r in rollouts] == [(0, 1.0), (0, 1.0), (1, 1.0), (1, 1.0)]
    guided = rollouts[0]
    hinted = encode_prompt(char_tokenizer, Item("x", "calc", f"{ITEM.prompt}\nHint: {ITEM.meta['hint']}"), None)
    assert guided.prompt_ids == hinted and guided.item == ITEM
    assert run.stats["env/guided_groups"] == 1.0
    # Evaluation never hints.
    assert [r.reward for r in run.run([ITEM], SamplingParams(32), guided=False)] == [0.0]
