"""Image prompts: items carry their images through the data layer, the model's processor and a checkpoint; the
engine, the learner and the shared-prompt path read the same image inputs, so behaviour log-probs, teacher-forced
log-probs and shared-prompt log-probs agree on image prompts as they do on text."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import single_thread
from PIL import Image
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.idefics3.processing_idefics3 import Idefics3Processor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from verity.data.config import TaskConfig
from verity.data.images import item_key, load_image
from verity.data.prompts import encode_prompt
from verity.data.sources import build_source
from verity.data.visual import KINDS, shapes
from verity.model_config import ModelConfig
from verity.modeling import token_logprobs
from verity.models import load_policy
from verity.rewards.labels import classification
from verity.rollout.engine import SamplingParams
from verity.rollout.hf import HFEngine
from verity.schema import ConfigError
from verity.tokenizer import VL_CHAT_TEMPLATE, build_char_tokenizer
from verity.train.batching import collate
from verity.train.config import LoraConfig
from verity.train.lora import apply_lora, save_policy
from verity.train.prefix import prompt_groups, shared_prefix_logprobs
from verity.types import Item, PromptIds, Rollout
from verity.vision import freeze_vision, load_processor, media_of
from verity.vision_base import build_tiny_vl

pytestmark = pytest.mark.usefixtures("one_thread")


def picture(colour: str, size: int = 32) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    image.paste(colour, (2, 2, 20, 12))
    return image


QWEN_TEMPLATE = VL_CHAT_TEMPLATE.replace("<image>", "<|vision_start|><|image_pad|><|vision_end|>")


def tiny_qwen2_vl(path: Path) -> tuple[Qwen2VLForConditionalGeneration, object]:
    """A tiny Qwen2-VL (multimodal RoPE) whose processor files are saved as a hub checkpoint's are, and its
    processor loaded back from them."""
    tokenizer = build_char_tokenizer()
    tokenizer.add_tokens(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"], True)
    tokenizer.chat_template = QWEN_TEMPLATE
    tokenizer.save_pretrained(path)
    side = {"shortest_edge": 32 * 32, "longest_edge": 32 * 32}
    Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=1, size=side).save_pretrained(path)
    (path / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2VLProcessor"}))
    ids = {n: tokenizer.convert_tokens_to_ids(f"<|{n}|>") for n in ("vision_start", "vision_end", "image_pad")}
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    text |= {"num_key_value_heads": 2, "vocab_size": len(tokenizer), "max_position_embeddings": 256}
    text |= {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    text["rope_scaling"] = {"type": "mrope", "mrope_section": [2, 3, 3]}
    vision = {"depth": 1, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "patch_size": 8}
    vision |= {"spatial_merge_size": 2, "temporal_patch_size": 1, "mlp_ratio": 2}
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["image_pad"],
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2VLForConditionalGeneration(config), load_processor(path)


def tiny_idefics3() -> tuple[Idefics3ForConditionalGeneration, object]:
    """A tiny Idefics3 (the SmolVLM architecture): a SigLIP-style tower, pixel shuffle, a Llama decoder."""
    tokenizer = build_char_tokenizer()
    tokenizer.add_tokens(["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"], True)
    tokenizer.chat_template = VL_CHAT_TEMPLATE
    side = {"longest_edge": 32}
    images = Idefics3ImageProcessorPil(do_image_splitting=False, size=side, max_image_size=side)
    processor = Idefics3Processor(images, tokenizer, image_seq_len=4, chat_template=VL_CHAT_TEMPLATE)
    text = {"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64}
    text |= {"num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2}
    text |= {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = Idefics3Config(
        vision_config={**vision, "image_size": 32, "patch_size": 8},
        text_config=text,
        scale_factor=2,  # 16 patches shuffled into 4 image tokens
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    return Idefics3ForConditionalGeneration(config), processor


@pytest.fixture(scope="module", params=["llava", "qwen2_vl", "idefics3"])
def vl(request, tmp_path_factory) -> Iterator:
    """A randomly initialised tiny vision-language model and its processor: LLaVA-style (the tiny-vl base),
    Qwen2-VL (multimodal RoPE: image tokens get 2-D positions, and the text after them a shifted start) or
    Idefics3 (SmolVLM's architecture: images as a batch-first (B, images, C, H, W) input)."""
    with single_thread():
        torch.manual_seed(0)
        if request.param == "qwen2_vl":
            model, processor = tiny_qwen2_vl(tmp_path_factory.mktemp("qwen"))
        elif request.param == "idefics3":
            model, processor = tiny_idefics3()
        else:
            settings = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}
            cfg = ModelConfig(tiny=settings, tiny_vision={"image_size": 16, "patch_size": 8, "hidden_size": 16})
            model, processor = build_tiny_vl(cfg, build_char_tokenizer())
        yield model.eval(), processor


