"""The ``model:`` section: the policy, Verity's offline tiny base (architecture and SFT warm-up), dtype, LoRA."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from verity.schema import Section

if TYPE_CHECKING:
    from transformers import LlamaConfig


class TinyModelConfig(Section):
    """Architecture of Verity's offline tiny base model (a Llama-architecture decoder over a small BPE)."""

    vocab_size: int = Field(512, ge=300, description="BPE vocabulary size (256 bytes + merges + special tokens).")
    hidden_size: int = Field(128, gt=0, description="Width of the residual stream.")
    num_layers: int = Field(4, gt=0, description="Number of decoder layers.")
    num_heads: int = Field(4, gt=0, description="Attention heads per layer.")
    intermediate_size: int = Field(384, gt=0, description="Width of the MLP.")
    max_positions: int = Field(512, gt=0, description="Longest prompt + completion, in tokens.")

    def decoder_config(self, tokenizer: Any) -> LlamaConfig:
        """The tiny decoder's transformers config over ``tokenizer`` (the text base, and the language part of the
        tiny vision-language base)."""
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_positions,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )


class TinyVisionConfig(Section):
    """The vision tower of Verity's offline tiny vision-language base (``model.name: tiny-vl``): a small CLIP
    encoder over square images, its patch features projected into the tiny decoder (LLaVA-style)."""

    image_size: int = Field(32, gt=0, description="Images are resized to this many pixels a side.")
    patch_size: int = Field(8, gt=0, description="Pixels a side of one patch (one image token per patch).")
    hidden_size: int = Field(64, gt=0, description="Width of the vision encoder.")
    num_layers: int = Field(2, gt=0, description="Vision encoder layers.")
    num_heads: int = Field(2, gt=0, description="Vision encoder attention heads.")


class WarmupConfig(Section):
    """The SFT warm-up that turns a freshly initialised tiny model into a partly competent base for RL."""

    max_steps: int = Field(600, ge=0, description="Most SFT steps.")
    batch_size: int = Field(64, gt=0, description="Demonstrations per SFT step.")
    lr: float = Field(3e-3, gt=0, description="Peak learning rate (linear warm-up, cosine decay).")
    stop_at_accuracy: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Stop once greedy accuracy on the check items (questions neither held out nor trained on) "
        "reaches this: RL needs room to improve.",
    )
    min_gain_over_majority: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Stop only once check accuracy also beats always giving each task's most frequent answer by "
        "this much: a model that only learned the majority answer is not competent, however high it scores.",
    )
    min_diversity: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Stop, going back to the previous check, once 4 samples at temperature 1 of a check prompt "
        "differ less than this ((distinct - 1) / 3, averaged): a base that answers one answer gives RL groups "
        "with equal rewards, nothing to learn from.",
    )
    check_every: int = Field(25, gt=0, description="Steps between accuracy checks.")
    check_items: int = Field(
        100,
        gt=0,
        description="Items per accuracy check: training questions set aside (never held out, never trained on in "
        "the warm-up); a task with fewer than three times its share of questions gets a third of them.",
    )


class LoraConfig(Section):
    """Low-rank adapters (Hu et al. 2021, LoRA) via peft: W x + (alpha / r) B A x, with only A and B trained."""

    r: int = Field(16, gt=0, description="Rank of each adapter.")
    alpha: float = Field(32.0, gt=0, description="Scale numerator: the update is multiplied by alpha / r.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: list[str] | str = Field(
        "all-linear",
        description="Module names to adapt (e.g. [q_proj, v_proj]), or 'all-linear' for every linear layer.",
    )
    save: Literal["merged", "adapter"] = Field(
        "merged", description="Final model: adapters merged into a plain model, or the adapter alone."
    )
    vision: Literal["frozen", "lora", "full"] = Field(
        "frozen",
        description="A vision-language model's vision tower and projector: kept fixed (adapters on the language "
        "model only), given adapters too, or trained in full beside the language model's adapters.",
    )


class ModelConfig(Section):
    """The policy model: Verity's built-in tiny base, a local Hugging Face directory, or a hub id."""

    name: str = Field(
        "tiny",
        description="'tiny' (built offline and cached), 'tiny-vl' (the same with a vision tower, for image "
        "tasks), a local directory, or a hub id.",
    )
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="Settings of the built-in base.")
    tiny_vision: TinyVisionConfig = Field(
        default_factory=TinyVisionConfig, description="Vision tower of the built-in 'tiny-vl' base."
    )
    freeze_vision: bool = Field(
        False, description="Keep a vision-language model's vision tower (and projector) fixed during RL."
    )
    warmup: WarmupConfig = Field(default_factory=WarmupConfig, description="SFT warm-up of the built-in base.")
    cache_dir: str | None = Field(None, description="Where built bases are cached (default ~/.cache/verity).")
    hub_timeout_s: float = Field(
        15.0,
        gt=0,
        description="Longest wait for the Hugging Face hub to answer whether a hub id exists, before a one-line "
        "error (a model already in the local hub cache is not looked up).",
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field("auto", description="Weights dtype.")
    lora: LoraConfig | None = Field(None, description="Train LoRA adapters instead of every weight.")
