"""Building blocks shared by the model families: convolution + BatchNorm + ReLU.

Every convolution that feeds a BatchNorm has no bias (the BatchNorm shift replaces it, and export
can fold the BatchNorm into the convolution). Every ReLU is its own module, never shared between
two places, so hooks and data-flow ordering see one call per module.
"""

from __future__ import annotations

from torch import nn


def conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
) -> nn.Sequential:
    """A ``kernel_size`` convolution with "same" padding, then BatchNorm2d and ReLU.

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out.
        kernel_size: odd square kernel size.
        stride: convolution stride; the output is ceil(H / stride) x ceil(W / stride).
        groups: convolution groups (``in_channels`` for a depthwise convolution).

    Returns:
        A module mapping (N, C_in, H, W) to (N, C_out, ceil(H / stride), ceil(W / stride)).
    """
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        groups=groups,
        bias=False,
    )
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
