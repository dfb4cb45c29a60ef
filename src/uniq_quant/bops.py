"""BOPs: the bit operations of a network's convolutions and linear layers (paper, section 4).

With look-up-table inference a multiplication by a b_w-bit weight is a table read, so the paper
counts cost in bit operations rather than FLOPs. A convolution with n input channels per filter
(in_channels / groups), m output channels and a kernel of area k^2 costs, per output position,

    BOPs ~= m * n * k^2 * (b_a * b_w + b_a + b_w + log2(n * k^2))

(a b_a x b_w multiplication per multiply-accumulate, plus an addition as wide as the
accumulator, which grows by log2(n k^2) bits). A layer costs that times its output positions
(H_out * W_out for a 2-d convolution). A linear layer is a 1 x 1 convolution with one output
position per sample, or per position of its extra leading dimensions (tokens of a sequence).

``count_bops`` finds the layers by running one sample of batch 1 with forward hooks, so the
output positions are the real ones and the rows come in the order data flows through them.
Bits per layer:

* a quantized layer (``uniq_quant.nn``) counts the bits its quantizers are configured for, in any
  mode; a layer without an input quantizer reads 32-bit (float) input;
* a plain torch layer counts as 32-bit weights and 32-bit input;
* ``weight_bits`` / ``act_bits`` given to ``count_bops`` override every layer, as if the whole
  network were quantized at those bits;
* the network's first layer reads the network input: without an input quantizer of its own it
  counts ``first_input_bits`` (8 by default: images are 8-bit), also under an ``act_bits``
  override, since the network input is never re-quantized.

Layers computed without calling a Conv/Linear module (the projections inside
``nn.MultiheadAttention``, transposed convolutions, ``F.linear`` calls) are not counted; a
Conv/Linear module that never runs is reported in a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from uniq_quant._validation import check_bits
from uniq_quant.nn import QuantLayerMixin
from uniq_quant.quantizers import ActivationQuantizer

logger = logging.getLogger(__name__)

BITS = range(1, 33)  # any integer width up to float32
FLOAT_BITS = 32  # bits of an unquantized weight, activation or other parameter
COUNTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_GIGA = 1e9


def bops_per_position(
    in_channels: int, out_channels: int, kernel_area: int, weight_bits: int, act_bits: int
) -> float:
    """BOPs of one output position of a convolution: m n k^2 (b_a b_w + b_a + b_w + log2(n k^2)).

    Args:
        in_channels: n, the input channels one filter sees (in_channels / groups).
        out_channels: m, the output channels.
        kernel_area: k^2, the number of kernel taps (k for a 1-d kernel, 1 for a linear layer).
        weight_bits: b_w, bits per weight.
        act_bits: b_a, bits per input activation.

    Returns:
        Bit operations per output position (per pixel of the output feature map).

    Example:
        >>> bops_per_position(4, 8, 4, weight_bits=2, act_bits=2)  # 128 * (4 + 2 + 2 + 4)
        1536.0
    """
    fan_in = in_channels * kernel_area
    per_mac = act_bits * weight_bits + act_bits + weight_bits + math.log2(fan_in)
    return out_channels * fan_in * per_mac


@dataclass(frozen=True)
class LayerBops:
    """The cost of one convolution or linear layer for one input sample.

    Attributes:
        name: the layer's qualified name in the model (``layer1.0.conv1``).
        type: the layer's class name.
        positions: output positions summed over the layer's calls (H_out * W_out for a conv2d).
        macs: multiply-accumulates, m * n * k^2 * positions.
        weight_bits: b_w counted for the layer.
        act_bits: b_a counted for the layer's input.
        bops: bit operations, ``bops_per_position`` * positions.
    """

    name: str
    type: str
    positions: int
    macs: int
    weight_bits: int
    act_bits: int
    bops: float


@dataclass(frozen=True)
class BopsReport:
    """Per-layer BOPs of a network for one input sample, with totals.

    Attributes:
        rows: one ``LayerBops`` per conv / linear layer, in the order data flows through them.
        size_bits: weight storage in bits: each counted layer's weight at its weight bits, every
            other parameter (biases, BatchNorm, uncounted layers) at 32 bits.
        input_shape: the sample's shape without the batch dimension.
    """

    rows: tuple[LayerBops, ...]
    size_bits: int
    input_shape: tuple[int, ...]

    @property
    def total_bops(self) -> float:
        """Bit operations per input sample."""
        return sum(row.bops for row in self.rows)

    @property
    def total_macs(self) -> int:
        """Multiply-accumulates per input sample."""
        return sum(row.macs for row in self.rows)

    @property
    def gbops(self) -> float:
        """Giga bit operations (1e9 BOPs) per input sample."""
        return self.total_bops / _GIGA

    @property
    def size_bytes(self) -> float:
        """Weight storage in bytes (``size_bits`` / 8)."""
        return self.size_bits / 8

    def to_dict(self) -> dict[str, object]:
        """The report as JSON-ready plain types, totals included."""
        return {
            "input_shape": list(self.input_shape),
            "total_bops": self.total_bops,
            "gbops": self.gbops,
            "total_macs": self.total_macs,
            "size_bits": self.size_bits,
            "size_bytes": self.size_bytes,
            "rows": [dataclasses.asdict(row) for row in self.rows],
        }

    def format_table(self) -> str:
        """A text table: one line per layer, then the totals in GMACs, GBOPs and MiB."""
        name_width = max([len("layer"), *(len(row.name) for row in self.rows)])
        type_width = max([len("type"), *(len(row.type) for row in self.rows)])
        header = (
            f"{'layer':<{name_width}}  {'type':<{type_width}}  {'positions':>9}  "
            f"{'MMACs':>9}  {'W':>2}  {'A':>2}  {'GBOPs':>9}  {'share':>6}"
        )
        lines = [header, "-" * len(header)]
        total = self.total_bops or 1.0  # an empty report has no share to divide
        for row in self.rows:
            lines.append(
                f"{row.name:<{name_width}}  {row.type:<{type_width}}  {row.positions:>9}  "
                f"{row.macs / 1e6:>9.2f}  {row.weight_bits:>2}  {row.act_bits:>2}  "
                f"{row.bops / _GIGA:>9.3f}  {100 * row.bops / total:>5.1f}%"
            )
        lines.append("-" * len(header))
        lines.append(
            f"total: {len(self.rows)} layers, {self.total_macs / _GIGA:.3f} GMACs, "
            f"{self.gbops:.3f} GBOPs, weights {self.size_bytes / 2**20:.2f} MiB "
            f"per input of shape {self.input_shape}"
        )
        return "\n".join(lines)


def count_bops(
    model: nn.Module,
    input_shape: Sequence[int],
    weight_bits: int | None = None,
    act_bits: int | None = None,
    first_input_bits: int = 8,
) -> BopsReport:
    """Count the BOPs of ``model`` on one input sample, layer by layer.

    The model runs once in eval mode without gradients on a zero input of shape
    (1, *input_shape); every module's train/eval flag and every activation quantizer's mode are
    restored afterwards, and no buffer changes.

    Args:
        model: any module whose convolutions and linear layers are torch or ``uniq_quant.nn``
            layers.
        input_shape: one sample's shape without the batch dimension, e.g. (3, 224, 224).
        weight_bits: if given, every layer's weight bits (1..32), as if quantized at them.
        act_bits: if given, every layer's input bits (1..32), except the first layer's input.
        first_input_bits: bits of the network input (1..32), counted for the first layer's
            input unless that layer quantizes its input itself.

    Returns:
        A BopsReport with one row per conv / linear layer that ran.

    Raises:
        TypeError: ``model`` is not an nn.Module.
        ValueError: a bits argument is outside 1..32, or ``input_shape`` is not a tuple of
            positive ints.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = _check_input_shape(input_shape)
    weight_bits = None if weight_bits is None else check_bits(weight_bits, BITS, "weight bits")
    act_bits = None if act_bits is None else check_bits(act_bits, BITS, "act bits")
    first_input_bits = check_bits(first_input_bits, BITS, "first input bits")

    # 1. run one sample and collect every counted layer's output positions, in call order
    positions = _trace_positions(model, shape)

    # 2. price each layer at the bits it is counted at
    rows, weight_bits_of = [], {}
    for index, (name, (layer, count)) in enumerate(positions.items()):
        w_bits = _weight_bits(layer) if weight_bits is None else weight_bits
        a_bits = _act_bits(layer, act_bits, first_input_bits if index == 0 else None)
        rows.append(_price(name, layer, count, w_bits, a_bits))
        weight_bits_of[id(layer.weight)] = w_bits

    # 3. weight storage: counted weights at their bits, all other parameters in float
    size_bits = sum(p.numel() * weight_bits_of.get(id(p), FLOAT_BITS) for p in model.parameters())
    return BopsReport(rows=tuple(rows), size_bits=size_bits, input_shape=shape)


