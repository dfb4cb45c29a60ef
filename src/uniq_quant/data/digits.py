"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), split in two.

The pixels, integers 0..16, are stretched to 0..255 and stored as uint8 like every other image
(each value within 0.5/255 of the exact v/16, and distinct values stay distinct). The
split is stratified and seeded: each class gives the same fraction of its images to
validation, so the split is the same on every machine for a given seed.
"""

from __future__ import annotations

import numpy as np

from uniq_quant.data.arrays import ArrayDataset, channel_stats, resize_images
from uniq_quant.data.info import DatasetInfo, Size

NUM_CLASSES = 10
VAL_FRACTION = 0.2
_MAX_PIXEL = 16  # load_digits pixels are counts of set bits in 4x4 blocks: 0..16


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so that every class sends ``round(val_fraction * count)`` items to val.

    Returns:
        Sorted train indices and sorted val indices; together a permutation of
        ``range(len(labels))``.
    """
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        val.append(members[: round(val_fraction * len(members))])
    val = np.sort(np.concatenate(val))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def build_digits(
    size: Size | None = None, seed: int = 0
) -> tuple[ArrayDataset, ArrayDataset, DatasetInfo]:
    """The 8x8 digits, 80% train / 20% validation, normalized by the train split's statistics.

    Raises:
        ModuleNotFoundError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "the digits data set ships with scikit-learn: pip install scikit-learn"
        ) from error

    digits = load_digits()
    images = np.rint(digits.images * (255 / _MAX_PIXEL)).astype(np.uint8)  # (1797, 8, 8)
    labels = digits.target.astype(np.int64)
    train, val = stratified_split(labels, VAL_FRACTION, seed)

    size = size or tuple(images.shape[-2:])
    images = resize_images(images, size)  # (N, 1, H, W)
    mean, std = channel_stats(images[train])
    datasets = [ArrayDataset(images[i], labels[i], mean, std) for i in (train, val)]
    return datasets[0], datasets[1], DatasetInfo("digits", NUM_CLASSES, 1, size, mean, std)
