"""Loading a policy and its tokenizer: a Hugging Face causal LM or image-text-to-text model, from a directory or a
hub id, with errors that say what to do for a path that is not a model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    PreTrainedModel,
)

from verity.model.modeling import check_output_head
from verity.model.vision import is_vision_config
from verity.schema import ConfigError


def check_model_path(name: str | Path) -> None:
    """Fail at once, with what to do, for a model name that looks like a local path but is not a model directory
    (instead of sending it to the hub, which retries for a minute). A hub id is ``org/name``; anything that
    starts like a path, has more than one ``/``, or whose first part is a local directory, is a path."""
    text = str(name)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model.name: {text} is a directory but not a Hugging Face model directory (no config.json); "
                "name the folder that holds config.json and the tokenizer files, e.g. RUN_DIR/final_model"
            )
        return
    first = text.split("/", 1)[0]
    path_like = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    path_like = path_like or ("/" not in text and "." in text)  # weights.bin: hub ids are org/name
    if path.exists() or path_like or ("/" in text and Path(first).is_dir()):
        raise ConfigError(
            f"model.name: no model directory at {path}; check the path (relative paths start from the current "
            f"directory, {Path.cwd()}), or use 'tiny' or a hub id such as Qwen/Qwen2.5-0.5B-Instruct"
        )


def check_hub_model(name: str, timeout_s: float) -> None:
    """For a hub id not in the local hub cache: fail within ``timeout_s`` seconds, in one line, when the hub does
    not answer or has no such model (instead of retrying for a minute inside the first download). A local
    directory, a cached model and ``HF_HUB_OFFLINE`` skip the question."""
    import os
    import threading

    from huggingface_hub import model_info, try_to_load_from_cache

    check_model_path(name)  # a path that is no model directory: said as such, never asked of the hub
    if Path(name).expanduser().is_dir() or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    answer: list[BaseException | None] = []

    def ask() -> None:
        try:
            model_info(name, timeout=timeout_s)
            answer.append(None)
        except Exception as err:  # every failure is reported below, by its kind
            answer.append(err)

    thread = threading.Thread(target=ask, daemon=True)  # a hung lookup must not keep the process alive
    thread.start()
    thread.join(timeout_s)
    if not answer:
        raise ConfigError(
            f"model.name: the Hugging Face hub did not answer within {timeout_s:g} s "
            f"(model.hub_timeout_s) whether {name!r} exists; check the connection, raise model.hub_timeout_s, or "
            "use a local model directory"
        )
    err = answer[0]
    if err is None:
        return
    kind = type(err).__name__
    if kind in ("RepositoryNotFoundError", "GatedRepoError"):
        raise ConfigError(
            f"model.name: {name!r} is no model on the Hugging Face hub that this machine may read ({kind}); check "
            "the id (org/name), log in with `hf auth login` for a gated or private model, or use a local directory"
        )
    raise ConfigError(
        f"model.name: cannot reach the Hugging Face hub to fetch {name!r} ({kind}: {_first_line(err)}); check "
        "the connection, or use a local model directory (or set HF_HUB_OFFLINE=1 to use the local hub cache only)"
    )


def load_tokenizer(name_or_path: str | Path) -> Any:
    """The tokenizer of a model directory or hub id, padding on the left, with a pad token."""
    check_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, padding_side="left")
    except (OSError, ValueError) as err:  # ValueError: a directory without tokenizer files
        raise ConfigError(f"model.name: no usable tokenizer in {name_or_path!r}: {_first_line(err)}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(name_or_path: str | Path, dtype: str = "auto", device: str = "cpu") -> tuple[PreTrainedModel, Any]:
    """A causal LM, or an image-text-to-text model, and its tokenizer (left padding, a pad token) from a
    directory or hub id."""
    tokenizer = load_tokenizer(name_or_path)
    torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    try:
        auto = AutoModelForImageTextToText if is_vision_config(AutoConfig.from_pretrained(name_or_path)) else None
        model = (auto or AutoModelForCausalLM).from_pretrained(name_or_path, dtype=torch_dtype[dtype])
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.name: cannot load {name_or_path!r}: {_first_line(err)}") from None
    if device == "cpu" and model.dtype != torch.float32:
        model = model.float()
    model = model.to(device)
    try:
        check_output_head(model)
    except ValueError as err:
        raise ConfigError(f"model.name: {name_or_path}: {err}") from None
    return model, tokenizer


def parameter_count(path: str | Path) -> int | None:
    """Parameters of a model directory, read from its safetensors headers without loading a tensor; None for a
    hub id or weights in another format."""
    from safetensors import safe_open

    files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(file, framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
                total += math.prod(weights.get_slice(name).get_shape())
    return total


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
