"""Synthetic images with a learnable signal, for smoke tests and benchmarks without data.

Item i of a split has label ``i % num_classes`` (balanced classes) and image
``x = prototype[label] + noise``: each class's prototype is a smooth random pattern (a coarse
Gaussian grid upsampled to the image size, so convolutions and pooling keep it) and the noise
is i.i.d. standard normal. Every number is drawn from a numpy generator keyed by
(seed, split, index), so items are generated on demand, never stored, and identical in every
process for the same seed. Train and validation share the prototypes and differ in the noise.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from uniq_quant.data.info import DatasetInfo

_PROTOTYPE_GRID = 4  # prototypes are drawn on a 4x4 grid per channel, then upsampled
_PROTOTYPES, _TRAIN, _VAL = 0, 1, 2  # generator keys of the three random streams


class SyntheticDataset(Dataset):
    """Deterministic class-conditional Gaussian images, generated per item.

    Args:
        shape: (C, H, W) of every image.
        num_classes: number of classes, at least 2.
        size: number of items.
        seed: seed of the prototypes and of the noise.
        split: 1 for train, 2 for validation: keys of the noise stream.
    """

    def __init__(
        self, shape: tuple[int, int, int], num_classes: int, size: int, seed: int, split: int
    ) -> None:
        self.shape = tuple(shape)
        self.num_classes = num_classes
        self.size = size
        self.seed = seed
        self.split = split
        self.prototypes = make_prototypes(self.shape, num_classes, seed)  # (K, C, H, W)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} synthetic items")
        label = index % self.num_classes
        rng = _rng(self.seed, self.split, index)
        noise = torch.from_numpy(rng.standard_normal(self.shape, dtype=np.float32))
        return self.prototypes[label] + noise, label


def make_prototypes(shape: tuple[int, int, int], num_classes: int, seed: int) -> torch.Tensor:
    """Smooth standard-normal class patterns of shape (num_classes, C, H, W)."""
    channels, height, width = shape
    grid = (num_classes, channels, _PROTOTYPE_GRID, _PROTOTYPE_GRID)
    coarse = torch.from_numpy(_rng(seed, _PROTOTYPES).standard_normal(grid, dtype=np.float32))
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


def build_synthetic(
    shape: tuple[int, int, int], num_classes: int, sizes: tuple[int, int], seed: int = 0
) -> tuple[SyntheticDataset, SyntheticDataset, DatasetInfo]:
    """Train and validation synthetic sets; items are already standardized (mean 0, std 1).

    Args:
        shape: (C, H, W) of every image.
        num_classes: number of classes, at least 2.
        sizes: (train items, validation items), each at least 1.
        seed: seed of every random draw.

    Raises:
        ValueError: a shape, class count or size is not a positive integer as above.
    """
    shape = _positive_ints(shape, 3, "synthetic shape (C, H, W)")
    sizes = _positive_ints(sizes, 2, "synthetic sizes (train, val)")
    (num_classes,) = _positive_ints((num_classes,), 1, "synthetic classes")
    if num_classes < 2:
        raise ValueError(f"synthetic classes must be at least 2, got {num_classes}")
    train = SyntheticDataset(shape, num_classes, sizes[0], seed, _TRAIN)
    val = SyntheticDataset(shape, num_classes, sizes[1], seed, _VAL)
    channels = shape[0]
    info = DatasetInfo(
        "synthetic", num_classes, channels, shape[1:], (0.0,) * channels, (1.0,) * channels
    )
    return train, val, info


def _rng(seed: int, *key: int) -> np.random.Generator:
    # spawn_key keeps (seed, 1, 0) and (seed, 1) apart; trailing zeros of entropy would not
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _positive_ints(values: object, count: int, what: str) -> tuple[int, ...]:
    ok = isinstance(values, (tuple, list)) and len(values) == count
    ok = ok and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values)
    if not ok or min(values) < 1:
        raise ValueError(f"{what} must be {count} positive integer(s), got {values!r}")
    return tuple(int(v) for v in values)