def tower_name(model) -> str:
    """The vision tower's attribute name in each family's base model."""
    return next(n for n in ("vision_tower", "visual", "vision_model") if hasattr(model.model, n))


def image_token(model) -> int:
    return model.config.image_token_id


def encode(processor, text: str, *images: Image.Image) -> list[int]:
    item = Item(id="x", task="t", prompt=text, images=images)
    return encode_prompt(processor.tokenizer, item, None, processor=processor)


def test_rows_with_images_become_items(tmp_path: Path) -> None:
    red, blue = picture("red"), picture("blue")
    red.save(tmp_path / "red.png")
    blob = io.BytesIO()
    blue.save(blob, format="PNG")
    path = tmp_path / "rows.jsonl"  # a path relative to the file; the last row (held out) is text only
    rows = [{"prompt": "Colour?", "answer": "red", "images": "red.png"}, {"prompt": "Text only", "answer": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    source = build_source(TaskConfig(source="jsonl", name="c", path=str(path)), 0, 1)
    first = source.train_item(0)
    assert load_image(first.images[0]).tobytes() == red.tobytes()
    assert source.eval_items(1)[0].images == ()
    # A datasets-style image cell ({"bytes", "path"}) in a parquet column named by image_field.
    table = pa.table({"q": ["Colour?", "Colour?"], "answer": ["blue", "red"]})
    cells = [{"bytes": blob.getvalue(), "path": None}, {"bytes": None, "path": str(tmp_path / "red.png")}]
    pq.write_table(table.append_column("picture", pa.array(cells)), tmp_path / "rows.parquet")
    task = TaskConfig(source="parquet", name="p", path=str(tmp_path / "rows.parquet"), prompt_field="q")
    second = build_source(task.model_copy(update={"image_field": "picture"}), 0, 1).train_item(0)
    assert load_image(second.images[0]).tobytes() == blue.tobytes()
    assert "images" not in first.meta
    assert load_image(np.asarray(red)).tobytes() == red.tobytes()
    # The same question about different images is a different item (held-out checks).
    assert item_key(first) != item_key(second) and first.prompt == second.prompt
    assert item_key(source.eval_items(1)[0]) == "Text only"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "answer": "a", "images": "missing.png"}) + "\n" * 2)
    with pytest.raises(ConfigError, match="image file not found"):
        build_source(TaskConfig(source="jsonl", name="b", path=str(bad)), 0, 1)


def test_visual_tasks_are_deterministic_and_answer_from_their_labels() -> None:
    for kind in KINDS:
        a, b = shapes(7, 3, kind=kind), shapes(7, 3, kind=kind)
        assert a["answer"] in a["labels"] and a["prompt"] == b["prompt"]
        assert a["images"][0].tobytes() == b["images"][0].tobytes()
    counts = {shapes(0, i, kind="count")["answer"] for i in range(50)}
    assert counts == {"1", "2", "3", "4"}
    # CLS-RL: the label set rides on the row, so the classification verifier rejects answers outside it.
    row = shapes(0, 0, kind="colour")
    assert classification(f"<answer>{row['answer']}</answer>", answer=row["answer"], labels=row["labels"]) == 1.0
    assert classification("<answer>purple</answer>", answer=row["answer"], labels=row["labels"]) == 0.0


