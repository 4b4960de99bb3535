"""A character-level tokenizer built offline, with a chat template, saved in Hugging Face format.

Each printable ASCII character is one token; the chat markers and the answer tags are single tokens, so a tiny
model spends its capacity on the task rather than on spelling the format.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|im_end|>"
CHAT_MARKERS = ["<|system|>", "<|user|>", "<|assistant|>"]
TAGS = ["<answer>", "</answer>", "<think>", "</think>", "<tool>", "</tool>", "<result>", "</result>"]

# A short template: the tiny model pays for every prompt token in every forward pass.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<|system|>{{ m['content'] }}<|im_end|>"
    "{% elif m['role'] == 'user' %}<|user|>{{ m['content'] }}<|im_end|>"
    "{% else %}<|assistant|>{{ m['content'] }}<|im_end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer over printable ASCII plus the special and tag tokens (left padding)."""
    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    specials = [PAD, BOS, EOS, "<|unk|>", *CHAT_MARKERS]
    vocab = {tok: i for i, tok in enumerate(specials + TAGS + chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token="<|unk|>",
        additional_special_tokens=CHAT_MARKERS,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tok.add_tokens(TAGS)
    tok.chat_template = CHAT_TEMPLATE
    return tok
