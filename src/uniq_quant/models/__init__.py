"""The model zoo: small-image networks of our own, torchvision's by name, and float checkpoints.

Modules:
    registry: build_model(name, ...) and model_recipe(...), the names and their checks.
    lenet: LeNet-5 with ReLU and BatchNorm, for images of 8 x 8 pixels and up.
    small_cnn: a two-convolution network that learns MNIST in one CPU epoch (the demo model).
    resnet_cifar: ResNet-20 / 32 / 56 for CIFAR (He et al. 2016), option-A shortcuts.
    mobilenet: a small MobileNet of depthwise separable convolutions for 28-32 pixel images.
    torchvision_models: "tv:NAME" models, with the first convolution fitted to the input channels.
    checkpoint: load_float_checkpoint for torchvision, nested and DDP-prefixed state_dicts.
"""

from uniq_quant.models.checkpoint import load_float_checkpoint, unwrap_state_dict
from uniq_quant.models.lenet import LeNet5
from uniq_quant.models.mobilenet import MobileNetSmall
from uniq_quant.models.registry import (
    MIN_IMAGE_SIZE,
    MODEL_NAMES,
    available_models,
    build_model,
    check_model_name,
    model_recipe,
)
from uniq_quant.models.resnet_cifar import CifarResNet
from uniq_quant.models.small_cnn import SmallCNN
from uniq_quant.models.torchvision_models import TV_PREFIX, torchvision_model_names

__all__ = [
    "MIN_IMAGE_SIZE",
    "MODEL_NAMES",
    "TV_PREFIX",
    "CifarResNet",
    "LeNet5",
    "MobileNetSmall",
    "SmallCNN",
    "available_models",
    "build_model",
    "check_model_name",
    "load_float_checkpoint",
    "model_recipe",
    "torchvision_model_names",
    "unwrap_state_dict",
]
