"""The SPARK pipeline's pieces: the PRM's training format parses back to its labels, noiseless votes equal the
exact labels, and every RL arm is a valid run config."""

import pytest

from verity.config import load_config
from verity.model.tokenizer import build_char_tokenizer
from verity.recipes.spark.compare import ARMS, arm_overrides
from verity.recipes.spark.pipeline import SparkOptions, label_stage, prm_example
from verity.rewards.judging import parse_step_verdicts
from verity.types import Item

ITEM = Item("1", "running_sum", "Add step by step: 3 5 8", "16", meta={"terms": [3, 5, 8]})


def test_prm_target_parses_back_to_its_labels() -> None:
    tokenizer = build_char_tokenizer()
    prompt, target = prm_example(tokenizer, ITEM, "3+5=8\n8+8=17\n<answer>17</answer>", [True, False, True])
    assert tokenizer.decode(prompt).endswith("1. 3+5=8\n2. 8+8=17\n3. <answer>17</answer>\nVerdicts:")
    assert target[-1] == tokenizer.eos_token_id
    assert parse_step_verdicts(tokenizer.decode(target[:-1]), 3) == [1.0, 0.0, 1.0]


def test_noiseless_votes_are_the_exact_labels() -> None:
    solutions = [(ITEM, "x", [True, False]), (ITEM, "y", [False, False, True])]
    labels, report = label_stage(solutions, SparkOptions(noise=0.0, verifications=3), seed=0)
    assert labels["majority"] == labels["single"] == labels["exact"] == [[True, False], [False, False, True]]
    assert report["majority"]["f1"] == 1.0 and report["wrong_step_share"] == pytest.approx(3 / 5)


def test_every_arm_is_a_valid_run(tmp_path) -> None:
    for arm in ARMS:
        overrides = arm_overrides(arm, tmp_path / "prm", 8, {"min_steps": 3}, tmp_path / "orm")
        cfg = load_config("examples/spark.yaml", overrides)
        names = [v.name for v in cfg.reward.verifiers]
        expected = {"spark": "prm_judge", "prm_outcome": "prm_judge", "rm_outcome": "reward_model"}
        assert names == [expected.get(arm, "sum_steps")]
        assert cfg.algo.advantage == ("grpo_process" if arm in ("spark", "process_exact") else "grpo")
        if names == ["prm_judge"]:
            assert cfg.reward.verifiers[0].settings["min_steps"] == 3
    with pytest.raises(ValueError, match="unknown arm"):
        arm_overrides("ppo", tmp_path, 8)
    with pytest.raises(ValueError, match="orm-steps"):
        arm_overrides("rm_outcome", tmp_path, 8)


@pytest.mark.slow  # builds (or reuses) the tiny base, samples, trains a PRM: about a minute
def test_verity_spark_end_to_end(tmp_path, capsys) -> None:
    import json

    from verity.cli.main import main

    args = ["spark", "examples/spark.yaml", "--out", str(tmp_path), "--prompts", "32", "--solutions", "8"]
    args += ["--eval-prompts", "8", "--prm-steps", "300", "--prm-labels", "exact", "--orm-steps", "20"]
    assert main(args) == 0
    result = json.loads((tmp_path / "spark.json").read_text())
    labels, prm = result["labels"], result["prm_held_out"]["exact"]
    assert labels["majority"]["f1"] > labels["single"]["f1"]  # five votes beat one at noise 0.3
    assert prm["parsed"] >= 0.8  # the PRM learned to write one mark per step (an untrained one: 0)
    assert (
        0.0 <= result["orm_held_out"]["accuracy"] <= 1.0 and (tmp_path / "orm_majority" / "config.json").is_file()
    )
    assert "PRM on exact labels (held-out)" in capsys.readouterr().out