def test_processor_and_checkpoint_round_trip(vl, tmp_path: Path) -> None:
    model, processor = vl
    ids = encode(processor, "Colour?", picture("red"))
    assert isinstance(ids, PromptIds)
    # LLaVA: a 16-pixel image in 8-pixel patches; Qwen2-VL: 32 pixels, 8-pixel patches merged 2 x 2.
    assert ids.count(image_token(model)) == 4
    assert "pixel_values" in media_of(ids)
    save_policy(model, processor, tmp_path / "m")
    loaded, tokenizer = load_policy(tmp_path / "m")
    again = encode(load_processor(tmp_path / "m"), "Colour?", picture("red"))
    assert list(again) == list(ids) and tokenizer.padding_side == "left"
    torch.testing.assert_close(media_of(again)["pixel_values"], media_of(ids)["pixel_values"])
    batch = collate([_rollout(ids, [5, 6, 7])], 0)
    with torch.no_grad():
        torch.testing.assert_close(token_logprobs(loaded, batch, 1.0)[0], token_logprobs(model, batch, 1.0)[0])


def _rollout(prompt: list[int], completion: list[int], group: int = 0) -> Rollout:
    from verity.types import Completion

    done = Completion(completion, [0.0] * len(completion), "", "stop")
    return Rollout(item=Item(id="x", task="t", prompt=""), group=group, prompt_ids=prompt, completion=done)


