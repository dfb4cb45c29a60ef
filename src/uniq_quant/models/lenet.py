"""LeNet-5 (LeCun et al. 1998) with ReLU and BatchNorm, for any image of at least 8 x 8 pixels.

    conv 5x5, 6  -> BN -> ReLU -> max-pool 2
    conv 5x5, 16 -> BN -> ReLU -> max-pool 2
    adaptive average pool to 5 x 5 -> 400 -> FC 120 -> ReLU -> FC 84 -> ReLU -> FC num_classes

Departures from the 1998 network, each so that one architecture serves 8 x 8 digits as well as
28 x 28 MNIST and 32 x 32 CIFAR: both convolutions pad by 2 (the original pads neither; with
the second unpadded an 8 x 8 image would shrink to nothing), and an adaptive average pool brings
the last feature map to the 5 x 5 grid the classifier expects. Weights and their count are those
of LeNet-5 (plus BatchNorm); only the spatial sizes between layers change with the input.
"""

from __future__ import annotations

import torch
from torch import nn

from uniq_quant.models._layers import conv_bn_relu

_KERNEL = 5
_GRID = 5  # spatial size of the last feature map in the original network (16 x 5 x 5 = 400)
_CHANNELS = (6, 16)
_HIDDEN = (120, 84)


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and BatchNorm.

    Args:
        num_classes: number of output logits.
        in_channels: channels of the input images.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        c1, c2 = _CHANNELS
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, c1, _KERNEL),
            nn.MaxPool2d(2),
            conv_bn_relu(c1, c2, _KERNEL),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(_GRID),
        )
        h1, h2 = _HIDDEN
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * _GRID * _GRID, h1),
            nn.ReLU(inplace=True),
            nn.Linear(h1, h2),
            nn.ReLU(inplace=True),
            nn.Linear(h2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, in_channels, H, W) images, H, W >= 8, to (N, num_classes) logits."""
        return self.classifier(self.features(x))
