"""Offline tokenizers: saved in Hugging Face format, reloaded by AutoTokenizer, and exact on text."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from verity.model.tokenizer import CHAT_MARKERS, EOS, PAD, TAGS, build_bpe_tokenizer, build_char_tokenizer

TEXTS = [
    "What is 12 + 7?",
    "  two leading spaces, three   inside, trailing  ",
    "line one\nline two\n\n\tindented line\n",
    "<answer>19</answer>",
    "<think>3 * 4 = 12</think> so <answer>-0.5</answer>",
    "digits 0123456789 and 1000000",
]
CORPUS = ["What is 3 + 4?", "<answer>7</answer>", "Compute 12 - 5 and state the answer."] * 30


@pytest.fixture(params=["char", "bpe"])
def saved(request: pytest.FixtureRequest, tmp_path: Path):
    built = build_char_tokenizer() if request.param == "char" else build_bpe_tokenizer(CORPUS, 300)
    built.save_pretrained(tmp_path)
    return built, AutoTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("text", TEXTS)
def test_reloaded_tokenizer_round_trips_text(saved, text: str) -> None:
    built, reloaded = saved
    ids = reloaded.encode(text, add_special_tokens=False)
    assert ids == built.encode(text, add_special_tokens=False)
    assert reloaded.decode(ids) == text


def test_markers_and_tags_are_single_tokens(saved) -> None:
    _, tok = saved
    for marker in [PAD, EOS, *CHAT_MARKERS, *TAGS]:
        ids = tok.encode(marker, add_special_tokens=False)
        assert len(ids) == 1, marker
        assert tok.convert_ids_to_tokens(ids[0]) == marker
    assert (tok.pad_token, tok.eos_token, tok.padding_side) == (PAD, EOS, "left")


def test_digits_are_one_token_each() -> None:
    tok = build_bpe_tokenizer(CORPUS + ["1234 1234 1234 12 12 12 34 34"] * 50, 300)
    assert len(tok.encode("1234", add_special_tokens=False)) == 4


def test_chat_template_after_reload(saved) -> None:
    _, tok = saved
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1 + 1?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|system|>Be brief.<|im_end|><|user|>1 + 1?<|im_end|><|assistant|>"
    # decoding without special tokens leaves only the contents
    assert tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=True) == "Be brief.1 + 1?"
