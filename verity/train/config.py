"""The ``train:`` section (optimisation of the policy) and LoRA's settings (``model.lora``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from verity.schema import Section


class FsdpConfig(Section):
    """The sharded learner group (``train.strategy: fsdp2``, docs/distributed.md)."""

    cpu_offload: bool = Field(
        False, description="Keep sharded parameters, gradients and optimizer state in CPU memory (GPU runs)."
    )
    mixed_precision: bool = Field(
        True,
        description="On GPU: bf16 parameters in forward and backward, fp32 gradient reduction and master weights.",
    )
    bucket_mb: float = Field(
        64.0, gt=0, description="Weights gathered and streamed to the engines this many MB at a time."
    )
    start_timeout_s: float = Field(
        300.0, gt=0, description="Longest wait for the learner processes to start and load the model."
    )
    timeout_s: float = Field(
        1800.0,
        gt=0,
        description="Longest wait for one learner command (a step, log-probs, a weight sync, a save).",
    )


class ExtrapolateConfig(Section):
    """NExt-style jumps along the adapters' rank-1 trajectory (docs/extrapolation.md); needs model.lora."""

    enabled: bool = Field(False, description="Extrapolate the LoRA adapters' trajectory during training.")
    every: int = Field(10, gt=0, description="RL steps between jumps.")
    history: int = Field(
        5, ge=3, description="Recorded points each fit uses: the adapters after each of the latest steps."
    )
    horizon: float = Field(5.0, gt=0, description="How many RL steps ahead each jump predicts.")
    degree: int = Field(
        2, ge=1, le=3, description="Degree of the polynomial fitted to the rank-1 coefficients (1: linear)."
    )
    optimizer: Literal["keep", "reset"] = Field(
        "keep", description="AdamW moments after a jump: keep them, or reset them (and their step count)."
    )

    @model_validator(mode="after")
    def _window_fits(self) -> ExtrapolateConfig:
        if self.history < self.degree + 2:
            raise ValueError(
                f"history={self.history} points cannot fit a degree-{self.degree} polynomial with any redundancy: "
                f"use history >= {self.degree + 2} or a lower degree"
            )
        if self.history > self.every + 1:
            raise ValueError(
                f"history={self.history} needs every >= {self.history - 1}: a window of points must not span a "
                "jump"
            )
        return self


class TrainConfig(Section):
    """Optimisation of the policy."""

    steps: int = Field(200, ge=0, description="RL steps (one rollout batch each).")
    time_limit_s: float | None = Field(
        None,
        gt=0,
        description="Also stop after the first step that ends this many seconds after RL began in this process "
        "(then checkpoint, evaluate and save as after the last step): compares recipes at equal wall time. "
        "The learning-rate schedule still spans train.steps.",
    )
    lr: float = Field(1e-4, gt=0, description="Peak AdamW learning rate.")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up, in optimizer steps.")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Learning rate after the warm-up: constant, or decaying to min_lr_ratio x lr."
    )
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final learning rate of a decay, as a share of lr.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    epochs: int = Field(1, gt=0, description="Passes over each rollout batch.")
    mini_batches: int = Field(
        1, gt=0, description="Optimizer steps per epoch (the batch is split this many ways)."
    )
    micro_batch_size: int = Field(64, gt=0, description="Sequences per forward/backward (gradient accumulation).")
    micro_batch_tokens: int | None = Field(
        None, gt=0, description="Also cap each micro-batch at this many padded tokens (rows x longest row)."
    )
    share_prompts: bool = Field(
        True, description="Run each group's shared prompt once per training forward (same result, less compute)."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about a third more compute."
    )
    skip_zero_advantage: bool = Field(
        True,
        description="Leave rows whose advantages are all 0 out of the forward and backward when the loss has no "
        "KL or entropy term (their gradient is exactly 0); loss metrics then cover the trained rows.",
    )
    logit_chunk_tokens: int = Field(
        1024,
        gt=0,
        description="Positions whose logits are computed at once for log-probs and entropy (chunk x vocabulary "
        "floats; the full batch x length x vocabulary logits never exist).",
    )
    strategy: Literal["single", "fsdp2"] = Field(
        "single",
        description="'single': one learner in the driver process; 'fsdp2': train.learners processes that shard "
        "parameters, gradients and optimizer state (torch FSDP2; gloo on CPU, NCCL on GPU).",
    )
    learners: int = Field(1, gt=0, description="Learner processes with strategy fsdp2 (one GPU each on GPU).")
    fsdp: FsdpConfig = Field(default_factory=FsdpConfig, description="Settings of the fsdp2 learner group.")
    extrapolate: ExtrapolateConfig = Field(
        default_factory=ExtrapolateConfig, description="Jumps along the adapters' low-rank trajectory (NExt)."
    )
    checkpoint_every: int = Field(50, gt=0, description="Steps between checkpoints.")
    keep_checkpoints: int = Field(
        2,
        gt=0,
        description="How many recent checkpoints to keep; also the most on disk while one is written (2 for 1).",
    )
    max_bad_steps: int = Field(5, gt=0, description="Stop after this many non-finite losses in a row.")
    stop_without_signal: bool = Field(
        False,
        description="Stop the run (status failed, checkpoint intact) when most groups have had all-equal rewards "
        "for a sustained stretch; otherwise that is a warning only.",
    )

    @model_validator(mode="after")
    def _strategy_fits(self) -> TrainConfig:
        if self.learners > 1 and self.strategy == "single":
            raise ValueError(
                f"train.learners={self.learners} needs train.strategy=fsdp2 (the single learner is one process)"
            )
        if self.extrapolate.enabled and self.strategy == "fsdp2":
            raise ValueError(
                "train.extrapolate needs train.strategy=single (it moves LoRA adapters, which fsdp2 does not "
                "train)"
            )
        return self
