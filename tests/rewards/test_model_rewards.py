"""Model-based verifiers on tiny models built offline: the reward model batches without changing scores and
loads once per process; the judges parse strictly and the PRM keeps the format constraints."""

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from tests.conftest import tiny_llama
from verity.rewards import model_rewards
from verity.rewards.model_rewards import judge, load_model, prm_judge, reward_model

FIELDS = [{"prompt": "1+1"}, {"prompt": "2+2"}, {"prompt": "3+3"}]
TEXTS = ["2", "a much longer answer: 4", "6?"]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory, char_tokenizer) -> Path:
    path = tmp_path_factory.mktemp("rm")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(char_tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128, num_labels=1,
        pad_token_id=char_tokenizer.pad_token_id,
    )  # fmt: skip
    LlamaForSequenceClassification(config).save_pretrained(path)
    char_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory: pytest.TempPathFactory, char_tokenizer) -> Path:
    path = tmp_path_factory.mktemp("judge")
    tiny_llama(char_tokenizer).save_pretrained(path)
    char_tokenizer.save_pretrained(path)
    return path


def test_reward_model_batches_without_changing_scores(classifier_dir: Path) -> None:
    batched = reward_model(TEXTS, FIELDS, model=str(classifier_dir))
    one_by_one = [reward_model([t], [f], model=str(classifier_dir))[0] for t, f in zip(TEXTS, FIELDS, strict=True)]
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    net, tokenizer = load_model("classifier", str(classifier_dir), "cpu")
    enc = tokenizer("1+1\n2", return_tensors="pt")
    with torch.no_grad():
        assert batched[0] == pytest.approx(net(**enc).logits[0, 0].item(), abs=1e-5)
    assert len(set(batched)) == 3  # different texts, different scores


def test_models_load_once_per_process(classifier_dir: Path) -> None:
    first = load_model("classifier", str(classifier_dir), "cpu")
    reward_model(TEXTS, FIELDS, model=str(classifier_dir))
    assert load_model("classifier", str(classifier_dir), "cpu")[0] is first[0]


def test_reward_model_timeout_stops_between_chunks(classifier_dir: Path) -> None:
    scores = reward_model(TEXTS, FIELDS, model=str(classifier_dir), max_batch=1, timeout_s=1e-9)
    assert isinstance(scores[0], float)
    assert [s.reason for s in scores[1:]] == ["timeout after 1e-09s (reward model)"] * 2


def test_untrained_judge_gives_failures_not_guesses(causal_dir: Path) -> None:
    scores = judge(TEXTS[:2], FIELDS[:2], model=str(causal_dir), max_new_tokens=8)
    assert all(s.value == 0.0 and s.reason and s.reason.startswith("judge gave no strict verdict") for s in scores)


def test_judge_parses_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    prompts_seen: list[str] = []

    def fake_generate(model, prompts, *args):
        prompts_seen.extend(prompts)
        return ["looks right\nVerdict: CORRECT", "Verdict: INCORRECT", "Verdict: MAYBE"]

    monkeypatch.setattr(model_rewards, "generate", fake_generate)
    scores = judge(TEXTS, FIELDS, model="unused", template="Q {prompt} A {completion}")
    assert [s.value for s in scores] == [1.0, 0.0, 0.0]
    assert [s.failed for s in scores] == [False, False, True]
    assert prompts_seen[0] == "Q 1+1 A 2"


def test_prm_judge_steps_and_format_constraints(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fake_generate(model, prompts, *args):
        asked.extend(prompts)
        return ["+ -", "+"][: len(prompts)]

    monkeypatch.setattr(model_rewards, "generate", fake_generate)
    texts = ["1+2=3\n3+3=7\n<answer>7</answer>", "1+2=3\n<answer>3</answer>\n<answer>3</answer>"]
    scores = prm_judge(texts, FIELDS[:2], model="unused", separator=r"\n(?=<answer>)")
    # two steps split before the answer tag; the PRM marked the second wrong
    assert scores[0].value == 0.0 and scores[0].steps == ((11, 1.0), (30, 0.0))
    # two final answers break the format: every step 0, and the PRM was never asked
    assert scores[1].value == 0.0 and all(v == 0.0 for _, v in scores[1].steps) and not scores[1].failed
    assert len(asked) == 1 and asked[0] == "1+1\n1. 1+2=3\n3+3=7\n2. <answer>7</answer>\nVerdicts:"
    mean = prm_judge(texts[:1], FIELDS[:1], model="unused", separator=r"\n(?=<answer>)", aggregate="mean")
    assert mean[0].value == 0.5


@pytest.mark.slow  # a worker process imports torch and transformers (~10 s on a busy CPU)
def test_reward_model_in_the_worker_pool_matches_in_process(classifier_dir: Path) -> None:
    from verity.rewards.config import RewardConfig
    from verity.rewards.executor import RewardExecutor
    from verity.types import Item

    spec = {"name": "reward_model", "settings": {"model": str(classifier_dir)}}
    items = [Item(str(i), "t", f["prompt"]) for i, f in enumerate(FIELDS)]
    with RewardExecutor(RewardConfig(verifiers=[spec], workers=1, batch_size=2)) as pool:
        served = [s.value for s in pool.score(items, TEXTS)]
    assert served == pytest.approx(reward_model(TEXTS, FIELDS, model=str(classifier_dir)), abs=1e-5)


def test_model_timeout_must_fit_the_reward_timeout() -> None:
    from verity.rewards.config import RewardConfig

    with pytest.raises(ValueError, match=r"settings.timeout_s \(30 s\) must be below reward.timeout_s"):
        RewardConfig(verifiers=[{"name": "judge", "settings": {"model": "m", "timeout_s": 30}}], timeout_s=30)