def _check_input_shape(input_shape: object) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints, else a ValueError naming the value."""
    valid = (
        isinstance(input_shape, (tuple, list))
        and len(input_shape) > 0
        and all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0
            for d in input_shape
        )
    )
    if not valid:
        raise ValueError(
            f"input_shape must be a tuple of positive ints without the batch dimension, "
            f"e.g. (3, 224, 224), got {input_shape!r}"
        )
    return tuple(int(d) for d in input_shape)


def _trace_positions(model: nn.Module, shape: tuple[int, ...]) -> dict[str, tuple[nn.Module, int]]:
    """Run one sample; map each counted layer that ran to (layer, output positions summed)."""
    found: dict[str, tuple[nn.Module, int]] = {}
    layers = {name: m for name, m in model.named_modules() if isinstance(m, COUNTED_LAYERS)}

    def record(name: str, layer: nn.Module, output: torch.Tensor) -> None:
        _, m, _ = _geometry(layer)
        previous = found.get(name, (layer, 0))[1]
        found[name] = (layer, previous + output.numel() // m)

    handles = [
        layer.register_forward_hook(lambda mod, _inputs, out, name=name: record(name, mod, out))
        for name, layer in layers.items()
    ]
    try:
        with _inference_state(model), torch.no_grad():
            model(_sample(model, shape))
    finally:
        for handle in handles:
            handle.remove()

    skipped = sorted(set(layers) - set(found))
    if skipped:
        logger.warning("not counted, never called in forward: %s", ", ".join(skipped))
    return found


@contextlib.contextmanager
def _inference_state(model: nn.Module) -> Iterator[None]:
    """Eval mode with float activation quantizers (no range needed); restores both on exit."""
    training = {m: m.training for m in model.modules()}
    act_modes = {m: m.mode for m in model.modules() if isinstance(m, ActivationQuantizer)}
    try:
        model.eval()
        for quantizer in act_modes:
            quantizer.mode = "float"
        yield
    finally:
        for module, flag in training.items():
            module.training = flag
        for quantizer, mode in act_modes.items():
            quantizer.mode = mode


def _sample(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """A zero input of shape (1, *shape) on the model's device, in its floating dtype."""
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    floats = [p.dtype for p in params if p.is_floating_point()]
    return torch.zeros((1, *shape), device=device, dtype=floats[0] if floats else None)


