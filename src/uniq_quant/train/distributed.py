"""torch.distributed set-up for runs started by torchrun (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Process:
    """This process's place in the run: ``rank`` of ``world_size``, and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start(device: str = "auto") -> Process:
    """Join the process group when torchrun started us, and pick the device.

    Args:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available; use auto")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Process(0, 1, torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    target = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return Process(dist.get_rank(), dist.get_world_size(), target)


def stop(process: Process) -> None:
    """Leave the process group."""
    if process.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], process: Process) -> list[float]:
    """Element-wise sum of ``values`` over all processes."""
    if not process.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=process.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def average_tensors(tensors: list[torch.Tensor], process: Process) -> None:
    """Replace each tensor, in place, by its mean over all processes."""
    if not process.distributed:
        return
    for tensor in tensors:
        dist.all_reduce(tensor)
        tensor.div_(process.world_size)


def barrier(process: Process) -> None:
    """Wait for every process."""
    if process.distributed:
        dist.barrier()


def broadcast_object(value: object, process: Process) -> object:
    """Rank 0's ``value`` on every process."""
    if not process.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and every quantized layer's codes and levels.

    Other buffers (BatchNorm statistics, activation ranges) are left out: DDP broadcasts them
    from rank 0 at each forward pass, and each rank updates its own copy during that pass.
    """
    digest = hashlib.sha256()
    tensors = dict(model.named_parameters())
    tensors.update((n, b) for n, b in model.named_buffers() if n.endswith((".codes", ".levels")))
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def ranks_in_sync(model: nn.Module, process: Process) -> bool:
    """True when every process holds bit-identical weights."""
    if not process.distributed:
        return True
    digests: list[str | None] = [None] * process.world_size
    dist.all_gather_object(digests, weights_digest(model))
    return len(set(digests)) == 1
