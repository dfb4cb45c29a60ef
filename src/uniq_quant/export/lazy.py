"""A frozen weight quantizer that keeps its codes packed and expands them in every forward.

``load_quantized(path, lazy=True)`` puts one into every quantized layer in place of the
``WeightQuantizer`` and drops the layer's float ``weight`` (it becomes None). The layer then
holds ceil(numel * bits / 8) bytes of packed codes and its levels instead of a float weight
plus uint8 codes: 4-bit weights take 1/10 of the eager memory. The price is a look-up per
forward (per byte at 1, 2, 4 and 8 bits, ``unpack_levels``); the effective weight is
bit-identical to the eager one.

A lazy layer is for inference only: it cannot leave ``quant`` mode or be trained, and tools that
read ``layer.weight`` (the per-layer report) need an eagerly loaded model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from uniq_quant.export.packing import packed_size, unpack_codes, unpack_levels

_MODE = "quant"


class PackedWeightQuantizer(nn.Module):
    """Frozen k-quantile weight quantizer whose codes stay packed in memory.

    Args:
        packed: flat uint8 codes packed at ``bits`` bits each (``pack_codes``).
        levels: (k,) per tensor or (C_out, k) per channel.
        bits: bits per code, 1..8.
        shape: shape of the weight (and of the unpacked codes).
        per_channel: whether ``levels`` hold one row per output channel.
        fit: the distribution fit the codes were quantized with (informational).
    """

    def __init__(
        self,
        packed: torch.Tensor,
        levels: torch.Tensor,
        bits: int,
        shape: tuple[int, ...],
        per_channel: bool,
        fit: str,
    ) -> None:
        super().__init__()
        self.bits = bits
        self.shape = tuple(shape)
        self.per_channel = per_channel
        self.fit = fit
        self.register_buffer("packed", packed)
        self.register_buffer("levels", levels)
        expected = packed_size(math.prod(self.shape), bits)
        if packed.dtype != torch.uint8 or tuple(packed.shape) != (expected,):
            raise ValueError(
                f"a weight of shape {self.shape} at {bits} bits packs into {expected} uint8 "
                f"bytes, got a {packed.dtype} tensor of shape {tuple(packed.shape)}; pass "
                "pack_codes' output"
            )

    @property
    def mode(self) -> str:
        """Always ``quant``: there is no float weight to return to."""
        return _MODE

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode != _MODE:
            raise RuntimeError(
                f"a lazily loaded layer has only its codes and cannot switch to mode {mode!r}; "
                "load the file with lazy=False to train or change modes"
            )

    @property
    def frozen(self) -> bool:
        """Always True: the codes and levels are fixed."""
        return True

    @property
    def effective_levels(self) -> torch.Tensor:
        """The levels the codes decode to: ``levels`` (a file stores the levels as learned)."""
        return self.levels

    @property
    def codes(self) -> torch.Tensor:
        """The unpacked uint8 codes, shaped like the weight (computed on every access)."""
        return unpack_codes(self.packed, self.bits, math.prod(self.shape), self.shape)

    def forward(self, w: torch.Tensor | None = None) -> torch.Tensor:
        """The effective weight, shaped ``shape``; ``w`` (the absent float weight) is ignored."""
        return unpack_levels(self.packed, self.levels, self.bits, self.shape)

    def extra_repr(self) -> str:
        granularity = "channel" if self.per_channel else "tensor"
        return f"bits={self.bits}, shape={self.shape}, fit={self.fit}, per_{granularity}, packed"
