"""The activation quantizer: uniform b-bit quantization of a layer's input with a tracked range.

The range [lo, hi] is learned from the data in training and is the very range used at eval:
* hi (``clip``) is an exponential moving average of a high quantile of |x| per training batch
  (``percentile``, on about 2^14 evenly strided samples), robust to rare outliers;
* lo is 0 while every input seen so far was non-negative (unsigned, 2^b - 1 steps) and -hi once
  a negative input was seen (symmetric, 2^(b-1) - 1 steps each side).

With step s = hi / steps, ``quant`` mode computes q(x) = s * round(clamp(x, lo, hi) / s); its
gradient is 1 inside (lo, hi) and 0 outside (straight-through inside the range; the boundary
itself has measure zero, and a ReLU already passes no gradient at 0). ``noise`` mode
adds U(-s/2, s/2) to clamp(x, lo, hi) instead of rounding in training, as in the paper's first
version, and rounds in eval; the noise takes 2^16 evenly spaced values (``symmetric_uniform``,
16 random bits per activation, a step of 2^-16 s). ``float`` passes x unchanged but still
tracks the range, so the range is calibrated when quantization starts. ``freeze()`` stops the
range from moving.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from uniq_quant._validation import ACT_BITS, check_bits, check_choice
from uniq_quant.functional.noise import symmetric_uniform

MODES = ("float", "noise", "quant")
_MAX_SAMPLES = 2**14  # the quantile is taken on an evenly strided subsample of this size
_MIN_CLIP = 1e-8  # keeps the step positive for an all-zero input


class ActivationQuantizer(nn.Module):
    """Uniform activation quantizer with a running, outlier-robust clipping range.

    Args:
        bits: bits per activation, 2..8.
        mode: initial mode, one of ``MODES``.
        percentile: quantile of |x| tracked as the clipping range, in (0, 1].
        momentum: weight of a new batch in the moving average, in (0, 1].
    """

    def __init__(
        self, bits: int = 8, mode: str = "float", percentile: float = 0.999, momentum: float = 0.1
    ) -> None:
        super().__init__()
        self.bits = check_bits(bits, ACT_BITS, "activation bits")
        if not 0 < percentile <= 1 or not 0 < momentum <= 1:
            raise ValueError(
                f"percentile and momentum must lie in (0, 1], got {percentile!r} and {momentum!r}"
            )
        self.percentile = float(percentile)
        self.momentum = float(momentum)
        self.frozen = False
        self.mode = mode
        self.register_buffer("clip", torch.tensor(0.0))
        self.register_buffer("signed", torch.tensor(False))
        self.register_buffer("calibrated", torch.tensor(False))
        self._number_bounds: tuple | None = None  # (key, (lo, hi, step), keyed buffers)

    @property
    def mode(self) -> str:
        """``float``, ``noise`` or ``quant``."""
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self._mode = check_choice(mode, MODES, "activation quantizer mode")

    def freeze(self) -> None:
        """Stop tracking the range: from now on it is fixed, in training as in eval."""
        self.frozen = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quantized (or, in float mode, unchanged) activations shaped like ``x``."""
        if self.training and not self.frozen:
            self._observe(x.detach())
        if self.mode == "float":
            return x
        if not (self.training or torch.compiler.is_compiling() or bool(self.calibrated)):
            raise RuntimeError(
                "the activation quantizer has no range yet: run training forward passes (or "
                "calibrate with model.train() on a few batches) before evaluating in quant mode"
            )
        lo, hi, step = self._grid_bounds(x)
        noise = self.mode == "noise" and self.training
        if not (torch.is_grad_enabled() and x.requires_grad):
            return _clamp_to_grid(x, lo, hi, step, noise)
        if torch.compiler.is_compiling():
            return _clamp_to_grid_traced(x, lo, hi, step, noise)
        if isinstance(lo, float):
            return _hardtanh_to_grid(x, lo, hi, step, noise)
        return _ClampToGrid.apply(x, lo, hi, step, noise)

    def range(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lo, hi, step) of the quantization grid, as 0-dim tensors."""
        hi = self.clip.clamp_min(_MIN_CLIP)
        steps = torch.where(self.signed, 2 ** (self.bits - 1) - 1, 2**self.bits - 1)
        lo = torch.where(self.signed, -hi, torch.zeros_like(hi))
        return lo, hi, hi / steps

    def extra_repr(self) -> str:
        frozen = ", frozen" if self.frozen else ""
        return f"bits={self.bits}, mode={self.mode}, percentile={self.percentile}{frozen}"

    def _grid_bounds(self, x: torch.Tensor) -> tuple:
        """``range()`` as Python floats for a CPU input, else as 0-dim tensors of ``x``'s dtype.

        A CPU clamp with number bounds is several times faster than with tensor bounds, and
        reading a CPU number is free; the numbers are kept until the range buffers change (their
        in-place version counters, or another tensor in their place), so a frozen or evaluated
        quantizer reads them once. On an accelerator the tensors stay put, so nothing
        synchronizes; under ``torch.compile`` they stay tensors too: reading a number would
        break the graph.
        """
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            return tuple(t.to(x.dtype) for t in self.range())
        buffers = (self.clip, self.signed)
        if any(t.is_inference() for t in buffers):  # no version counter to key on
            return tuple(t.item() for t in self.range())
        key = (self.bits, *((id(t), t._version) for t in buffers))
        if self._number_bounds is None or self._number_bounds[0] != key:
            # the buffers are kept with the numbers so that their ids cannot be reused
            self._number_bounds = (key, tuple(t.item() for t in self.range()), buffers)
        return self._number_bounds[1]

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        flat = x.reshape(-1)
        flat = flat[:: max(1, flat.numel() // _MAX_SAMPLES)].abs().float()
        rank = max(1, math.ceil(self.percentile * flat.numel()))
        stat = flat.topk(flat.numel() - rank + 1, sorted=False).values.amin()  # rank-th smallest
        moved = torch.lerp(self.clip, stat, self.momentum)
        self.clip.copy_(torch.where(self.calibrated, moved, stat))
        self.signed.logical_or_(x.amin() < 0)
        self.calibrated.fill_(True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A float checkpoint has no range: keep the current one and report nothing missing.
        if any(prefix + name in state_dict for name in self._buffers):
            super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _clamp_to_grid(x, lo, hi, step, noise: bool) -> torch.Tensor:
    """step * round(clamp(x, lo, hi) / step); with ``noise``, clamp(x, lo, hi) + U(-step/2,
    step/2) instead. The bounds are numbers or 0-dim tensors (``_grid_bounds``)."""
    return _onto_grid_(torch.clamp(x, lo, hi), step, noise)


def _onto_grid_(clamped: torch.Tensor, step, noise: bool) -> torch.Tensor:
    """Round ``clamped`` (already within [lo, hi]) to the grid of ``step`` in place; with
    ``noise``, add U(-step/2, step/2) instead."""
    if not noise:
        return clamped.div_(step).round_().mul_(step)
    if isinstance(step, float):
        return clamped.add_(symmetric_uniform(clamped.shape, step / 2, clamped))
    return clamped.add_(symmetric_uniform(clamped.shape, 0.5, clamped).mul_(step))


def _hardtanh_to_grid(x, lo: float, hi: float, step: float, noise: bool) -> torch.Tensor:
    """``_ClampToGrid`` for number bounds, with autograd's own hardtanh node: its backward is
    the same fused ``hardtanh_backward`` mask, without a Python backward call per layer.

    hardtanh saves its input, not its output, so the output may be moved onto the grid in place
    outside autograd: the forward value is the grid's, the gradient is hardtanh's.
    """
    out = F.hardtanh(x, lo, hi)
    with torch.no_grad():
        _onto_grid_(out, step, noise)
    return out


def _clamp_to_grid_traced(x, lo, hi, step, noise: bool) -> torch.Tensor:
    """``_ClampToGrid`` for ``torch.compile``: c + sg(q(c) - c) with c = clamp(x, lo, hi), whose
    gradient is clamp's (1 on [lo, hi], the boundary of measure zero aside). Inductor then saves
    no mask for the backward pass in the layout of the logical shape, which costs a strided
    write per element when it lays the activations out channels-last."""
    clamped = torch.clamp(x, lo, hi)
    return clamped + (_clamp_to_grid(clamped.detach(), lo, hi, step, noise) - clamped).detach()


class _ClampToGrid(torch.autograd.Function):
    """``_clamp_to_grid`` for 0-dim tensor bounds, with the gradient 1 inside (lo, hi) and 0
    outside. Saves the input itself (often already kept alive by the ReLU before it) and
    rebuilds the mask in backward."""

    @staticmethod
    def forward(ctx, x, lo, hi, step, noise):
        ctx.save_for_backward(x, lo, hi)
        return _clamp_to_grid(x, lo, hi, step, noise)

    @staticmethod
    def backward(ctx, grad):
        x, lo, hi = ctx.saved_tensors
        return torch.where((x > lo) & (x < hi), grad, 0.0), None, None, None, None
