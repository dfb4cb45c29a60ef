"""CIFAR-style ResNets (He et al. 2016, "Deep Residual Learning", section 4.2).

    conv 3x3, 16 -> BN -> ReLU
    stage 1: n basic blocks, 16 channels
    stage 2: n basic blocks, 32 channels, the first with stride 2
    stage 3: n basic blocks, 64 channels, the first with stride 2
    global average pool -> FC num_classes

with depth = 6n + 2 (ResNet-20: n = 3, ResNet-32: n = 5, ResNet-56: n = 9). A basic block is
conv 3x3 -> BN -> ReLU -> conv 3x3 -> BN, plus the shortcut, then ReLU.

Shortcuts are option A of the paper, as in its CIFAR experiments: the identity, and where a
block halves the resolution and doubles the channels, the input subsampled by 2 and padded with
zero channels. They have no parameters, so every weight layer is a 3x3 convolution except the
classifier, and the parameter counts are the paper's (0.27M, 0.46M, 0.85M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEPTHS = (20, 32, 56)
_STAGE_CHANNELS = (16, 32, 64)
_STAGE_STRIDES = (1, 2, 2)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and append zero channels up to ``out_channels``.

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out >= C_in.
        stride: spatial subsampling factor.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        assert out_channels >= in_channels, "option-A shortcuts only add channels"
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, C_in, H, W) to (N, C_out, ceil(H / stride), ceil(W / stride))."""
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity or option-A shortcut.

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out.
        stride: stride of the first convolution (and of the shortcut).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        same = stride == 1 and in_channels == out_channels
        self.shortcut = nn.Identity() if same else PadShortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, C_in, H, W) to (N, C_out, ceil(H / stride), ceil(W / stride))."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n + 2) for small images.

    Args:
        depth: 20, 32 or 56 (any 6n + 2 works; ``DEPTHS`` are the registered ones).
        num_classes: number of output logits.
        in_channels: channels of the input images.

    Raises:
        ValueError: ``depth`` is not of the form 6n + 2 with n >= 1.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (e.g. {DEPTHS}), got {depth!r}"
            )
        blocks_per_stage = (depth - 2) // 6
        width = _STAGE_CHANNELS[0]
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        for channels, stride in zip(_STAGE_CHANNELS, _STAGE_STRIDES, strict=True):
            strides = [stride] + [1] * (blocks_per_stage - 1)
            blocks = []
            for s in strides:
                blocks.append(BasicBlock(width, channels, s))
                width = channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, in_channels, H, W) images to (N, num_classes) logits."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))  # (N, 64, H / 4, W / 4)
        return self.fc(torch.flatten(self.pool(x), 1))


def _init_weights(model: nn.Module) -> None:
    """He initialization for the convolutions (He et al. 2015), as in the ResNet paper."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
