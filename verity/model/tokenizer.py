"""Tokenizers built offline, with a chat template, saved in Hugging Face format.

``build_bpe_tokenizer`` trains a byte-level BPE on text of the run's tasks (every digit stays its own token, so
numbers are spelled digit by digit); ``build_char_tokenizer`` makes one token of each printable character. In both,
the chat markers and the answer tags are single tokens, so a tiny model spends its capacity on the task rather
than on spelling the format.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
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
IMAGE = "<image>"
# The same turns, with a user turn's content either text or a list of image and text parts (one IMAGE
# placeholder per image, which the model's processor expands to the image's tokens).
VL_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<|system|>{% elif m['role'] == 'user' %}<|user|>"
    "{% else %}<|assistant|>{% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

SPECIALS = [PAD, BOS, EOS, "<|unk|>", *CHAT_MARKERS]


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer over printable ASCII plus the special and tag tokens (left padding)."""
    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + TAGS + chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    return _wrap(core)


def build_bpe_tokenizer(corpus: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``corpus``: any text encodes (all 256 bytes are in the vocabulary), frequent
    words of the tasks become single tokens, and digits are never merged."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(corpus, trainer)
    return _wrap(core)


def _wrap(core: Tokenizer) -> PreTrainedTokenizerFast:
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
