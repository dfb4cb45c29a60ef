"""Quantize a weight tensor to b-bit codes and levels, and back (the public entry points).

``quantize(w, bits)`` returns (codes, levels): codes are uint8 indices shaped like ``w``, levels
the k = 2^bits representative values, of shape (k,) per tensor or (C_out, k) per output channel.
``dequantize(codes, levels)`` looks the levels up. ``fake_quantize`` does both in one step with a
straight-through gradient (d fake_quantize(w) / dw = identity), the usual quantization-aware
training baseline. See ``codebook`` for the methods.

Defined results on edge cases:
* a constant tensor (zero spread): ``empirical``, ``uniform``, ``uniform_symmetric`` and
  ``kmeans`` return it exactly; ``kquantile`` floors sigma at 1e-5, so every value moves by at
  most 1e-5 * Phi^-1(1 - 1/(2k)) < 3e-5.
* an empty tensor, NaN or infinite values, bits outside 1..8 or an unknown method: ValueError.
"""

from __future__ import annotations

import torch

from uniq_quant._validation import check_bits, check_choice, check_weights
from uniq_quant.functional.codebook import METHODS, decode, encode, fit_codebook


def quantize(
    w: torch.Tensor, bits: int, method: str = "kquantile", per_channel: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``w`` to ``bits``-bit codes and their levels.

    Args:
        w: floating-point weights; per-channel groups by dim 0 (output channels).
        bits: bits per code, 1..8 (k = 2^bits levels).
        method: one of ``METHODS``; ``kquantile`` is UNIQ's Gaussian k-quantile quantizer.
        per_channel: fit one codebook per output channel instead of one per tensor.

    Returns:
        codes: uint8 tensor shaped like ``w`` with values in 0..k-1.
        levels: (k,) or (C_out, k) tensor, sorted ascending, in ``w``'s dtype.

    Raises:
        TypeError: ``w`` is not a floating-point tensor.
        ValueError: bad bits or method, or ``w`` empty or not finite.

    Example:
        >>> codes, levels = quantize(torch.randn(64, 32), bits=2)
        >>> codes.dtype, tuple(levels.shape)
        (torch.uint8, (4,))
    """
    check_weights(w)
    bits = check_bits(bits)
    check_choice(method, METHODS, "quantization method")
    codebook = fit_codebook(w.detach(), bits, method, per_channel)
    codes = encode(w.detach(), codebook, per_channel)
    levels = codebook.levels.to(w.dtype)
    return codes, levels if per_channel and w.dim() >= 1 else levels[0]


def dequantize(codes: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Rebuild weights from codes and levels: ``levels[codes]`` (per channel: row c for channel c).

    Args:
        codes: integer tensor of codes in 0..k-1; per channel, dim 0 indexes the channels.
        levels: (k,) per tensor or (C_out, k) per channel.

    Returns:
        Tensor shaped like ``codes`` in ``levels``' dtype.
    """
    if codes.is_floating_point() or codes.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor (uint8 from quantize), got {codes.dtype}")
    if levels.dim() not in (1, 2) or (levels.dim() == 2 and levels.shape[0] != codes.shape[0]):
        raise ValueError(
            f"levels must have shape (k,) or (C_out, k) with C_out = codes.shape[0] = "
            f"{codes.shape[0] if codes.dim() else 1}, got {tuple(levels.shape)}"
        )
    return decode(codes, levels)


def straight_through(w: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``target`` in the forward pass (bit-exact), with the gradient of ``w`` in the backward pass.

    A custom autograd function: the forward value is ``target`` itself (no arithmetic, so no
    rounding and no pass over the weights), and the backward pass hands the gradient to ``w``
    unchanged; ``target`` gets none.
    """
    if not (torch.is_grad_enabled() and w.requires_grad):
        return target.detach()
    return _StraightThrough.apply(w, target.detach())


class _StraightThrough(torch.autograd.Function):
    """Forward: the second input; backward: the gradient goes to the first, unchanged."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return target.view_as(target)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` in the forward pass (bit-exact), its gradient times ``scale`` in the backward pass."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x
    return _ScaleGradient.apply(x, scale)


class _ScaleGradient(torch.autograd.Function):
    """Forward: the input unchanged; backward: the gradient times a constant."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def fake_quantize(
    w: torch.Tensor, bits: int, method: str = "kquantile", per_channel: bool = False
) -> torch.Tensor:
    """``dequantize(*quantize(w, ...))`` in the forward pass, identity in the backward pass."""
    codes, levels = quantize(w, bits, method, per_channel)
    return straight_through(w, dequantize(codes, levels))
