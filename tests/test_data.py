"""Data sets and loaders: offline sources, the file readers, errors on bad input, loaders."""

import gzip
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from uniq_quant.data import (
    DATASETS,
    DatasetInfo,
    ShardSampler,
    build_datasets,
    build_loaders,
    read_idx,
    read_idx_split,
    set_epoch,
)
from uniq_quant.data.augment import PadCropFlip
from uniq_quant.data.digits import stratified_split
from uniq_quant.data.mnist import FASHION_MNIST_ROOT

IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}


# ---------------------------------------------------------------- helpers that write data


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write ``array`` as an idx file: magic, big-endian sizes, big-endian elements."""
    header = bytes([0, 0, IDX_TYPE_CODES[array.dtype], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_idx_folder(root: Path, sizes=(12, 5), side=28, compress=True) -> dict:
    """Write a tiny MNIST-format folder; return its arrays by split."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for (split, (image_stem, label_stem)), n in zip(IDX_STEMS.items(), sizes, strict=True):
        images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(root / f"{image_stem}{suffix}", images, compress)
        write_idx(root / f"{label_stem}{suffix}", labels, compress)
        arrays[split] = images, labels
    return arrays


def write_cifar(root: Path, variant: str, per_file: int = 6, str_keys: bool = False) -> Path:
    """Write a tiny CIFAR python-pickle folder under ``root``; return the batches folder."""
    rng = np.random.default_rng(1)
    if variant == "cifar10":
        folder, files, label_key, classes = "cifar-10-batches-py", [], "labels", 10
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        meta = ("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    else:
        folder, label_key, classes = "cifar-100-python", "fine_labels", 100
        files = ["train", "test"]
        meta = ("meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    batches = root / folder
    batches.mkdir(parents=True)
    for name in files:
        batch = {
            "data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
            label_key: [int(v) for v in rng.integers(0, classes, per_file)],
        }
        _pickle(batches / name, batch, str_keys)
    _pickle(batches / meta[0], meta[1], str_keys)
    return batches


def _pickle(path: Path, obj: dict, str_keys: bool) -> None:
    keyed = obj if str_keys else {k.encode(): v for k, v in obj.items()}
    path.write_bytes(pickle.dumps(keyed))


def write_image_folder(root: Path, classes=("cat", "dog"), per_class=3) -> Path:
    """Write root/train/<class>/*.png and root/val/<class>/*.png with PIL."""
    from PIL import Image

    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


# ------------------------------------------------------------------------------- mnist


@pytest.fixture(scope="module")
def mnist():
    return build_datasets("mnist")


def test_mnist_bundled_is_full_mnist(mnist):
    """The bundled MNIST has 60000 train / 10000 test items of 10 classes, items (1, 28, 28)."""
    train, val, info = mnist
    assert (len(train), len(val)) == (60000, 10000)
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, (28, 28))
    x, y = train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert isinstance(y, int) and y == 5  # the first MNIST training digit is a 5
    assert set(train.labels.tolist()) == set(range(10))


def test_mnist_normalization_standardizes_the_training_set(mnist):
    """The stated mean / std are those of the training pixels: normalized, mean 0 and std 1."""
    train, _, info = mnist
    x = (train.images.double() / 255 - info.mean[0]) / info.std[0]
    # the constants are rounded to 4 digits, so the moments match to about 1e-3
    assert abs(x.mean().item()) < 1e-3
    assert abs(x.std().item() - 1) < 1e-3


def test_mnist_from_idx_root_and_resize(tmp_path):
    """With root, MNIST comes from idx files there; image_size resizes every image once."""
    arrays = write_idx_folder(tmp_path, sizes=(12, 5))
    train, val, info = build_datasets("mnist", tmp_path, image_size=32)
    assert (len(train), len(val), info.image_size) == (12, 5, (32, 32))
    assert train[3][0].shape == (1, 32, 32)
    assert val[4][1] == int(arrays["test"][1][4])


# -------------------------------------------------------------------------------- idx


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_read_idx_round_trips(tmp_path, compress, dtype):
    """read_idx returns exactly the array written, raw or gzip, whatever the element type."""
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(dtype)
    path = write_idx(tmp_path / "a-idx3", array, compress)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_split_reads_gz_and_raw_folders(tmp_path, compress):
    """A folder of standard-named idx files, gz or raw, gives images (N, H, W) and labels (N,)."""
    arrays = write_idx_folder(tmp_path, sizes=(7, 3), side=5, compress=compress)
    for split in ("train", "test"):
        images, labels = read_idx_split(tmp_path, split)
        np.testing.assert_array_equal(images, arrays[split][0])
        np.testing.assert_array_equal(labels, arrays[split][1])


def test_corrupt_idx_bad_magic_names_the_file(tmp_path):
    """An idx file with a wrong magic number is a ValueError naming the file."""
    write_idx_folder(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x12\x34\x08\x03" + bytes(100)))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz is not an idx file"):
        build_datasets("fashion-mnist", tmp_path)


def test_truncated_idx_is_a_value_error(tmp_path):
    """An idx file shorter than its header announces is a ValueError naming the file."""
    path = write_idx(tmp_path / "x-idx1", np.arange(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"x-idx1 is truncated"):
        read_idx(path)


def test_missing_idx_file_says_which_file_where(tmp_path):
    """A folder lacking an idx file raises FileNotFoundError naming the expected path."""
    write_idx_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    expected = str(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match=f"expected {expected}"):
        build_datasets("fashion-mnist", tmp_path)


def test_missing_data_folder_is_file_not_found(tmp_path):
    """A root that does not exist raises FileNotFoundError naming it."""
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_datasets("mnist", tmp_path / "nowhere")


# ----------------------------------------------------------------------- fashion-mnist


@pytest.mark.skipif(
    not FASHION_MNIST_ROOT.is_dir(),
    reason=f"{FASHION_MNIST_ROOT} absent: apt-get install dataset-fashion-mnist to run this",
)
def test_fashion_mnist_default_folder():
    """Fashion-MNIST from the Debian folder: 60000 / 10000 items (1, 28, 28), 10 classes."""
    train, val, info = build_datasets("fashion-mnist")
    assert (len(train), len(val), info.num_classes) == (60000, 10000, 10)
    assert train[0][0].shape == (1, 28, 28)
    assert train[0][1] == 9  # the first Fashion-MNIST training item is an ankle boot


# ------------------------------------------------------------------------------ digits


def test_digits_split_is_stratified_seeded_and_complete():
    """The digits split covers all 1797 items once, 20% of every class in val, same per seed."""
    train, val, info = build_datasets("digits")
    assert len(train) + len(val) == 1797
    assert (info.num_classes, info.image_size) == (10, (8, 8))
    x, y = val[0]
    assert x.shape == (1, 8, 8) and 0 <= y < 10

    counts = torch.bincount(val.labels, minlength=10)
    totals = counts + torch.bincount(train.labels, minlength=10)
    # each class sends round(0.2 * its size) items: off by at most half an item
    assert ((counts - 0.2 * totals).abs() <= 0.5).all()

    again = build_datasets("digits")[1]
    assert torch.equal(again.images, val.images)
    other = build_datasets("digits", seed=1)[1]
    assert not torch.equal(other.images, val.images)


def test_stratified_split_partitions_indices():
    """Train and val indices are disjoint and together cover every index."""
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    train, val = stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[val], minlength=3).tolist() == [1, 1, 0]


# ------------------------------------------------------------------------------- cifar


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
@pytest.mark.parametrize("point_at", ["parent", "batches"])
def test_cifar_reads_both_root_layouts(tmp_path, variant, point_at):
    """CIFAR loads from the extracted archive's parent or from the batches folder itself."""
    batches = write_cifar(tmp_path, variant, per_file=6)
    root = tmp_path if point_at == "parent" else batches
    train, val, info = build_datasets(variant, root)
    files = 5 if variant == "cifar10" else 1
    assert (len(train), len(val)) == (6 * files, 6)
    assert info.num_classes == (10 if variant == "cifar10" else 100)
    assert (info.in_channels, info.image_size) == (3, (32, 32))
    x, y = train[0]
    assert x.shape == (3, 32, 32) and isinstance(y, int)


def test_cifar_keeps_pixels_in_channel_major_order(tmp_path):
    """Row i of 'data' is image i with its 1024 red, then green, then blue values."""
    batches = write_cifar(tmp_path, "cifar10", per_file=2, str_keys=True)
    with (batches / "test_batch").open("rb") as file:
        batch = pickle.load(file)
    _, val, info = build_datasets("cifar10", tmp_path)
    x, y = val[1]
    pixels = x * torch.tensor(info.std).view(3, 1, 1) + torch.tensor(info.mean).view(3, 1, 1)
    expected = torch.from_numpy(batch["data"][1].reshape(3, 32, 32)).float() / 255
    torch.testing.assert_close(pixels, expected, atol=1e-6, rtol=0)
    assert y == batch["labels"][1]


def test_cifar_augments_train_only(tmp_path):
    """Training items are randomly cropped and flipped; validation items are deterministic."""
    write_cifar(tmp_path, "cifar10", per_file=2)
    train, val, _ = build_datasets("cifar10", tmp_path)
    assert torch.equal(val[0][0], val[0][0])
    draws = [train[0][0] for _ in range(8)]
    # 81 crop offsets x 2 flips: 8 identical draws have probability 162^-7
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    _, _, info = build_datasets("cifar10", tmp_path, augment=False)
    assert info.image_size == (32, 32)


def test_pad_crop_flip_shifts_content():
    """The crop is a shift by at most ``pad`` pixels, with zeros where the padding shows."""
    x = torch.rand(3, 8, 8) + 1  # no zeros inside the image
    out = PadCropFlip(pad=2, flip=False)(x)
    assert out.shape == x.shape
    rows = (out != 0).any(dim=(0, 2)).nonzero().flatten()
    assert len(rows) >= 8 - 2  # at most 2 padded rows come into view
    assert PadCropFlip(pad=0, flip=False)(x) is x


def test_cifar_without_root_asks_for_one():
    """CIFAR is not bundled: no root is a ValueError saying what to pass."""
    with pytest.raises(ValueError, match=r"pass root.*cifar-10-python\.tar\.gz"):
        build_datasets("cifar10")


def test_cifar_missing_folder_says_what_to_extract(tmp_path):
    """A root without the batches says which file was expected where and how to get it."""
    with pytest.raises(FileNotFoundError) as caught:
        build_datasets("cifar10", tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in message
    assert "extract cifar-10-python.tar.gz" in message
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python/train"):
        build_datasets("cifar100", tmp_path)


def test_cifar_missing_or_corrupt_file(tmp_path):
    """A missing test batch is FileNotFoundError; a non-pickle batch is ValueError naming it."""
    batches = write_cifar(tmp_path, "cifar10", per_file=2)
    (batches / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"data_batch_3 is not a CIFAR python batch"):
        build_datasets("cifar10", tmp_path)
    (batches / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_3"):
        build_datasets("cifar10", tmp_path)


# ------------------------------------------------------------------------ image folder


def test_image_folder_loads_with_standard_transforms(tmp_path):
    """ImageFolder trees load with one label per class folder and items of image_size."""
    root = write_image_folder(tmp_path)
    train, val, info = build_datasets("imagefolder", root, image_size=16)
    assert (len(train), len(val)) == (6, 6)
    assert (info.num_classes, info.in_channels, info.image_size) == (2, 3, (16, 16))
    x, y = train[0]
    assert x.shape == (3, 16, 16) and y == 0
    assert torch.equal(val[5][0], val[5][0]) and val[5][1] == 1  # val has no randomness
    assert build_datasets("imagenet", root)[2].image_size == (224, 224)


def test_validation_only_needs_and_scans_only_the_val_folder(tmp_path):
    """train=False returns no train set; an image folder then needs root/val alone."""
    root = write_image_folder(tmp_path)
    (root / "train").rename(tmp_path / "elsewhere")
    train, val, info = build_datasets("imagefolder", root, image_size=16, train=False)
    assert train is None and len(val) == 6 and info.num_classes == 2
    with pytest.raises(FileNotFoundError, match="train"):
        build_datasets("imagefolder", root, image_size=16)

    train, val, _ = build_datasets("synthetic", synthetic_sizes=(8, 4), train=False)
    assert train is None and len(val) == 4


def test_image_folder_errors(tmp_path):
    """No root, no val folder, or different class sets each raise a clear error."""
    with pytest.raises(ValueError, match="pass root"):
        build_datasets("imagenet")
    root = write_image_folder(tmp_path / "a")
    (root / "val" / "dog").rename(root / "val" / "wolf")
    with pytest.raises(ValueError, match=r"same class folders.*'dog', 'wolf'"):
        build_datasets("imagenet", root)
    (tmp_path / "b" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"expected the folder .*b/val"):
        build_datasets("imagenet", tmp_path / "b")


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_balanced_and_sized():
    """Synthetic items depend only on the seed; classes are balanced; sizes are as asked."""
    kwargs = {"synthetic_shape": (2, 6, 5), "synthetic_classes": 4, "synthetic_sizes": (40, 12)}
    train, val, info = build_datasets("synthetic", **kwargs)
    assert (len(train), len(val), info.num_classes, info.in_channels) == (40, 12, 4, 2)
    assert info.image_size == (6, 5) and train[7][0].shape == (2, 6, 5)
    again = build_datasets("synthetic", **kwargs)[0]
    assert torch.equal(train[7][0], again[7][0])
    assert not torch.equal(train[7][0], build_datasets("synthetic", seed=1, **kwargs)[0][7][0])
    assert not torch.equal(train[0][0], val[0][0])  # same class, different noise
    assert [train[i][1] for i in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    resized = build_datasets("synthetic", image_size=(9, 7), **kwargs)[2]
    assert resized.image_size == (9, 7)


def test_synthetic_signal_is_learnable():
    """A nearest-class-mean classifier fit on the train items classifies val items well."""
    train, val, _ = build_datasets("synthetic", synthetic_sizes=(200, 100))
    xs, ys = map(list, zip(*(train[i] for i in range(len(train))), strict=True))
    x, y = torch.stack(xs).flatten(1), torch.tensor(ys)
    means = torch.stack([x[y == c].mean(0) for c in range(10)])  # (10, 3072)
    vx = torch.stack([val[i][0] for i in range(len(val))]).flatten(1)
    vy = torch.tensor([val[i][1] for i in range(len(val))])
    accuracy = (torch.cdist(vx, means).argmin(1) == vy).float().mean().item()
    # chance is 0.1; the class patterns are far apart relative to unit noise in 3072 pixels
    assert accuracy > 0.9


@pytest.mark.parametrize(
    "kwargs",
    [
        {"synthetic_shape": (3, 0, 4)},
        {"synthetic_shape": (3, 4)},
        {"synthetic_classes": 1},
        {"synthetic_sizes": (10, 0)},
        {"seed": -1},
    ],
)
def test_synthetic_bad_arguments(kwargs):
    """Non-positive shapes, sizes, a single class or a negative seed are ValueErrors."""
    with pytest.raises(ValueError, match="must be"):
        build_datasets("synthetic", **kwargs)


# ---------------------------------------------------------------------- common errors


def test_unknown_name_lists_the_names():
    """An unknown name is a ValueError that lists every data set."""
    with pytest.raises(ValueError, match="unknown dataset 'svhn'") as caught:
        build_datasets("svhn")
    assert all(name in str(caught.value) for name in DATASETS)


def test_names_are_case_and_underscore_insensitive(tmp_path):
    """'Fashion_MNIST' names the same data set as 'fashion-mnist'."""
    write_idx_folder(tmp_path, sizes=(3, 2), side=4)
    assert build_datasets("Fashion_MNIST", tmp_path)[2].name == "fashion-mnist"


@pytest.mark.parametrize("size", [0, (3,), (4, -1), 2.5, True])
def test_bad_image_size(size):
    """An image size that is not a positive int or pair of them is a ValueError."""
    with pytest.raises(ValueError, match="image size must be"):
        build_datasets("synthetic", image_size=size)


def test_dataset_info_validates():
    """DatasetInfo rejects statistics that do not match its channels."""
    with pytest.raises(ValueError, match="one value per channel"):
        DatasetInfo("x", 10, 3, 32, (0.5,), (0.2,))
    assert DatasetInfo("x", 10, 1, 32, (0.5,), (0.2,)).image_size == (32, 32)


def test_core_package_imports_without_torchvision():
    """uniq_quant.data imports, and builds in-memory data, when torchvision is unavailable."""
    code = (
        "import sys; sys.modules['torchvision'] = None\n"
        "from uniq_quant.data import build_datasets\n"
        "print(len(build_datasets('synthetic')[0]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1024"


# ------------------------------------------------------------------------------ loaders


def test_loaders_with_workers_yield_batches():
    """With two workers, train batches are (B, C, H, W) and val covers every item, in order."""
    train, val, _ = build_datasets("synthetic", synthetic_sizes=(20, 10))
    train_loader, val_loader = build_loaders(train, val, batch_size=8, workers=2, seed=0)
    assert train_loader.persistent_workers and train_loader.num_workers == 2
    x, y = next(iter(train_loader))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,) and y.dtype == torch.int64
    labels = torch.cat([y for _, y in val_loader])
    assert labels.tolist() == [i % 10 for i in range(10)]


def test_train_shuffle_is_seeded():
    """Two loaders with the same seed shuffle alike; the last batch is kept unless single."""
    train, val, _ = build_datasets("synthetic", synthetic_sizes=(10, 3))
    orders = []
    for _ in range(2):
        loader, _ = build_loaders(train, val, batch_size=4, workers=0, seed=5)
        orders.append(torch.cat([y for _, y in loader]).tolist())
    assert orders[0] == orders[1] and len(orders[0]) == 10
    train9, _, _ = build_datasets("synthetic", synthetic_sizes=(9, 3))
    loader, _ = build_loaders(train9, val, batch_size=4, workers=0)
    assert [len(y) for _, y in loader] == [4, 4]  # a batch of one would break BatchNorm


def test_distributed_loaders_shard_without_loss():
    """Under DDP the ranks' val shards cover every item once; set_epoch reshuffles train."""
    train, val, _ = build_datasets("synthetic", synthetic_sizes=(16, 7))
    seen, firsts = [], []
    for rank in range(2):
        train_loader, val_loader = build_loaders(
            train, val, 4, 0, distributed=True, world_size=2, rank=rank
        )
        assert isinstance(val_loader.sampler, ShardSampler)
        seen += list(val_loader.sampler)
        set_epoch(train_loader, 0)
        first = list(train_loader.sampler)
        set_epoch(train_loader, 1)
        firsts.append((first, list(train_loader.sampler)))
    assert sorted(seen) == list(range(7))
    assert firsts[0][0] != firsts[0][1]  # a new epoch, a new order
    assert not set(firsts[0][0]) & set(firsts[1][0])  # ranks train on disjoint items


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"workers": -1}])
def test_loader_bad_arguments(kwargs):
    """A batch size below 1 or a negative worker count is a ValueError."""
    train, val, _ = build_datasets("synthetic", synthetic_sizes=(4, 4))
    args = {"batch_size": 2, "workers": 0, **kwargs}
    with pytest.raises(ValueError, match="must be"):
        build_loaders(train, val, **args)