def test_learner_logprobs_equal_a_teacher_forced_forward(vl) -> None:
    model, processor = vl
    prompts = [encode(processor, "Colour?", picture("red")), encode(processor, "Which one?", picture("blue"))]
    batch = collate([_rollout(prompts[0], [5, 6, 7, 8]), _rollout(prompts[1], [9, 10])], 0)
    with torch.no_grad():
        ours, _ = token_logprobs(model, batch, 0.7)
        for row, prompt in enumerate(prompts):
            length = int(batch.attention_mask[row].sum())
            ids = batch.input_ids[row : row + 1, :length]
            # The model's own forward, which computes its own (multimodal) positions.
            media = media_of(prompt)
            extra = {"mm_token_type_ids": (ids == image_token(model)).int()} if "image_grid_thw" in media else {}
            logits = model(input_ids=ids, **media, **extra).logits / 0.7
            for placeholder in (image_token(model), getattr(model.config, "video_token_id", None)):
                if placeholder is not None:  # the policy never writes a placeholder
                    logits[..., placeholder] = -torch.inf
            expected = torch.log_softmax(logits[0, :-1], -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
            start = len(prompt)  # completion positions (a prompt's own placeholders are never scored)
            torch.testing.assert_close(ours[row, start:length], expected[start - 1 :], atol=1e-5, rtol=0)
    # The image is read: the same words about another picture give other log-probs.
    other = collate([_rollout(encode(processor, "Colour?", picture("green")), [5, 6, 7, 8])], 0)
    with torch.no_grad():
        assert not torch.allclose(token_logprobs(model, other, 0.7)[0][0], ours[0, : other.input_ids.shape[1]])


def test_engine_logprobs_match_the_learner_on_image_prompts(vl) -> None:
    model, processor = vl
    colours = ["red", "blue", "green"]
    prompts = [encode(processor, "Colour?", picture(c)) for c in colours]
    prompts.append(encode(processor, "A longer question here?", picture("yellow")))  # left padding
    engine = HFEngine(model, processor.tokenizer, seed=1)
    outputs = engine.generate(prompts, SamplingParams(max_new_tokens=6, temperature=0.8, n=3))
    rollouts = [
        _rollout(p, c.token_ids, g) for g, (p, outs) in enumerate(zip(prompts, outputs, strict=True)) for c in outs
    ]
    batch = collate(rollouts, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        teacher, _ = token_logprobs(model, batch, 0.8)
    behaviour = torch.tensor([lp for outs in outputs for c in outs for lp in c.logprobs])
    torch.testing.assert_close(behaviour, teacher[batch.loss_mask.bool()], atol=1e-4, rtol=0)
    assert engine.logprobs(prompts[:1], [outputs[0][0].token_ids], 0.8)[0] == pytest.approx(
        outputs[0][0].logprobs, abs=1e-4
    )


def test_shared_prompt_path_equals_the_plain_path_with_images(vl) -> None:
    model, processor = vl
    red, blue = encode(processor, "Colour?", picture("red")), encode(processor, "Colour?", picture("blue"))
    rows = [_rollout(red, [5, 6, 7], 0), _rollout(red, [8, 9], 0), _rollout(blue, [5, 6, 7], 1)]
    rows.append(_rollout(blue, [10, 11, 12, 13], 1))
    batch = collate(rows, 0)
    groups = prompt_groups(batch)
    assert groups is not None
    assert groups[1].tolist() == [0, 0, 1, 1]  # same words, other image: another prefix
    model.train()
    plain, _ = token_logprobs(model, batch, 1.0)
    (plain * batch.loss_mask).sum().backward()
    plain_grads = grads(model)
    model.zero_grad()
    shared, _ = shared_prefix_logprobs(model, batch, groups, 1.0, False)
    (shared * batch.loss_mask).sum().backward()
    shared_grads = grads(model)
    model.zero_grad()
    model.eval()
    mask = batch.loss_mask.bool()
    torch.testing.assert_close(shared[mask], plain[mask].detach(), atol=1e-5, rtol=0)
    names = [n for n, _ in model.named_parameters()]
    tower = [g for n, g in zip(names, plain_grads, strict=True) if f".{tower_name(model)}." in n]
    assert tower and any(g.abs().sum() > 0 for g in tower)  # the vision tower trains too
    for shared_grad, plain_grad in zip(shared_grads, plain_grads, strict=True):
        torch.testing.assert_close(shared_grad, plain_grad, atol=1e-5, rtol=1e-4)


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def test_freeze_vision_leaves_the_language_model_trainable(vl) -> None:
    import copy

    model = copy.deepcopy(vl[0])
    frozen = freeze_vision(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert frozen > 0 and trainable
    assert not any(f".{tower_name(model)}." in n or "projector" in n or "connector" in n for n in trainable)
    assert all(p.requires_grad for p in model.get_decoder().parameters())


def test_text_model_refuses_image_items() -> None:
    tokenizer = build_char_tokenizer()
    item = Item(id="1", task="t", prompt="Colour?", images=(picture("red"),))
    with pytest.raises(ConfigError, match="no image processor"):
        encode_prompt(tokenizer, item, None)


def test_vllm_engine_refuses_image_prompts() -> None:
    from verity.rollout.vllm import VLLMEngine

    prompt = PromptIds([1, 2], {"pixel_values": torch.zeros(1, 3, 4, 4)})
    with pytest.raises(ConfigError, match="the vllm engine does not take image prompts"):
        VLLMEngine.generate(None, [prompt], SamplingParams(max_new_tokens=2))


@pytest.mark.parametrize("vision", ["frozen", "lora", "full"])
def test_lora_on_the_language_model_with_the_vision_tower_frozen_or_trained(vl, vision: str) -> None:
    import copy

    model, processor = vl
    tower = tower_name(model)
    policy = apply_lora(copy.deepcopy(model), LoraConfig(r=2, target_modules="all-linear", vision=vision))
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    in_tower = [n for n in trainable if f".{tower}." in n]
    language = "text_model" if hasattr(model.model, "text_model") else "language_model"
    assert any(f".{language}." in n and "lora_" in n for n in trainable)
    if vision == "frozen":
        assert not in_tower
    elif vision == "lora":
        assert in_tower and all("lora_" in n for n in in_tower)
    else:
        assert in_tower and not any("lora_" in n for n in in_tower)
    # The adapted model reads images: its log-probs equal the base model's (adapters start at zero).
    batch = collate([_rollout(encode(processor, "Colour?", picture("red")), [5, 6, 7])], 0)
    with torch.no_grad():
        torch.testing.assert_close(token_logprobs(policy, batch, 1.0)[0], token_logprobs(model, batch, 1.0)[0])


def test_prompt_ids_keep_their_images_when_continued_and_pickled() -> None:
    import pickle

    prompt = PromptIds([1, 2, 3], {"pixel_values": torch.arange(6.0).view(1, 6)})
    tail = [4, 5]
    continued = prompt + tail  # a partial completion or an environment's reply: the same images
    assert list(continued) == [1, 2, 3, 4, 5] and media_of(continued) is prompt.media
    assert media_of(prompt[:2]) is None and list(prompt) == [1, 2, 3]
    back = pickle.loads(pickle.dumps([prompt, prompt]))  # Ray moves rollouts pickled
    assert back[0] == [1, 2, 3] and torch.equal(back[0].media["pixel_values"], prompt.media["pixel_values"])
    assert back[0].media is back[1].media  # one prompt's samples still share one set of inputs