def _price(
    name: str, layer: nn.Module, positions: int, weight_bits: int, act_bits: int
) -> LayerBops:
    """The row of one layer with ``positions`` output positions at the given bits."""
    n, m, kernel_area = _geometry(layer)
    return LayerBops(
        name=name,
        type=type(layer).__name__,
        positions=positions,
        macs=m * n * kernel_area * positions,
        weight_bits=weight_bits,
        act_bits=act_bits,
        bops=bops_per_position(n, m, kernel_area, weight_bits, act_bits) * positions,
    )


def _geometry(layer: nn.Module) -> tuple[int, int, int]:
    """(n, m, k^2): input channels per filter, output channels, kernel area."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features, 1
    return layer.in_channels // layer.groups, layer.out_channels, math.prod(layer.kernel_size)


def _weight_bits(layer: nn.Module) -> int:
    """The weight bits a layer is configured for: its quantizer's, or 32 for a torch layer."""
    if isinstance(layer, QuantLayerMixin):
        return layer.weight_quantizer.bits
    return FLOAT_BITS


def _act_bits(layer: nn.Module, override: int | None, network_input: int | None) -> int:
    """The input bits of a layer; ``network_input`` is given for the first layer only."""
    quantizer = layer.input_quantizer if isinstance(layer, QuantLayerMixin) else None
    if network_input is not None and (quantizer is None or override is not None):
        return network_input
    if override is not None:
        return override
    return FLOAT_BITS if quantizer is None else quantizer.bits
