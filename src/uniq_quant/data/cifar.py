"""CIFAR-10 and CIFAR-100 from a user-given folder in the python-pickle layout.

The folder is the extracted ``cifar-10-python.tar.gz`` (``cifar-10-batches-py/`` with
``data_batch_1..5``, ``test_batch``, ``batches.meta``) or ``cifar-100-python.tar.gz``
(``cifar-100-python/`` with ``train``, ``test``, ``meta``); ``root`` may name that folder or
its parent. Each file is a pickled dict whose ``data`` is uint8 (N, 3072), channel-major.

The files are unpickled: point ``root`` only at data you trust.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uniq_quant.data.arrays import ArrayDataset, check_labels, resize_images
from uniq_quant.data.augment import PadCropFlip
from uniq_quant.data.info import DatasetInfo, Size

_CHANNELS, _SIDE = 3, 32  # CIFAR images are 3 x 32 x 32
_PAD_FRACTION = 8  # random-crop padding is 1/8 of the side: 4 pixels at 32
# what unpickling and unpacking a file that is not a CIFAR batch can raise
_NOT_A_BATCH = (pickle.UnpicklingError, EOFError, ImportError, LookupError, TypeError, ValueError)


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its files and how its dicts name the labels."""

    name: str
    archive: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR_LAYOUTS = {
    "cifar10": CifarLayout(
        "cifar10",
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "labels",
        10,
        (0.4914, 0.4822, 0.4465),  # per-channel mean / std of the 50000 training images
        (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarLayout(
        "cifar100",
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        ("train",),
        "test",
        "fine_labels",
        100,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
}


def find_cifar_folder(root: Path, layout: CifarLayout) -> Path:
    """Return the folder holding the batch files: ``root`` itself or ``root/<folder>``.

    Raises:
        FileNotFoundError: neither holds the first training file; the message says which
            file was expected where and how to get it.
    """
    first = layout.train_files[0]
    for folder in (root, root / layout.folder):
        if (folder / first).is_file():
            return folder
    raise FileNotFoundError(
        f"{layout.name} not found: expected {root / layout.folder / first} (or {root / first}); "
        f"extract {layout.archive} (the CIFAR python version) so that "
        f"ROOT/{layout.folder}/{first} exists and pass ROOT"
    )


def read_cifar_file(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Unpickle one CIFAR file into images (N, 3, 32, 32) uint8 and labels (N,) int64.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file is not a CIFAR pickle (no ``data`` / label entry, wrong size).
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"expected the CIFAR file {path}; the extracted folder is incomplete"
        )
    try:
        with path.open("rb") as file:
            batch = pickle.load(file, encoding="bytes")
        data, labels = _entry(batch, "data"), _entry(batch, label_key)
        images = np.asarray(data, dtype=np.uint8).reshape(-1, _CHANNELS, _SIDE, _SIDE)
    except _NOT_A_BATCH as error:
        raise ValueError(
            f"{path} is not a CIFAR python batch (a pickled dict with 'data' uint8 (N, 3072) and "
            f"'{label_key}'): {error}; extract the original archive again"
        ) from error
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(images),):
        raise ValueError(f"{path} holds {len(images)} images but {labels.size} labels")
    return images, labels


def build_cifar(
    name: str, root: Path | None, size: Size | None = None, augment: bool = True
) -> tuple[ArrayDataset, ArrayDataset, DatasetInfo]:
    """CIFAR-10 or CIFAR-100 train / test sets from ``root``.

    The training set is augmented (unless ``augment`` is False) by a random crop of the
    image zero-padded by 1/8 of its side (4 pixels at 32) and a random horizontal flip.

    Raises:
        ValueError: ``root`` is None, or a file is corrupt.
        FileNotFoundError: a file is missing.
    """
    layout = CIFAR_LAYOUTS[name]
    if root is None:
        raise ValueError(
            f"{name} is not bundled: pass root, a folder where {layout.archive} was extracted "
            f"(holding {layout.folder}/)"
        )
    folder = find_cifar_folder(Path(root), layout)

    # 1. read and check every file
    train = [read_cifar_file(folder / f, layout.label_key) for f in layout.train_files]
    test = read_cifar_file(folder / layout.test_file, layout.label_key)
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    for labels in (train_labels, test[1]):
        check_labels(name, labels, layout.num_classes)

    # 2. wrap as datasets, augmenting the training set
    size = size or (_SIDE, _SIDE)
    crop = PadCropFlip(pad=min(size) // _PAD_FRACTION) if augment else None
    mean, std = layout.mean, layout.std
    train_set = ArrayDataset(
        resize_images(train_images, size), train_labels, mean, std, augment=crop
    )
    test_set = ArrayDataset(resize_images(test[0], size), test[1], mean, std)
    info = DatasetInfo(name, layout.num_classes, _CHANNELS, size, mean, std)
    return train_set, test_set, info


def _entry(batch: dict, key: str) -> object:
    """``batch[key]``; the real files use bytes keys, re-pickled copies often use str keys."""
    return batch[key.encode()] if key.encode() in batch else batch[key]
