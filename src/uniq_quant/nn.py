"""Quantized layers: torch's Conv1d, Conv2d and Linear with a weight and an input quantizer.

Each layer subclasses the torch layer it replaces, so a float state_dict loads with unchanged
keys, and computes its effective weight inside ``forward`` (the float ``weight`` parameter is never
written). The ``mode`` of a layer sets both quantizers:

    layer mode  | weight quantizer | input quantizer
    float       | float            | float (still tracking its range in training)
    noise       | noise            | noise if act_noise else quant
    quant       | quant            | quant

Grouped and depthwise convolutions are supported: a per-channel fit groups by output channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uniq_quant._validation import check_choice
from uniq_quant.quantizers import MODES, ActivationQuantizer, WeightQuantizer


class QuantLayerMixin:
    """Shared quantizer plumbing of the quantized layers (mixed in before the torch layer).

    Keyword args (the rest go to the torch layer):
        weight_bits: bits per weight, 1..8.
        act_bits: bits of the input, 2..8, or None for no input quantizer.
        per_channel: fit one weight distribution per output channel.
        fit: ``gaussian`` or ``empirical`` weight distribution fit.
        act_noise: in noise mode, inject noise into the input instead of rounding it.
        act_percentile: quantile of |input| tracked as the input's clipping range.
        learn_levels: once frozen, train the weight levels (``WeightQuantizer``).

    Attributes:
        flow_index: position of the layer in data-flow order, set by ``prepare``.
        stage: the block of the gradual schedule the layer belongs to, set by the schedule.
    """

    weight: nn.Parameter

    def __init__(
        self,
        *args: object,
        weight_bits: int = 4,
        act_bits: int | None = None,
        per_channel: bool = False,
        fit: str = "gaussian",
        act_noise: bool = False,
        act_percentile: float = 0.999,
        learn_levels: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.weight_quantizer = WeightQuantizer(
            weight_bits, per_channel, fit, learn_levels=learn_levels, channels=self.weight.shape[0]
        )
        self.input_quantizer = (
            None if act_bits is None else ActivationQuantizer(act_bits, percentile=act_percentile)
        )
        self.act_noise = bool(act_noise)
        self.flow_index: int | None = None
        self.stage: int | None = None
        self._mode = "float"

    @classmethod
    def from_float(cls, module: nn.Module, **quant_kwargs: object) -> QuantLayerMixin:
        """Build the quantized twin of ``module`` sharing its weight and bias Parameters.

        Args:
            module: an instance of the torch layer this class subclasses.
            **quant_kwargs: the keyword args of ``QuantLayerMixin``.
        """
        base = next(b for b in cls.__mro__ if b in QUANTIZED_TWINS)
        if type(module) is not base:
            raise TypeError(f"{cls.__name__}.from_float expects a {base.__name__}, got {module!r}")
        layer = cls(**_constructor_args(module), device="meta", **quant_kwargs)
        layer.weight = module.weight
        layer.bias = module.bias
        layer.train(module.training)
        return layer.to(module.weight.device)

    @property
    def mode(self) -> str:
        """``float``, ``noise`` or ``quant``: sets the weight and input quantizers together."""
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self._mode = check_choice(mode, MODES, "layer mode")
        self.weight_quantizer.mode = mode
        if self.input_quantizer is not None:
            input_mode = "quant" if mode == "noise" and not self.act_noise else mode
            self.input_quantizer.mode = input_mode

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward pass uses in the current mode, shaped like ``weight``."""
        return self.weight_quantizer(self.weight)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The layer input after the input quantizer (unchanged when there is none)."""
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def freeze(self) -> None:
        """Quantize the weight once, cache its codes, and stop its gradient (bias stays float)."""
        self.mode = "quant"
        self.weight_quantizer.freeze(self.weight)
        self.weight.requires_grad_(False)

    def extra_repr(self) -> str:
        act = "float" if self.input_quantizer is None else self.input_quantizer.bits
        settings = f"weight_bits={self.weight_quantizer.bits}, act_bits={act}, mode={self.mode}"
        return f"{super().extra_repr()}, {settings}"


class QuantConv1d(QuantLayerMixin, nn.Conv1d):
    """``nn.Conv1d`` with UNIQ weight quantization and optional input quantization."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantize_input(x), self.quantized_weight(), self.bias)


class QuantConv2d(QuantLayerMixin, nn.Conv2d):
    """``nn.Conv2d`` (grouped and depthwise included) with UNIQ weight and input quantization."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantize_input(x), self.quantized_weight(), self.bias)


class QuantLinear(QuantLayerMixin, nn.Linear):
    """``nn.Linear`` with UNIQ weight quantization and optional input quantization."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantize_input(x), self.quantized_weight(), self.bias)


QUANTIZED_TWINS: dict[type[nn.Module], type[QuantLayerMixin]] = {
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
    nn.Linear: QuantLinear,
}


def _constructor_args(module: nn.Module) -> dict[str, object]:
    """The constructor arguments that rebuild ``module`` (a Conv1d, Conv2d or Linear)."""
    if isinstance(module, nn.Linear):
        return {
            "in_features": module.in_features,
            "out_features": module.out_features,
            "bias": module.bias is not None,
        }
    return {
        "in_channels": module.in_channels,
        "out_channels": module.out_channels,
        "kernel_size": module.kernel_size,
        "stride": module.stride,
        "padding": module.padding,
        "dilation": module.dilation,
        "groups": module.groups,
        "bias": module.bias is not None,
        "padding_mode": module.padding_mode,
    }
