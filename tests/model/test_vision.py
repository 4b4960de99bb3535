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
from helpers.vision_models import encode, picture, rollout_of, tiny_idefics3, tiny_qwen2_vl

from verity.data.config import TaskConfig
from verity.data.images import item_key, load_image
from verity.data.prompts import encode_prompt
from verity.data.sources import build_source
from verity.data.visual import KINDS, shapes
from verity.model.config import LoraConfig, ModelConfig
from verity.model.loading import load_policy
from verity.model.lora import apply_lora, save_policy
from verity.model.modeling import token_logprobs
from verity.model.tiny_vl import build_tiny_vl
from verity.model.tokenizer import build_char_tokenizer
from verity.model.vision import freeze_vision, load_processor, media_of
from verity.rewards.labels import classification
from verity.rollout.hf import HFEngine
from verity.schema import ConfigError
from verity.train.batching import collate
from verity.train.prefix import prompt_groups, shared_prefix_logprobs
from verity.types import Item, PromptIds, SamplingParams

pytestmark = pytest.mark.usefixtures("one_thread")


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
    batch = collate([rollout_of(ids, [5, 6, 7])], 0)
    with torch.no_grad():
        torch.testing.assert_close(token_logprobs(loaded, batch, 1.0)[0], token_logprobs(model, batch, 1.0)[0])


def test_learner_logprobs_equal_a_teacher_forced_forward(vl) -> None:
    model, processor = vl
    prompts = [encode(processor, "Colour?", picture("red")), encode(processor, "Which one?", picture("blue"))]
    batch = collate([rollout_of(prompts[0], [5, 6, 7, 8]), rollout_of(prompts[1], [9, 10])], 0)
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
    other = collate([rollout_of(encode(processor, "Colour?", picture("green")), [5, 6, 7, 8])], 0)
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
        rollout_of(p, c.token_ids, g)
        for g, (p, outs) in enumerate(zip(prompts, outputs, strict=True))
        for c in outs
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
    rows = [rollout_of(red, [5, 6, 7], 0), rollout_of(red, [8, 9], 0), rollout_of(blue, [5, 6, 7], 1)]
    rows.append(rollout_of(blue, [10, 11, 12, 13], 1))
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


def test_an_image_prompt_keeps_its_unexpanded_form_for_vllm(vl) -> None:
    """vLLM expands image placeholders itself: it gets the rendered prompt with one placeholder per image, then
    whatever continued the prompt, and the images."""
    import pickle

    from verity.rollout.vllm import _request_input

    model, processor = vl
    red = picture("red")
    ids = encode(processor, "Colour?", red)
    raw = ids.unexpanded()
    assert raw.count(image_token(model)) == 1 < ids.count(image_token(model))
    assert raw == processor.tokenizer(processor.decode(raw))["input_ids"]
    continued = pickle.loads(pickle.dumps(ids + [5, 6]))  # noqa: RUF005 (PromptIds + keeps the images)
    request = _request_input(continued)
    assert request["prompt_token_ids"] == [*raw, 5, 6]
    assert request["multi_modal_data"]["image"][0].tobytes() == red.tobytes()
    assert _request_input([1, 2]) == {"prompt_token_ids": [1, 2]}


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
    batch = collate([rollout_of(encode(processor, "Colour?", picture("red")), [5, 6, 7])], 0)
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
