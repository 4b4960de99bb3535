"""Model merging: each method on hand-computed tensors, and a merge of saved models (and of LoRA adapters) that
``from_pretrained`` loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_llama
from transformers import AutoModelForCausalLM

from verity.model.merge import (
    dare,
    linear,
    merge_models,
    merge_state_dicts,
    task_arithmetic,
    ties,
    trim,
    varm_weights,
)

BASE = torch.tensor([1.0, 1.0, 1.0, 1.0])


def test_linear_and_task_arithmetic_by_hand() -> None:
    a, b = torch.tensor([2.0, 0.0]), torch.tensor([4.0, 2.0])
    assert linear([a, b]).tolist() == [3.0, 1.0]
    assert linear([a, b], [3, 1]).tolist() == [2.5, 0.5]
    with pytest.raises(ValueError, match="2 non-negative numbers"):
        linear([a, b], [1.0])
    base = torch.tensor([1.0, 1.0])
    # tau_a = [1, -1], tau_b = [3, 1]: base + 0.5 * [4, 0]
    assert task_arithmetic(base, [a, b], scale=0.5).tolist() == [3.0, 1.0]


def test_trim_keeps_the_largest_entries() -> None:
    assert trim(torch.tensor([0.1, -3.0, 2.0, -0.5]), 0.5).tolist() == [0.0, -3.0, 2.0, 0.0]
    assert trim(torch.tensor([0.1, -3.0, 2.0, -0.5]), 0.25).tolist() == [0.0, -3.0, 0.0, 0.0]


def test_ties_elects_signs_and_averages_the_agreeing_entries() -> None:
    # task vectors (density 1, nothing trimmed): [2, -1, 0.5, 0], [1, 3, -0.5, 0], [-4, -1, 0, 0]
    models = [
        BASE + torch.tensor(d) for d in ([2.0, -1.0, 0.5, 0.0], [1.0, 3.0, -0.5, 0.0], [-4.0, -1.0, 0.0, 0.0])
    ]
    merged = ties(BASE, models, density=1.0, scale=1.0)
    # entry 0: sum -1, sign -, only -4 agrees; entry 1: sum 1, sign +, only 3; entry 2: sum 0, no sign; entry 3: 0
    assert merged.tolist() == [1.0 - 4.0, 1.0 + 3.0, 1.0, 1.0]
    # density 0.5 keeps two entries of each: [2, -1, 0, 0] and [1, 3, 0, 0]; signs of the sum [3, 2]: +, +;
    # entry 0 averages 2 and 1, entry 1 keeps only the agreeing 3
    trimmed = ties(BASE, models[:2], density=0.5, scale=1.0)
    assert trimmed.tolist() == [2.5, 4.0, 1.0, 1.0]


def test_dare_drops_at_its_rate_and_keeps_the_expectation() -> None:
    delta = torch.full((20000,), 2.0)
    dropped = dare(delta, 0.9, torch.Generator().manual_seed(0))
    kept = dropped != 0
    assert kept.float().mean().item() == pytest.approx(0.1, abs=0.01)
    torch.testing.assert_close(dropped[kept], torch.full_like(dropped[kept], 20.0))  # rescaled by 1 / (1 - 0.9)
    assert dropped.mean().item() == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError, match=r"drop must be in \[0, 1\)"):
        dare(delta, 1.0, torch.Generator())


def test_varm_weights_are_shares_of_the_squared_change() -> None:
    base = torch.zeros(2)
    # mean squared changes: (1 + 1) / 2 = 1 and (9 + 9) / 2 = 9
    assert varm_weights(base, [torch.tensor([1.0, -1.0]), torch.tensor([3.0, 3.0])]) == [0.1, 0.9]
    assert varm_weights(base, [base, base]) == [0.5, 0.5]


def test_state_dicts_merge_every_float_parameter_and_name_a_mismatch() -> None:
    base = {"w": torch.zeros(2), "steps": torch.tensor([7])}
    models = [{"w": torch.tensor([1.0, 0.0]), "steps": torch.tensor([9])}, {"w": torch.tensor([0.0, 3.0])}]
    with pytest.raises(ValueError, match="model 1: parameter 'steps' is missing"):
        merge_state_dicts(base, models, "linear")
    models[1]["steps"] = torch.tensor([8])
    merged = merge_state_dicts(base, models, "varm")
    assert merged["steps"].tolist() == [7]  # integers are copied from the base
    assert merged["w"].tolist() == pytest.approx([0.1, 2.7])  # VaRM weights 0.1, 0.9 (squared changes 0.5, 4.5)
    with pytest.raises(ValueError, match="unknown merge method 'soup'"):
        merge_state_dicts(base, models, "soup")


def save(model: torch.nn.Module, tokenizer, path: Path) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def shifted(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def test_saved_models_merge_into_a_loadable_model(tmp_path: Path, char_tokenizer) -> None:
    base = save(tiny_llama(char_tokenizer), char_tokenizer, tmp_path / "base")
    a = save(shifted(tiny_llama(char_tokenizer), 1), char_tokenizer, tmp_path / "a")
    b = save(shifted(tiny_llama(char_tokenizer), 2), char_tokenizer, tmp_path / "b")
    out = merge_models(base, [a, b], tmp_path / "merged", "task_arithmetic", log=lambda m: None, scale=0.5)
    loaded = AutoModelForCausalLM.from_pretrained(out).state_dict()
    states = [AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (base, a, b)]
    for name, tensor in loaded.items():
        expected = states[0][name] + 0.5 * (states[1][name] - states[0][name] + states[2][name] - states[0][name])
        torch.testing.assert_close(tensor, expected)
    assert (out / "merge.json").is_file()


def test_merge_json_records_the_settings_its_method_reads_and_no_other(tmp_path: Path, char_tokenizer) -> None:
    import json

    base = save(tiny_llama(char_tokenizer), char_tokenizer, tmp_path / "base")
    a = save(shifted(tiny_llama(char_tokenizer), 1), char_tokenizer, tmp_path / "a")
    b = save(shifted(tiny_llama(char_tokenizer), 2), char_tokenizer, tmp_path / "b")
    everything = {"scale": 0.5, "density": 0.3, "drop": 0.9, "combine": "task_arithmetic", "seed": 0}
    out = merge_models(base, [a, b], tmp_path / "ties", "ties", log=lambda m: None, **everything)
    record = json.loads((out / "merge.json").read_text())
    assert {k: v for k, v in record.items() if k not in ("base", "models")} == {
        "method": "ties",
        "scale": 0.5,
        "density": 0.3,
    }


def test_lora_adapters_merge_like_the_models_they_make(tmp_path: Path, char_tokenizer) -> None:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    base_dir = save(tiny_llama(char_tokenizer), char_tokenizer, tmp_path / "base")
    adapters, full = [], []
    for seed in (1, 2):
        torch.manual_seed(seed)
        peft = get_peft_model(tiny_llama(char_tokenizer), PeftLoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1)  # a fresh adapter's B is zero: give it a change to merge
        adapters.append(tmp_path / f"adapter{seed}")
        peft.save_pretrained(adapters[-1])
        full.append(save(peft.merge_and_unload(), char_tokenizer, tmp_path / f"full{seed}"))
    from_adapters = merge_models(base_dir, adapters, tmp_path / "m1", "ties", log=lambda m: None, density=0.5)
    from_models = merge_models(base_dir, full, tmp_path / "m2", "ties", log=lambda m: None, density=0.5)
    one = AutoModelForCausalLM.from_pretrained(from_adapters).state_dict()
    two = AutoModelForCausalLM.from_pretrained(from_models).state_dict()
    for name in one:
        torch.testing.assert_close(one[name], two[name])
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(one[q], AutoModelForCausalLM.from_pretrained(base_dir).state_dict()[q])


def test_the_merge_command_writes_a_linear_merge(tmp_path: Path, char_tokenizer, capsys) -> None:
    from verity.cli.main import main

    base = save(tiny_llama(char_tokenizer), char_tokenizer, tmp_path / "base")
    a = save(shifted(tiny_llama(char_tokenizer), 1), char_tokenizer, tmp_path / "a")
    b = save(shifted(tiny_llama(char_tokenizer), 2), char_tokenizer, tmp_path / "b")
    out = tmp_path / "soup"
    args = ["merge", str(out), str(a), str(b), "--base", str(base), "--method", "linear", "--weights", "3,1"]
    assert main(args) == 0
    merged = AutoModelForCausalLM.from_pretrained(out).state_dict()
    sa, sb = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (a, b))
    name = "model.layers.1.mlp.up_proj.weight"
    torch.testing.assert_close(merged[name], 0.75 * sa[name] + 0.25 * sb[name])
    assert main(args) == 1 and "exists" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "x"), str(a), "--base", str(base), "--method", "ties"]) == 1
    assert "needs at least two models" in capsys.readouterr().err
