"""Reader of the idx format of MNIST-style data sets, gzip-compressed or raw.

An idx file is a 4-byte magic number ``0x00 0x00 T D`` (T the element type, D the number of
dimensions), D big-endian uint32 sizes, then the elements in C order, big-endian. Gzip is
recognised by its own magic bytes, so a file's name does not need to say whether it is
compressed.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_TYPES = {  # idx element type code -> big-endian numpy dtype
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# Standard file stems of a split, and their names in some redistributions.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SUFFIXES = ("", ".gz")


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (raw or gzip) into a numpy array in native byte order.

    Raises:
        ValueError: the file does not start with an idx magic number, or its size does not
            match the dimensions in its header.
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        data = gzip.decompress(data)

    # 1. header: two zero bytes, the type code, the number of dimensions, then the sizes
    magic = data[:4]
    if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in _IDX_TYPES:
        raise ValueError(
            f"{path} is not an idx file: its magic number is {magic.hex() or 'missing'}, "
            "expected 0000 followed by a type code (08 for uint8) and the number of dimensions; "
            "the file is corrupt or of another format, replace it with the original"
        )
    dtype, ndim = _IDX_TYPES[magic[2]], magic[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(data[4:header], dtype=">u4"))

    # 2. body: exactly prod(shape) elements
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path} is truncated or padded: its header announces shape {shape} "
            f"({expected} bytes), but it holds {len(data)} bytes; replace it with the original"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def find_idx(root: Path, stem: str) -> Path:
    """Return the path of ``root/stem`` or ``root/stem.gz``, whichever exists.

    Raises:
        FileNotFoundError: neither exists; the message names both.
    """
    for suffix in _SUFFIXES:
        path = root / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"expected {root / stem} or {root / stem}.gz: the folder must hold the four "
        f"MNIST-format idx files {', '.join(s for pair in IDX_FILES.values() for s in pair)} "
        "(gzip-compressed or not)"
    )


def read_idx_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read the images (N, H, W) and labels (N,) of split ``train`` or ``test`` from ``root``.

    Raises:
        FileNotFoundError: ``root`` or one of the split's files is missing.
        ValueError: a file is corrupt, or images and labels do not match.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {root} does not exist; pass a folder holding the MNIST-format idx files"
        )
    image_path, label_path = (find_idx(root, stem) for stem in IDX_FILES[split])
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{image_path} and {label_path} do not form a split: expected images (N, H, W) and "
            f"labels (N,), got {images.shape} and {labels.shape}"
        )
    return images, labels
