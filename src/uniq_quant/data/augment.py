"""Training augmentations of in-memory (C, H, W) float images, written in plain torch.

The random draws use torch's global generator, which a DataLoader seeds per worker from its
own generator, so a seeded loader gives the same augmentations on every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class PadCropFlip:
    """Zero-pad by ``pad`` pixels, crop back to the input size at a random offset, and flip
    left-right with probability 1/2 (the standard CIFAR augmentation with ``pad=4``).

    Args:
        pad: padding on every side, in pixels; 0 disables the crop.
        flip: whether to flip horizontally at random.
    """

    pad: int = 4
    flip: bool = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.pad > 0:
            top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            x = F.pad(x, (self.pad,) * 4)[..., top : top + h, left : left + w]
        if self.flip and bool(torch.randint(0, 2, ()).item()):
            x = x.flip(-1)
        return x
