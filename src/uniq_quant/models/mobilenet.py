"""A small MobileNet (Howard et al. 2017) for 28 x 28 to 32 x 32 images, about 140k parameters.

    conv 3x3, 16 -> BN -> ReLU
    7 depthwise separable blocks: (channels, stride) = (32, 1), (64, 2), (64, 1), (128, 2),
        (128, 1), (256, 2), (256, 1)
    global average pool -> FC num_classes

A depthwise separable block is a 3x3 depthwise convolution -> BN -> ReLU, then a 1x1 pointwise
convolution -> BN -> ReLU. Three stride-2 blocks take 32 x 32 inputs to 4 x 4 before the pool
(MobileNet v1 downsamples 32 times for 224 x 224 ImageNet; that would leave nothing of a 32 x 32
image). Any image of at least 8 x 8 pixels works.
"""

from __future__ import annotations

import torch
from torch import nn

from uniq_quant.models._layers import conv_bn_relu

_STEM_CHANNELS = 16
_BLOCKS = ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1))


def depthwise_separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """A 3x3 depthwise and a 1x1 pointwise convolution, each followed by BN and ReLU.

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out.
        stride: stride of the depthwise convolution.

    Returns:
        A module mapping (N, C_in, H, W) to (N, C_out, ceil(H / stride), ceil(W / stride)).
    """
    return nn.Sequential(
        conv_bn_relu(in_channels, in_channels, 3, stride, groups=in_channels),
        conv_bn_relu(in_channels, out_channels, 1),
    )


class MobileNetSmall(nn.Module):
    """MobileNet-style network of depthwise separable convolutions for small images.

    Args:
        num_classes: number of output logits.
        in_channels: channels of the input images.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers = [conv_bn_relu(in_channels, _STEM_CHANNELS)]
        width = _STEM_CHANNELS
        for channels, stride in _BLOCKS:
            layers.append(depthwise_separable(width, channels, stride))
            width = channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, in_channels, H, W) images, H, W >= 8, to (N, num_classes) logits."""
        x = self.features(x)  # (N, 256, H / 8, W / 8)
        return self.classifier(torch.flatten(self.pool(x), 1))
