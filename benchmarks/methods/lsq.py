"""LSQ: learned step size quantization of weights (Esser et al., ICLR 2020, section 2).

A signed b-bit weight quantizer with one learnable step s per layer:

    w_q = s * round(clamp(w / s, -Q_N, Q_P)),   Q_N = 2^(b-1), Q_P = 2^(b-1) - 1,

rounded with a straight-through gradient (d round(x) / dx = 1), so w and s both get gradients;
the gradient of s is scaled by g = 1 / sqrt(N_W * Q_P) (N_W: weights in the layer) to keep its
update in proportion to the weights'. s starts at 2 * mean(|w|) / sqrt(Q_P).

``LsqWeightQuantizer`` stands in for a quantized layer's ``weight_quantizer``: it has the
``bits`` and ``mode`` a layer and ``count_bops`` read. Only weights use LSQ here; activations
keep the layer's uniform input quantizer, as in every other in-house method of the benchmark.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MIN_BITS = 2  # Q_P = 2^(b-1) - 1 is 0 below two bits


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` in the forward pass; its gradient multiplied by ``scale`` in the backward pass."""
    scaled = x * scale
    return (x - scaled).detach() + scaled


def round_straight_through(x: torch.Tensor) -> torch.Tensor:
    """round(x) in the forward pass, identity in the backward pass."""
    return (torch.round(x) - x).detach() + x


def lsq_quantize(w: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """Fake-quantize ``w`` on the signed ``bits``-bit grid of ``step``, LSQ's gradients."""
    q_n, q_p = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    s = scale_gradient(step, 1.0 / math.sqrt(w.numel() * q_p))
    return round_straight_through(torch.clamp(w / s, -q_n, q_p)) * s


class LsqWeightQuantizer(nn.Module):
    """A weight quantizer with a learnable step, initialised from ``weight``.

    Args:
        bits: bits per weight, 2..8.
        weight: the layer's weight, for the initial step.
    """

    def __init__(self, bits: int, weight: torch.Tensor) -> None:
        super().__init__()
        if not MIN_BITS <= bits <= 8:
            raise ValueError(f"LSQ weight bits must be an integer in 2..8, got {bits!r}")
        self.bits = bits
        self.mode = "quant"
        q_p = 2 ** (bits - 1) - 1
        init = 2 * weight.detach().abs().mean() / math.sqrt(q_p)
        self.step = nn.Parameter(init.reshape(()).clone())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.mode == "float":
            return w
        return lsq_quantize(w, self.step, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, mode={self.mode}, step={float(self.step):.4g}"
