"""Data-parallel training across processes: `torchrun --nproc_per_node N train.py ...` (several machines: torchrun's
rendezvous, docs/scale.md).

Each rank takes an equal slice of every step's global batch (`--batch-size` stays the global batch, so N processes
see exactly the samples one process sees); after each backward the gradients are averaged across ranks
(all-reduce, as DistributedDataParallel does), so every rank applies the same update to the same weights. Rank 0
alone writes checkpoints, log.csv, samples, final/ and the Hub push; every rank resumes from the same checkpoint.
gloo on the CPU, NCCL on CUDA (one GPU per rank, batch norm synchronised).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import TrainError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run; rank 0 of 1 without torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes files and talks to the user."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def device(self, device: str) -> str:
        """One GPU per rank on a node: plain "cuda" becomes "cuda:LOCAL_RANK"."""
        if self.active and device == "cuda":
            torch.cuda.set_device(self.local_rank)
            return f"cuda:{self.local_rank}"
        return device

    def share(self, batch: int) -> range:
        """The sample indices of a global batch that this rank trains on."""
        if batch % self.world:
            raise TrainError(f"--batch-size {batch} must be a multiple of the {self.world} processes "
                             f"(it is the global batch, split evenly)")
        return range(self.rank, batch, self.world)

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Replace each gradient with its mean over the ranks (one all-reduce of the flattened gradients)."""
        if not self.active:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-rank loss sums → their mean over the ranks (the loss of the global batch)."""
        if not self.active or not values:
            return values
        keys = sorted(values)
        stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
        dist.all_reduce(stacked)
        return {k: v / self.world for k, v in zip(keys, stacked, strict=True)}

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (a signal or a deadline seen by one rank stops them all)."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_weights(self, nets: Iterable[nn.Module]) -> None:
        """Rank 0's parameters and buffers on every rank (the seeds agree already; this makes it certain)."""
        if not self.active:
            return
        for net in nets:
            for t in [*net.parameters(), *net.buffers()]:
                dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def start(device: str) -> Ranks:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT); rank 0 of 1 when
    not started by torchrun. `device` picks the backend: NCCL on CUDA, gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", rank=rank, world_size=world)
    return Ranks(rank=rank, world=world, local_rank=local_rank)


def stop() -> None:
    """Leave the process group (at the end of train.py's main)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def sync_batch_norm(nets: dict[str, nn.Module], device: str) -> dict[str, nn.Module]:
    """Batch norm over the global batch on CUDA. torch's SyncBatchNorm refuses CPU tensors, so with gloo on the CPU
    each rank normalises over its own slice (instance-norm networks, the default of CycleGAN/Pix2Pix, are exact)."""
    if not (dist.is_initialized() and torch.device(device).type == "cuda"):
        return nets
    return {k: nn.SyncBatchNorm.convert_sync_batchnorm(n) for k, n in nets.items()}
