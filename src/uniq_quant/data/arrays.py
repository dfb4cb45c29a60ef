"""In-memory image data sets: uint8 images kept as one tensor, scaled and normalized per item.

Keeping the images as uint8 (N, C, H, W) costs a quarter of the memory of float32 and makes
every item a slice; the conversion ``x = (augment(x_uint8 * scale) - mean) / std`` is done when
the item is read, so a DataLoader's workers share the one tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from uniq_quant.data.info import Size

_UINT8_SCALE = 1.0 / 255.0  # maps uint8 pixels to [0, 1]
_RESIZE_CHUNK = 4096  # images resized at once; bounds the float copy's memory


class ArrayDataset(Dataset):
    """Images held as one uint8 tensor, returned as normalized float tensors.

    Args:
        images: uint8 array of shape (N, C, H, W) or (N, H, W) for one channel.
        labels: integer array of shape (N,).
        mean: per-channel mean of the scaled images, subtracted per item.
        std: per-channel standard deviation, divided out per item.
        scale: factor from stored values to [0, 1] (1/255 for 8-bit pixels).
        augment: optional random transform of a (C, H, W) float image in [0, 1], applied
            before normalization (training augmentation).

    Raises:
        ValueError: the shapes or dtypes do not match the above.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        scale: float = _UINT8_SCALE,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        images = torch.as_tensor(images)
        images = images.unsqueeze(1) if images.dim() == 3 else images
        labels = torch.as_tensor(labels).long()
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 of shape (N, C, H, W) or (N, H, W), got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (len(images),):
            raise ValueError(
                f"labels must have shape ({len(images)},) to match the images, "
                f"got {tuple(labels.shape)}"
            )
        channels = images.shape[1]
        self.images = images.contiguous()  # (N, C, H, W) uint8
        self.labels = labels
        self.scale = float(scale)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(channels, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(channels, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index].float().mul_(self.scale)  # (C, H, W) in [0, 1]
        if self.augment is not None:
            x = self.augment(x)
        return (x - self.mean) / self.std, int(self.labels[index])


def resize_images(images: np.ndarray | torch.Tensor, size: Size) -> torch.Tensor:
    """Resize uint8 images (N, C, H, W) or (N, H, W) to ``size`` with antialiased bilinear.

    Returns:
        uint8 tensor of shape (N, C, *size); the input itself when it already has that size.
    """
    images = torch.as_tensor(images)
    images = images.unsqueeze(1) if images.dim() == 3 else images
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    chunks = [
        F.interpolate(chunk.float(), size=size, mode="bilinear", antialias=True)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for chunk in images.split(_RESIZE_CHUNK)
    ]
    return torch.cat(chunks)


def channel_stats(images: torch.Tensor, scale: float = _UINT8_SCALE) -> tuple[tuple, tuple]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W) after ``scale``."""
    x = images.double().mul(scale).transpose(0, 1).flatten(1)  # (C, N*H*W)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


def check_labels(name: str, labels: np.ndarray | torch.Tensor, num_classes: int) -> None:
    """Raise ValueError unless every label lies in ``0..num_classes-1``."""
    labels = np.asarray(labels)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}; "
            "the label file belongs to another data set"
        )
