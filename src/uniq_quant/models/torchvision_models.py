"""Torchvision classification models, built untrained and adapted to the input channels.

``build_torchvision_model("resnet18", 10, in_channels=1)`` calls
``torchvision.models.get_model("resnet18", weights=None, num_classes=10)`` (weights are never
downloaded; load a checkpoint with ``load_float_checkpoint``) and, when ``in_channels != 3``,
replaces the first ``nn.Conv2d`` with one of the same hyperparameters and the new number of input
channels (freshly initialized with torch's default). The first Conv2d in module order is the one
the input reaches first in every classification model of torchvision 0.29 (all 80 checked).

Small images (e.g. 28 x 28 or 32 x 32) need no other change for convolutional networks: their
adaptive pooling before the classifier accepts the smaller maps, although an ImageNet stem that
downsamples 32 times leaves 1 x 1 maps of such images (the CIFAR models of this package suit
them better). Vision transformers fix their input size at construction: ``image_size`` is passed
on to ``vit_*`` (which needs a multiple of the patch size) and ``maxvit_t`` models.

torchvision is imported inside the functions, so ``uniq_quant`` imports without it.
"""

from __future__ import annotations

from types import ModuleType

from torch import nn

TV_PREFIX = "tv:"
_LIST_HINT = "see torchvision.models.list_models(module=torchvision.models)"
_RGB = 3  # input channels of every torchvision classification model

# Keyword arguments for builders that fix the input size, by name prefix.
_SIZE_KWARG = {"vit_": "image_size", "maxvit_": "input_size"}
# googlenet and inception_v3 return a namedtuple with auxiliary logits in training unless told
# not to, and warn unless their initialization is chosen explicitly.
_EXTRA_KWARGS = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def torchvision_model_names() -> list[str]:
    """Names of torchvision's classification models, sorted (use them as ``"tv:" + name``).

    Raises:
        ImportError: torchvision is not installed.
    """
    torchvision = _import_torchvision()
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_torchvision_name(name: str) -> str:
    """Return ``name`` if it is a torchvision classification model, else raise ValueError."""
    if name not in torchvision_model_names():
        raise ValueError(
            f"unknown torchvision model {name!r} in {TV_PREFIX + name!r}; "
            f"{_LIST_HINT} for the classification names, e.g. {TV_PREFIX}resnet18"
        )
    return name


def build_torchvision_model(
    name: str, num_classes: int, in_channels: int = _RGB, image_size: int | None = None
) -> nn.Module:
    """Build torchvision model ``name`` untrained, with ``num_classes`` outputs.

    Args:
        name: a torchvision classification model name, without the ``tv:`` prefix.
        num_classes: number of output logits.
        in_channels: channels of the input images; the first convolution is replaced if not 3.
        image_size: height = width of the input images in pixels, passed on to the models that
            fix their input size (vision transformers); ignored by the others.

    Returns:
        The model, mapping (N, in_channels, H, W) images to (N, num_classes) logits.

    Raises:
        ValueError: ``name`` is not a torchvision classification model.
        ImportError: torchvision is not installed.
    """
    torchvision = _import_torchvision()
    check_torchvision_name(name)
    kwargs = dict(_EXTRA_KWARGS.get(name, {}))
    size_kwarg = next((k for p, k in _SIZE_KWARG.items() if name.startswith(p)), None)
    if size_kwarg == "image_size" and image_size is not None:
        kwargs["image_size"] = image_size
    elif size_kwarg == "input_size" and image_size is not None:
        kwargs["input_size"] = (image_size, image_size)
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if in_channels != _RGB:
        replace_first_conv(model, in_channels)
    return model


def replace_first_conv(model: nn.Module, in_channels: int) -> nn.Conv2d:
    """Swap the first ``nn.Conv2d`` of ``model`` (module order) for one with ``in_channels``.

    The new convolution keeps every other hyperparameter (out channels, kernel, stride, padding,
    dilation, groups, bias, padding mode, device, dtype) and has torch's default initialization.

    Args:
        model: the model, changed in place.
        in_channels: input channels of the new convolution.

    Returns:
        The new convolution.

    Raises:
        ValueError: ``model`` has no Conv2d, or its first one is grouped.
    """
    name, old = next(
        ((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None)
    )
    if old is None:
        raise ValueError(
            f"{type(model).__name__} has no nn.Conv2d whose input channels could change to "
            f"{in_channels}; feed it {_RGB}-channel images instead"
        )
    if old.groups != 1:
        raise ValueError(
            f"the first convolution {name!r} of {type(model).__name__} is grouped "
            f"(groups={old.groups}); its input channels cannot be changed to {in_channels}"
        )
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)
    return new


def _import_torchvision() -> ModuleType:
    try:
        import torchvision
    except ImportError as err:
        raise ImportError(
            f"{TV_PREFIX}NAME models need torchvision; install it with `pip install torchvision`"
        ) from err
    return torchvision
