"""DataLoaders for training and validation, single-process or under torch.distributed.

Under DDP every process loads ``batch_size`` items per step. Training shuffles with a
DistributedSampler (call ``set_epoch`` before each epoch so the shuffle changes); validation
gives process r the items r, r + world_size, ... with no padding, so every item is evaluated
exactly once and per-process counts differ by at most one: sum correct answers and item
counts across processes (all_reduce) rather than averaging accuracies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch import distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of a dataset, in order, without padding.

    Args:
        data: the dataset (only its length is used).
        world_size: number of processes.
        rank: this process's rank, in ``0..world_size-1``.
    """

    def __init__(self, data: Sized, world_size: int, rank: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in 0..{world_size - 1}, got {rank}")
        self.length, self.world_size, self.rank = len(data), world_size, rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def build_loaders(
    train_ds: Dataset,
    val_ds: Dataset,
    batch_size: int,
    workers: int,
    distributed: bool = False,
    seed: int = 0,
    *,
    world_size: int | None = None,
    rank: int | None = None,
) -> tuple[DataLoader, DataLoader]:
    """Build the train loader (shuffled, seeded) and the validation loader (in order).

    Args:
        train_ds: training dataset.
        val_ds: validation dataset; no item of it is dropped.
        batch_size: items per batch, per process.
        workers: loader worker processes (0 loads in the main process); workers persist
            across epochs.
        distributed: shard both sets across the processes of torch.distributed.
        seed: seed of the shuffle and of the workers' augmentation randomness.
        world_size: number of processes when distributed; default: the process group's.
        rank: this process's rank when distributed; default: the process group's.

    Returns:
        (train_loader, val_loader). The last training batch is dropped only when it would
        hold a single item, which BatchNorm cannot normalize in training mode.

    Raises:
        ValueError: ``batch_size`` < 1 or ``workers`` < 0.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(
            f"workers must be an integer >= 0 (0: load in this process), got {workers!r}"
        )

    # 1. samplers: a seeded shuffle, and an in-order validation pass (sharded under DDP)
    train_sampler, val_sampler, worker_seed = None, None, seed
    if distributed:
        world_size = dist.get_world_size() if world_size is None else world_size
        rank = dist.get_rank() if rank is None else rank
        train_sampler = DistributedSampler(
            train_ds, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
        )
        val_sampler = ShardSampler(val_ds, world_size, rank)
        worker_seed = seed + rank  # distinct augmentation draws on every rank
    train_items = len(train_sampler) if train_sampler is not None else len(train_ds)

    # 2. loaders; the generator also seeds the workers' augmentation randomness
    common = {
        "batch_size": batch_size,
        "num_workers": workers,
        "persistent_workers": workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }
    train = DataLoader(
        train_ds,
        sampler=train_sampler,
        shuffle=train_sampler is None,
        drop_last=train_items > batch_size and train_items % batch_size == 1,
        generator=torch.Generator().manual_seed(worker_seed),
        **common,
    )
    val = DataLoader(val_ds, sampler=val_sampler, shuffle=False, drop_last=False, **common)
    return train, val


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the loader's sampler which epoch starts, so a distributed shuffle differs per epoch.

    A no-op for loaders whose sampler has no ``set_epoch`` (single-process loaders reshuffle
    on their own).
    """
    set_sampler_epoch = getattr(loader.sampler, "set_epoch", None)
    if set_sampler_epoch is not None:
        set_sampler_epoch(epoch)
