"""The streamed export of a sharded learner's weights: a tied output head is stored once, as save_pretrained
stores it, and the model loads back equal."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import tiny_llama
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from verity.train.export import save_streamed


def test_a_tied_output_head_is_stored_once_and_loads_back_tied(tmp_path: Path, char_tokenizer) -> None:
    model = tiny_llama(char_tokenizer, tie_word_embeddings=True)
    model.save_pretrained(tmp_path / "base")
    # what the fsdp2 ranks stream: every name of the state dict, the head as a tensor of its own
    weights = [(name, tensor.clone()) for name, tensor in model.state_dict().items()]
    assert any(name == "lm_head.weight" for name, _ in weights)
    save_streamed(weights, tmp_path / "out", str(tmp_path / "base"), char_tokenizer, shard_mb=1.0)
    stored = {k for f in (tmp_path / "out").glob("*.safetensors") for k in load_file(f)}
    assert "lm_head.weight" not in stored and "model.embed_tokens.weight" in stored
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert torch.equal(loaded.lm_head.weight, model.model.embed_tokens.weight)
