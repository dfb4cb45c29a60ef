"""ImageNet or any tree of class folders: root/train/<class>/<image>, root/val/<class>/<image>.

Images are decoded by torchvision's ImageFolder (PIL, converted to RGB) and transformed the
standard way: for training, RandomResizedCrop to the image size and a random horizontal flip;
for validation, resize the shorter side to size * 256/224 and take the center crop. torchvision
is imported here only, so the core package does not need it.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from uniq_quant.data.info import DatasetInfo, Size

DEFAULT_SIZE = (224, 224)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per-channel statistics of the ImageNet training set
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESIZE_RATIO = 256 / 224  # validation resize before the center crop (the ResNet recipe)
_SPLITS = ("train", "val")


def image_transforms(size: Size, augment: bool = True) -> tuple[object, object]:
    """The train and validation transforms from a PIL image to a normalized (3, H, W) tensor."""
    from torchvision import transforms

    normalize = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    resize = transforms.Resize(int(max(size) * _RESIZE_RATIO))
    val = transforms.Compose([resize, transforms.CenterCrop(size), *normalize])
    if not augment:
        return val, val
    crop = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
    return transforms.Compose([*crop, *normalize]), val


def build_image_folder(
    name: str,
    root: Path | None,
    size: Size | None = None,
    augment: bool = True,
    train: bool = True,
) -> tuple[Dataset | None, Dataset, DatasetInfo]:
    """Train / validation ImageFolder datasets from ``root/train`` and ``root/val``.

    With ``train=False`` only ``root/val`` is needed and scanned (ImageNet's training tree holds
    1.28 million files), and the train dataset returned is None.

    Raises:
        ValueError: ``root`` is None, or train and val hold different classes.
        FileNotFoundError: ``root/train`` or ``root/val`` is missing or holds no class folder
            with images.
    """
    from torchvision.datasets import ImageFolder

    if root is None:
        raise ValueError(
            f"{name} is not bundled: pass root, a folder with train/ and val/, "
            "each holding one subfolder of images per class"
        )
    folders = [Path(root) / split for split in _SPLITS]
    for folder in folders if train else folders[1:]:
        if not folder.is_dir():
            raise FileNotFoundError(
                f"expected the folder {folder}: {name} needs ROOT/train/<class>/<image> and "
                "ROOT/val/<class>/<image> (ImageNet's val images must first be moved into "
                "one folder per class)"
            )
    size = size or DEFAULT_SIZE
    train_tf, val_tf = image_transforms(size, augment)
    val = ImageFolder(folders[1], val_tf)
    info = DatasetInfo(name, len(val.classes), 3, size, IMAGENET_MEAN, IMAGENET_STD)
    if not train:
        return None, val, info
    train_set = ImageFolder(folders[0], train_tf)
    if train_set.classes != val.classes:
        only = sorted(set(train_set.classes) ^ set(val.classes))
        raise ValueError(
            f"{folders[0]} and {folders[1]} must hold the same class folders so labels agree; "
            f"these are in only one of them: {only[:10]}"
        )
    return train_set, val, info
