"""Uniform noise injected in the uniformized domain: UNIQ's training-time quantizer emulation.

With F the CDF fitted to the weights and k = 2^bits (paper, section 3.1):

    w~ = F^-1( clamp(F(w) + e, 1/(2k), 1 - 1/(2k)) ),   e ~ U(-1/(2k), 1/(2k)) i.i.d.,

drawn anew at every call. The noise is exactly one bin wide in the u = F(w) domain, where the
k-quantile quantizer is uniform, so it has the law of that quantizer's error there. The clamp keeps
w~ inside [r_1, r_k], the outermost levels, as quantization would. e is drawn on a grid of 2^16
evenly spaced points of its interval (16 random bits per weight, ``symmetric_uniform``), a
step of 2^-16 of the bin width.

Gradient: straight-through, d w~ / d w = identity (``quantize.straight_through``),
and the fit's statistics are constants to autograd.
"""

from __future__ import annotations

import math

import torch

from uniq_quant._validation import check_bits, check_choice, check_weights
from uniq_quant.functional.distributions import (
    FITS,
    centered_stats,
    fit_distribution,
    grouped,
)
from uniq_quant.functional.quantize import straight_through


def uniform_noise(
    shape: torch.Size | tuple[int, ...],
    bits: int,
    like: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Samples of U(-1/(2k), 1/(2k)), k = 2^bits, on ``like``'s device and dtype.

    Drawn on a grid of 2^16 evenly spaced points (``symmetric_uniform``): the grid step,
    2^-16 of the noise width, is far below any quantization bin at 1..8 bits.
    """
    return symmetric_uniform(shape, 0.5 / 2**bits, like, generator)


def symmetric_uniform(
    shape: torch.Size | tuple[int, ...],
    half_width: float,
    like: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """U(-h, h) on the 2^16 points h * (j + 1/2) / 2^15, j = -2^15..2^15 - 1, one value each.

    Each value takes 16 random bits (``random_int16``) where a float draw spends a 64-bit
    word; on a CPU that makes the draw about three times cheaper. Under ``torch.compile`` the
    draw is one opaque operator (``uniq_quant::symmetric_uniform``) that the compiled graph
    calls as it is: inductor's own random numbers cost several times more on a CPU, it cannot
    view a buffer as a narrower dtype, and arithmetic on int16 inputs is not vectorized.
    """
    if torch.compiler.is_compiling() and generator is None:
        return _symmetric_uniform_op(like, list(shape), float(half_width))
    return _symmetric_grid(shape, half_width, like, generator)


def _symmetric_grid(shape, half_width: float, like: torch.Tensor, generator) -> torch.Tensor:
    step = half_width / 2**15
    return random_int16(shape, like.device, generator).to(like.dtype).add_(0.5).mul_(step)


def random_int16(
    shape: torch.Size | tuple[int, ...],
    device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniform int16 values (every one of the 2^16 equally likely), four per random 64-bit word."""
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), 2**63 - 1, generator=generator)  # all 64 bits uniform
    return words.view(torch.int16)[:count].reshape(shape)


@torch.library.custom_op(
    "uniq_quant::symmetric_uniform", mutates_args=(), tags=torch.Tag.nondeterministic_seeded
)
def _symmetric_uniform_op(like: torch.Tensor, shape: list[int], half_width: float) -> torch.Tensor:
    """``symmetric_uniform`` as an operator (``like`` gives only the device and dtype). Seeded:
    a compiled graph neither merges two calls nor recomputes one in the backward pass."""
    return _symmetric_grid(shape, half_width, like, None)


@_symmetric_uniform_op.register_fake
def _(like: torch.Tensor, shape: list[int], half_width: float) -> torch.Tensor:
    return like.new_empty(shape)


def inject_noise(
    w: torch.Tensor,
    bits: int,
    fit: str = "gaussian",
    per_channel: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return w~, the noisy weights that emulate ``bits``-bit k-quantile quantization.

    Args:
        w: floating-point weights; per-channel fits group by dim 0.
        bits: emulated bits per weight, 1..8.
        fit: ``gaussian`` (the paper) or ``empirical`` (the tensor's own quantiles).
        per_channel: fit one distribution per output channel.
        generator: optional torch.Generator for reproducible noise.

    Returns:
        Tensor shaped like ``w``; its gradient flows to ``w`` unchanged.

    Raises:
        ValueError: bad bits or fit, or ``w`` empty or not finite.
    """
    check_weights(w)
    check_choice(fit, FITS, "distribution fit")
    return noisy_weights(w, check_bits(bits), fit, per_channel, generator)


def noisy_weights(
    w: torch.Tensor,
    bits: int,
    fit: str = "gaussian",
    per_channel: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``inject_noise`` without the input checks, for the training hot path.

    The caller guarantees valid ``bits`` and ``fit``; non-finite weights give NaN outputs
    (checking finiteness would synchronize a GPU at every layer of every step).
    """
    if fit == "gaussian":
        if torch.compiler.is_compiling() and generator is None:
            return straight_through(w, _gaussian_noisy_op(w.detach(), bits, per_channel))
        return straight_through(w, _gaussian_noisy(w, bits, per_channel, generator))

    # the empirical fit: through its piecewise-linear CDF and inverse
    k = 2**bits
    with torch.no_grad():
        dist = fit_distribution(w, fit, per_channel)
        x = grouped(w, per_channel)
        u = dist.cdf(x.to(torch.float64) if x.dtype == torch.float64 else x.float())
        u = (u + uniform_noise(u.shape, bits, u, generator)).clamp(0.5 / k, 1 - 0.5 / k)
        noisy = dist.icdf(u).to(w.dtype).reshape(w.shape)
    return straight_through(w, noisy)


@torch.no_grad()
def _gaussian_noisy(
    w: torch.Tensor, bits: int, per_channel: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """The noisy weights of a Gaussian fit, computed in v = 2 F(w) - 1 = erf(z / sqrt(2)).

    Same law as ``F^-1(clamp(F(w) + e))``: v moves by 2e ~ U(-1/k, 1/k), is clamped to
    [-(1 - 1/k), 1 - 1/k] and maps back through erfinv. erf and erfinv cost about half of
    ndtr and ndtri on a CPU. Only v and the noise are allocated, every step works in place: on a
    CPU, writing fresh memory costs about as much as the arithmetic.
    """
    k = 2**bits
    mu, sigma, v = centered_stats(grouped(w, per_channel))  # v = w - mu, (G, N)
    scale = sigma * math.sqrt(2)
    v.div_(scale).erf_()
    v.add_(symmetric_uniform(v.shape, 1 / k, v, generator)).clamp_(-1 + 1 / k, 1 - 1 / k)
    return v.erfinv_().mul_(scale).add_(mu).to(w.dtype).reshape(w.shape)


@torch.library.custom_op(
    "uniq_quant::gaussian_noisy", mutates_args=(), tags=torch.Tag.nondeterministic_seeded
)
def _gaussian_noisy_op(w: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """``_gaussian_noisy`` as one opaque operator for ``torch.compile``: inductor computes erf
    and erfinv one element at a time on a CPU, several times slower than eager."""
    return _gaussian_noisy(w, bits, per_channel, None)


@_gaussian_noisy_op.register_fake
def _(w: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    return torch.empty_like(w)
