"""torch.distributed plumbing: one process per device, started by ``torchrun``.

``torchrun --nproc_per_node N -m hydravit_edge.cli train ...`` (or the ``hydravit-edge``
script) sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; the trainer then joins a process group
(NCCL on GPUs, gloo on CPU) and wraps the model in DDP.  Without those variables it runs
as a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from hydravit_edge.errors import UsageError

__all__ = ["DistInfo", "setup", "teardown", "all_reduce_sum", "broadcast_object", "all_reduce_mean_", "broadcast_tensors_", "all_gather_object", "barrier"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this process group was created by us (and is destroyed by teardown)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(pref: str, local_rank: int) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here")
    if pref in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device_pref: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistInfo(rank, world, local, _pick_device(device_pref, local), owns_group=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=_pick_device(device_pref, 0))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = _pick_device(device_pref, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                            **({"device_id": device} if device.type == "cuda" else {}))
    return DistInfo(rank, world, local, device, owns_group=True)


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean_(tensors: list[torch.Tensor], info: DistInfo) -> None:
    """Average ``tensors`` over the processes in place (one collective on a flat copy)."""
    if not info.distributed or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def broadcast_tensors_(tensors: list[torch.Tensor], info: DistInfo) -> None:
    """Overwrite ``tensors`` with the first process's values (what DDP does at construction)."""
    if info.distributed:
        for t in tensors:
            dist.broadcast(t, src=0)


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
