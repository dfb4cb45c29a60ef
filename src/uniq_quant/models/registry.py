"""Models by name: ``build_model(name, num_classes, in_channels, image_size)`` and its recipe.

Names are this package's own small-image networks (``MODEL_NAMES``) or ``"tv:" + NAME`` for any
torchvision classification model. A recipe is the JSON-serializable dict of ``build_model``'s
arguments, stored next to exported weights so that ``build_model(**recipe)`` rebuilds the same
architecture (same state_dict keys and shapes) to load them into.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from functools import partial

from torch import nn

from uniq_quant.models.lenet import LeNet5
from uniq_quant.models.mobilenet import MobileNetSmall
from uniq_quant.models.resnet_cifar import CifarResNet
from uniq_quant.models.small_cnn import SmallCNN
from uniq_quant.models.torchvision_models import (
    TV_PREFIX,
    build_torchvision_model,
    check_torchvision_name,
    torchvision_model_names,
)

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": LeNet5,
    "resnet20": partial(CifarResNet, 20),
    "resnet32": partial(CifarResNet, 32),
    "resnet56": partial(CifarResNet, 56),
    "mobilenet_small": MobileNetSmall,
    "small_cnn": SmallCNN,
}
MODEL_NAMES = tuple(_BUILDERS)
MIN_IMAGE_SIZE = 8  # smallest height and width our own models accept (the 8 x 8 digits)


def build_model(
    name: str, num_classes: int, in_channels: int = 3, image_size: int | None = None
) -> nn.Module:
    """Build an untrained classification model by name.

    Args:
        name: one of ``MODEL_NAMES``, or ``"tv:NAME"`` for torchvision's model NAME.
        num_classes: number of output logits.
        in_channels: channels of the input images (1 for MNIST, 3 for CIFAR and ImageNet).
        image_size: height = width of the input images in pixels, if known. Our models accept
            any size from ``MIN_IMAGE_SIZE`` up and only check it; torchvision's vision
            transformers are built for it.

    Returns:
        A model mapping (N, in_channels, H, W) images to (N, num_classes) logits.

    Raises:
        ValueError: unknown name, or a count or size that is not a positive integer.
        ImportError: a ``tv:`` name without torchvision installed.

    Example:
        >>> import torch
        >>> model = build_model("small_cnn", num_classes=10, in_channels=1)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    recipe = model_recipe(name, num_classes, in_channels, image_size)
    num_classes, in_channels = recipe["num_classes"], recipe["in_channels"]
    if name.startswith(TV_PREFIX):
        tv_name = name.removeprefix(TV_PREFIX)
        return build_torchvision_model(tv_name, num_classes, in_channels, recipe["image_size"])
    return _BUILDERS[name](num_classes=num_classes, in_channels=in_channels)


def model_recipe(
    name: str, num_classes: int, in_channels: int = 3, image_size: int | None = None
) -> dict[str, str | int | None]:
    """The JSON-serializable arguments from which ``build_model(**recipe)`` rebuilds a model.

    Args:
        name, num_classes, in_channels, image_size: as for ``build_model``.

    Returns:
        ``{"name": ..., "num_classes": ..., "in_channels": ..., "image_size": ...}``.

    Raises:
        ValueError: as ``build_model`` does; nothing is built.
    """
    check_model_name(name)
    image_size = None if image_size is None else _positive_int(image_size, "image_size")
    if image_size is not None and name in _BUILDERS and image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"model {name!r} needs images of at least {MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE} "
            f"pixels, got image_size={image_size}; resize or pad the images"
        )
    return {
        "name": name,
        "num_classes": _positive_int(num_classes, "num_classes"),
        "in_channels": _positive_int(in_channels, "in_channels"),
        "image_size": image_size,
    }


def check_model_name(name: object) -> str:
    """Return ``name`` if ``build_model`` knows it, else raise ValueError listing the names."""
    if isinstance(name, str) and name.startswith(TV_PREFIX):
        check_torchvision_name(name.removeprefix(TV_PREFIX))
        return name
    if name not in _BUILDERS:
        ours = ", ".join(repr(n) for n in MODEL_NAMES)
        raise ValueError(
            f"unknown model {name!r}; choose one of {ours}, or tv:NAME for torchvision models, "
            "see torchvision.models.list_models(module=torchvision.models)"
        )
    return name  # type: ignore[return-value]


def available_models() -> list[str]:
    """Every name ``build_model`` accepts: ours, then ``tv:`` names if torchvision is installed."""
    try:
        tv_names = [TV_PREFIX + n for n in torchvision_model_names()]
    except ImportError:
        tv_names = []
    return [*MODEL_NAMES, *tv_names]


def _positive_int(value: object, what: str) -> int:
    """Return ``value`` as an int if it is a positive integer, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)
