"""One rank of the fsdp2 learner group: the single learner's update over parameters, gradients and optimizer
state sharded with PyTorch FSDP2 (``torch.distributed.fsdp.fully_shard``), checkpointed with
``torch.distributed.checkpoint``.

Every rank receives the whole batch and makes the same choices as the single learner (the seeded mini-batch
split, the rows that carry a gradient, the loss normalizers counted over the whole mini-batch), then trains on its
token-balanced share of the rows. So the normalizers and the reported metrics are global by construction, and
summing the ranks' gradients (FSDP2's reduce-scatter) gives the single learner's gradient. FSDP2 gathers a
layer's parameters in each forward and backward pass, so every rank must run as many passes as the others: a
rank with fewer micro-batches adds passes whose loss is weighted 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.distributed.tensor import DTensor
from transformers.modeling_layers import GradientCheckpointingLayer

from verity.algo.objective import PolicyObjective
from verity.model.modeling import autocast, causal_lm, completion_values, padded_rows, token_logprobs
from verity.rollout.sync_check import Probe
from verity.train.batching import Batch, balanced_partition, micro_batches
from verity.train.config import FsdpConfig, TrainConfig
from verity.train.learner import Learner, is_max_metric

Pass = tuple[Batch, float]


def process_group_backend(device_type: str) -> str:
    """gloo on CPU; on GPU, NCCL for CUDA tensors and gloo for CPU ones: with CPU offload the gradient norm, the
    gathered weights and the checkpoint run collectives on CPU-resident shards."""
    return "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"


class LogprobRoot(nn.Module):
    """The policy behind one forward that returns token log-probs and entropies. FSDP2 gathers a module's
    parameters around its forward, so with the whole computation (decoder, then the chunked output head) inside
    this one, the root's parameters (embeddings, final norm, head) are gathered once per pass."""

    def __init__(self, policy: nn.Module, chunk_tokens: int) -> None:
        super().__init__()
        self.policy = policy
        self.chunk_tokens = chunk_tokens

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        temperature: float,
        with_entropy: bool,
        hidden: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token log-probs and entropies; with ``hidden`` the last hidden states (B, T, H) instead (the critic's
        input when it reads the policy's backbone)."""
        if hidden:
            out = self.policy(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            return out.hidden_states[-1], None
        rows = SimpleNamespace(input_ids=input_ids, attention_mask=attention_mask)
        return token_logprobs(self.policy, rows, temperature, with_entropy, self.chunk_tokens)


def shard_policy(model: nn.Module, train: TrainConfig, device: torch.device) -> LogprobRoot:
    """``model`` sharded over the default process group: each decoder layer one FSDP2 unit, the rest (embeddings,
    final norm, output head) the root's. On GPU with ``train.fsdp.mixed_precision``: bf16 parameters in compute,
    fp32 gradient reduction (the sharded master weights stay in their own dtype)."""
    root = LogprobRoot(model, train.logit_chunk_tokens)
    shard_units([*decoder_layers(model), root], train.fsdp, device)
    return root


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    layers = [m for m in causal_lm(model).modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise ValueError(f"strategy fsdp2 found no decoder layers in {type(model).__name__} to shard")
    return layers


def shard_units(units: list[nn.Module], fsdp: FsdpConfig, device: torch.device) -> None:
    """Each of ``units`` one FSDP2 unit over the default process group, in order (the root last)."""
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mixed = device.type == "cuda" and fsdp.mixed_precision
    settings = {
        "mesh": mesh,
        "mp_policy": MixedPrecisionPolicy(torch.bfloat16, torch.float32) if mixed else MixedPrecisionPolicy(),
        "offload_policy": CPUOffloadPolicy() if fsdp.cpu_offload else OffloadPolicy(),
    }
    for module in units:
        fully_shard(module, **settings)
        # Sum, not average, the ranks' gradients: each rank's loss is already normalized by the whole batch. A
        # plain SUM reduction (gloo has no pre-multiplied sum).
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)


class ShardedLearner(Learner):
    """The ``Learner`` of one rank (``rank`` of ``world``); the group's driver sends every rank the same calls."""

    def __init__(
        self,
        model: nn.Module,
        train: TrainConfig,
        objective: PolicyObjective,
        temperature: float,
        seed: int,
        device: torch.device,
        reference: nn.Module | None = None,
    ) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.compute_device = device
        self.root = shard_policy(model, train, device)  # before the optimizer: it must hold the shards
        # The frozen reference policy (KL), sharded the same way: 1/N of it per rank, no gradients or optimizer.
        self.reference = None
        if reference is not None:
            self.reference = shard_policy(reference.requires_grad_(False).eval(), train, device)
        super().__init__(model, train, objective, temperature, seed)
        self.share_prompts = False  # the shared-prompt forward runs outside the root's gathered forward
        self.critic: Any = None  # the rank's ``ShardedCritic`` when the group holds one

    @property
    def device(self) -> torch.device:
        return self.compute_device

    def _forward(
        self, micro: Batch, temperature: float, with_entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.root(micro.input_ids, micro.attention_mask, temperature, with_entropy)

    def _passes(self, batch: Batch, whole: bool = False) -> list[Pass]:
        def split(share: Batch) -> list[Batch]:
            if whole:
                return [share]
            return micro_batches(share, self.train_cfg.micro_batch_size, self.train_cfg.micro_batch_tokens)

        return self._share_passes(batch, split)[1]

    def _share_passes(
        self, batch: Batch, split: Callable[[Batch], list[Batch]]
    ) -> tuple[torch.Tensor, list[Pass]]:
        """This rank's rows of ``batch`` and its passes over them, padded with weight-0 passes to the count of the
        busiest rank (every rank computes every rank's plan, so they agree without talking)."""
        shares = balanced_partition(batch.attention_mask.sum(-1), self.world)
        counts = [len(split(batch.select(rows))) if len(rows) else 0 for rows in shares]
        mine = shares[self.rank]
        passes = [(part, 1.0) for part in split(batch.select(mine))] if len(mine) else []
        filler = batch.select(torch.tensor([0]))
        return mine, passes + [(filler, 0.0)] * (max(counts) - len(passes))

    def _agree(self, finite: bool, sums: dict[str, float]) -> tuple[bool, dict[str, float]]:
        flag = torch.tensor([float(finite)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        every: list[dict[str, float]] = [{} for _ in range(self.world)]
        dist.all_gather_object(every, sums)
        total: dict[str, float] = {}
        for part in every:
            for key, value in part.items():
                if is_max_metric(key):
                    total[key] = max(total.get(key, value), value)
                else:
                    total[key] = total.get(key, 0.0) + value
        return bool(flag.item()), total

    def _clip_grad_norm(self) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train_cfg.max_grad_norm)
        return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)

    @torch.no_grad()
    def logprob_share(self, batch: Batch, reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of ``batch`` and their teacher-forced log-probs (R, T) under the policy (or the
        reference); the driver puts the ranks' shares together."""
        root = self.reference if reference else self.root
        if root is None:
            raise ValueError("this learner holds no reference policy (algo.kl_coef is 0)")
        was_training = self.model.training
        self.model.eval()
        size = self.train_cfg.micro_batch_size

        def split(share: Batch) -> list[Batch]:
            return [share.select(torch.arange(i, min(i + size, len(share)))) for i in range(0, len(share), size)]

        mine, passes = self._share_passes(batch, split)
        share = batch.select(mine) if len(mine) else batch.select(torch.tensor([0]))
        values = torch.zeros_like(share.old_logprobs)
        done = 0
        for part, weight in passes:
            with autocast(self.device):
                part = part.to(self.device)
                lp, _ = root(part.input_ids, part.attention_mask, self.temperature, False)
            if weight:
                values[done : done + len(part), : lp.shape[1]] = (lp * part.attention_mask).cpu()
                done += len(part)
        self.model.train(was_training)
        return mine, values[: len(mine)]

    @torch.no_grad()
    def probe_logprobs(self, probe: Probe) -> list[list[float]]:
        """The policy's log-probs of a weight-sync probe (temperature 1), which an engine's copy must match; every
        rank computes the whole probe (one pass each)."""
        ids, mask = padded_rows(probe.prompts, probe.completions, pad_id=0)
        was_training = self.model.training
        self.model.eval()
        with autocast(self.device):
            lp, _ = self.root(ids.to(self.device), mask.to(self.device), 1.0, False)
        self.model.train(was_training)
        return completion_values(lp, probe.prompts, probe.completions)

    def full_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every tensor of the policy's state dict gathered one at a time (a collective: every rank iterates), as
        plain CPU tensors; a parameter shared by two names (tied embeddings) comes once, under its first name."""
        seen: set[int] = set()
        for name, tensor in self.model.state_dict().items():
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            full = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
            yield name, full.detach().cpu()

    def save_sharded(self, directory: Path) -> dict[str, Any]:
        """Write the sharded model and optimizer state into ``directory`` (each rank its own shards, with DCP);
        returns the small replicated rest (schedule, random state, version) for the driver's checkpoint."""
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(directory))
        return {
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "version": self.version,
        }

    def load_sharded(self, directory: Path, rest: dict[str, Any]) -> None:
        """Resume from what ``save_sharded`` wrote (any rank count that divides the same tensors)."""
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        state = {"model": model_state, "optimizer": optim_state}
        dcp.load(state, checkpoint_id=str(directory))
        set_state_dict(
            self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
        )
        self.scheduler.load_state_dict(rest["scheduler"])
        self.generator.set_state(rest["generator"])
        self.version = rest["version"]
