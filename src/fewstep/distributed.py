"""Data-parallel training under ``torchrun`` (torch.distributed): gloo on CPU, nccl on GPU.

Launch any training command with ``torchrun --nproc_per_node=N -m fewstep.cli pretrain ...``
(or ``torchrun --nproc_per_node=N $(which fewstep) pretrain ...``). Each process computes the loss
of its share of the batch, gradients are averaged with an all-reduce, and only rank 0 writes
metrics, checkpoints and figures. Without the torchrun environment (``WORLD_SIZE`` unset or 1)
everything runs as a single process and these helpers do nothing.

Reproducibility across process counts: every process keeps the same random generator and draws
the random numbers of the *whole* batch (data indices, time-steps, noise), then keeps its rows
``[rank * B / N, (rank + 1) * B / N)``. The union of the shards is exactly the batch a single
process would draw, and the mean of the per-process mean losses (equal shard sizes) is the
full-batch mean loss, so N processes with batch B / N each take the same optimiser steps as one
process with batch B, up to floating-point summation order. Drawing B random numbers instead of
B / N is negligible next to the network's cost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import FewstepError


@dataclass(frozen=True)
class Context:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def rows(self, batch_size: int) -> slice | None:
        """This process's rows of a batch of ``batch_size`` (None when single-process)."""
        if not self.active:
            return None
        if batch_size % self.world_size:
            raise FewstepError(f"batch size {batch_size} is not divisible by the {self.world_size} processes")
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def share(self, batch_size: int) -> int:
        """How many of ``batch_size`` rows this process handles."""
        rows = self.rows(batch_size)
        return batch_size if rows is None else rows.stop - rows.start

    def take(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's rows of a batch drawn whole (every process draws the same batch)."""
        rows = self.rows(len(batch))
        return batch if rows is None else batch[rows]

    def round_rows(self, rounds: int, batch_size: int) -> torch.Tensor | None:
        """This process's rows of ``rounds`` consecutive batches of ``batch_size`` stacked in one tensor."""
        rows = self.rows(batch_size)
        if rows is None:
            return None
        return torch.cat([torch.arange(r * batch_size + rows.start, r * batch_size + rows.stop) for r in range(rounds)])

    def own(self, rows: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Which of the global ``rows`` of a batch of ``batch_size`` this process holds, and their
        positions among its own rows."""
        share = self.share(batch_size)
        return rows // share == self.rank, rows % share

    def scale_sum(self, total: torch.Tensor, global_count: int) -> torch.Tensor:
        """This process's partial sum scaled so that averaging gradients over processes gives the
        mean over all ``global_count`` rows."""
        return total * self.world_size / global_count


SINGLE = Context()
"""A single process (no data parallelism)."""


def check_device(device: str) -> torch.device:
    """``device`` parsed, refused when this machine (or this torch build) does not have it."""
    try:
        requested = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise FewstepError(f"config key device is {device!r}; choose cpu, cuda or cuda:N") from None
    if requested.type not in ("cpu", "cuda"):
        raise FewstepError(f"config key device is {device!r}; choose cpu, cuda or cuda:N")
    if requested.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "torch, which sees no CUDA GPU"
            raise FewstepError(f"config key device is {device!r} but this is {build}; use device=cpu")
        if requested.index is not None and requested.index >= torch.cuda.device_count():
            raise FewstepError(
                f"config key device is {device!r} but only {torch.cuda.device_count()} GPU(s) are visible"
            )
    return requested


def setup(device: str = "cpu") -> Context:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); a single-process context when there is none."""
    requested = check_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context(device=requested)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.device(device).type == "cuda"
    if use_cuda:
        if torch.cuda.device_count() <= local_rank:
            raise FewstepError(f"process {rank} needs GPU {local_rank} but {torch.cuda.device_count()} are visible")
        torch.cuda.set_device(local_rank)
        local = torch.device("cuda", local_rank)
    else:
        local = torch.device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return Context(rank=rank, world_size=world_size, device=local)


def broadcast_parameters(module: torch.nn.Module, context: Context) -> None:
    """Give every process rank 0's weights (they already agree when seeded alike; this makes sure)."""
    if context.active:
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def average_gradients(module: torch.nn.Module, context: Context) -> None:
    """Replace every gradient by its mean over the processes (one all-reduce on a flat buffer)."""
    if not context.active:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= context.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average(value: float, context: Context) -> float:
    """The mean of a number over the processes (for logging the full-batch loss)."""
    if not context.active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / context.world_size


def maximum(value: float, context: Context) -> float:
    """The largest value of a number over the processes (divergence checks must agree)."""
    if not context.active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def barrier(context: Context) -> None:
    if context.active:
        dist.barrier()


def is_main_process() -> bool:
    """True unless this is a torchrun worker of rank > 0 (for code that runs before ``setup``)."""
    return int(os.environ.get("RANK", "0")) == 0
