"""The UNIQ quantizer math: levels, thresholds, codes, equal-mass bins and noise injection."""

import math

import pytest
import torch
from scipy.stats import norm

from uniq_quant.functional import (
    METHODS,
    dequantize,
    empirical_quantiles,
    fake_quantize,
    fit_codebook,
    gaussian_stats,
    inject_noise,
    quantize,
)
from uniq_quant.functional.distributions import SIGMA_FLOOR, fit_distribution
from uniq_quant.functional.noise import symmetric_uniform

ALL_BITS = range(1, 9)


def _gaussian_levels(mu: float, sigma: float, bits: int) -> torch.Tensor:
    k = 2**bits
    probs = [(i - 0.5) / k for i in range(1, k + 1)]
    return torch.tensor(mu + sigma * norm.ppf(probs), dtype=torch.float64)


@pytest.mark.parametrize("bits", ALL_BITS)
def test_kquantile_levels_match_scipy_per_tensor(bits: int) -> None:
    """Levels are mu + sigma * Phi^-1((i - 1/2)/k) to 1e-5 relative (k = 2^bits)."""
    w = torch.randn(256, 64, dtype=torch.float64) * 0.05 + 0.01
    _, levels = quantize(w, bits)
    mu, sigma = w.mean().item(), w.std(correction=0).item()
    expected = _gaussian_levels(mu, sigma, bits)
    torch.testing.assert_close(levels, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("bits", ALL_BITS)
def test_kquantile_levels_match_scipy_per_channel(bits: int) -> None:
    """Per-channel levels are row c: mu_c + sigma_c * Phi^-1((i - 1/2)/k), to 1e-5 relative."""
    scales = torch.linspace(0.01, 1.0, 8).reshape(8, 1, 1, 1)
    w = torch.randn(8, 4, 3, 3) * scales + 0.1
    _, levels = quantize(w, bits, per_channel=True)
    assert levels.shape == (8, 2**bits)
    for c in range(8):
        row = w[c].double()
        expected = _gaussian_levels(row.mean().item(), row.std(correction=0).item(), bits)
        torch.testing.assert_close(levels[c].double(), expected, rtol=1e-5, atol=0)


def test_kquantile_thresholds_are_gaussian_quantiles() -> None:
    """Thresholds are mu + sigma * Phi^-1(i/k), i = 1..k-1."""
    w = torch.randn(4096, dtype=torch.float64)
    codebook = fit_codebook(w, 3, "kquantile")
    mu, sigma = w.mean().item(), w.std(correction=0).item()
    expected = mu + sigma * norm.ppf([i / 8 for i in range(1, 8)])
    torch.testing.assert_close(codebook.thresholds[0], torch.tensor(expected), rtol=1e-9, atol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_at_most_k_values_and_idempotent(method: str, per_channel: bool, bits: int) -> None:
    """At most k distinct values per group; re-encoding with the same codebook changes nothing."""
    w = torch.randn(16, 8, 3, 3)
    codes, levels = quantize(w, bits, method, per_channel)
    assert codes.dtype == torch.uint8 and codes.shape == w.shape
    assert int(codes.max()) < 2**bits
    q = dequantize(codes, levels)
    groups = q.reshape(16, -1) if per_channel else q.reshape(1, -1)
    assert max(row.unique().numel() for row in groups) <= 2**bits

    # with the statistics held fixed, quantizing the quantized tensor is the identity
    from uniq_quant.functional.codebook import encode

    codebook = fit_codebook(w, bits, method, per_channel)
    again = dequantize(encode(q, codebook, per_channel), levels)
    assert torch.equal(again, q)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_gaussian_bins_hold_equal_mass(bits: int) -> None:
    """On 10^6 Gaussian samples each bin holds 1/k of the mass within 5 binomial sigmas."""
    n, k = 10**6, 2**bits
    w = torch.randn(n) * 0.3 - 0.2
    codes, _ = quantize(w, bits)
    counts = torch.bincount(codes.long(), minlength=k).double()
    # binomial standard deviation of a bin count; 5 sigma keeps the false-alarm rate below 1e-6
    # per bin. The fitted (not true) mu and sigma add O(1/sqrt(n)) error of the same order.
    bound = 5 * math.sqrt(n * (1 / k) * (1 - 1 / k))
    assert (counts - n / k).abs().max() <= bound, counts


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("dist", ["laplace", "bimodal", "uniform"])
def test_empirical_bins_hold_equal_counts_on_any_distribution(bits: int, dist: str) -> None:
    """The empirical method's bins hold n/k values each (within 1) whatever the distribution."""
    n, k = 40_000, 2**bits
    if dist == "laplace":
        w = torch.distributions.Laplace(0.0, 0.1).sample((n,))
    elif dist == "bimodal":
        w = torch.cat([torch.randn(n // 2) * 0.05 - 0.5, torch.randn(n // 2) * 0.05 + 0.5])
    else:
        w = torch.rand(n)
    codes, _ = quantize(w, bits, "empirical")
    counts = torch.bincount(codes.long(), minlength=k)
    assert (counts - n // k).abs().max() <= 1, counts


def test_empirical_beats_gaussian_on_bimodal_weights() -> None:
    """On a bimodal tensor the empirical fit's bins are equal-mass, the Gaussian fit's are not."""
    w = torch.cat([torch.randn(5000) * 0.05 - 0.5, torch.randn(5000) * 0.05 + 0.5])
    gaussian = torch.bincount(quantize(w, 3)[0].long(), minlength=8)
    empirical = torch.bincount(quantize(w, 3, "empirical")[0].long(), minlength=8)
    assert gaussian.max() - gaussian.min() > 1000
    assert empirical.max() - empirical.min() <= 1


def test_kmeans_has_lower_error_than_kquantile() -> None:
    """k-means is the minimum-squared-error codebook: no worse than its k-quantile start."""
    w = torch.randn(20_000)
    for bits in (2, 3, 4):
        err = {m: (dequantize(*quantize(w, bits, m)) - w).pow(2).mean() for m in METHODS}
        assert err["kmeans"] <= err["empirical"] + 1e-7
        assert err["kmeans"] <= err["uniform"]


def test_uniform_levels_are_evenly_spaced() -> None:
    """Uniform levels span [min, max]; the symmetric variant spans [-max|w|, max|w|]."""
    w = torch.tensor([-1.0, 0.25, 3.0])
    _, levels = quantize(w, 2, "uniform")
    torch.testing.assert_close(levels, torch.tensor([-1.0, 1 / 3, 5 / 3, 3.0]))
    _, levels = quantize(w, 2, "uniform_symmetric")
    torch.testing.assert_close(levels, torch.tensor([-3.0, -1.0, 1.0, 3.0]))


def test_empirical_quantiles_match_numpy_on_large_tensors() -> None:
    """empirical_quantiles equals numpy's linear quantiles (and works past 2^24 elements)."""
    x = torch.randn(2, 1000, dtype=torch.float64)
    probs = torch.tensor([0.0, 0.1, 0.5, 0.999, 1.0], dtype=torch.float64)
    expected = torch.quantile(x, probs, dim=1).T
    torch.testing.assert_close(empirical_quantiles(x, probs), expected)
    big = torch.randn(1, 2**24 + 8)
    assert empirical_quantiles(big, probs).shape == (1, 5)


@pytest.mark.parametrize("fit", ["gaussian", "empirical"])
def test_cdf_and_inverse_are_finite_and_inverse(fit: str) -> None:
    """F maps finite inputs into [0, 1] (tails included) and F^-1(F(w)) recovers w."""
    w = torch.randn(1, 10_000)
    dist = fit_distribution(w, fit)
    extreme = torch.tensor([[-1e30, -1e3, 1e3, 1e30]])
    u = dist.cdf(extreme)
    assert torch.isfinite(u).all() and (u >= 0).all() and (u <= 1).all()
    back = dist.icdf(torch.tensor([[0.0, 1.0, 0.5]]))
    assert torch.isfinite(back).all()
    inner = w[:, (w.abs() < 2).squeeze(0)]
    torch.testing.assert_close(dist.icdf(dist.cdf(inner)), inner, atol=1e-3, rtol=0)


@pytest.mark.parametrize("per_channel", [False, True])
def test_gaussian_stats_match_float64_mean_and_population_std(per_channel: bool) -> None:
    """Two-pass statistics agree with float64 mean and std, offsets far above the spread
    included (deviations are taken from the mean, so nothing cancels)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, 3, 3, generator=g) * 0.02 + torch.arange(8.0).view(8, 1, 1, 1) * 50
    mu, sigma = gaussian_stats(w, per_channel)
    x = (w.reshape(8, -1) if per_channel else w.reshape(1, -1)).double()
    assert torch.allclose(mu.double(), x.mean(1, keepdim=True), rtol=1e-6, atol=0)
    want = x.std(1, correction=0, keepdim=True)
    assert torch.allclose(sigma.double(), want, rtol=1e-4, atol=0)


def test_gaussian_stats_floor_sigma() -> None:
    """Sigma is floored at SIGMA_FLOOR so a constant tensor still has a valid fit."""
    mu, sigma = gaussian_stats(torch.full((3, 4), 2.0), per_channel=True)
    assert mu.shape == sigma.shape == (3, 1)
    assert torch.equal(sigma, torch.full((3, 1), SIGMA_FLOOR))


@pytest.mark.parametrize("method", METHODS)
def test_constant_tensor_has_a_defined_result(method: str) -> None:
    """A constant tensor comes back exactly, or within 3e-5 for the Gaussian fit (documented)."""
    w = torch.full((10, 10), 0.7)
    q = dequantize(*quantize(w, 4, method))
    tolerance = 3e-5 if method == "kquantile" else 0.0
    assert (q - w).abs().max() <= tolerance


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_noise_is_uniform_within_half_a_bin(bits: int) -> None:
    """In the CDF domain the noise stays within 1/(2k) and has mean 0 and variance 1/(12 k^2)."""
    k = 2**bits
    w = torch.randn(200_000, dtype=torch.float64)
    dist = fit_distribution(w, "gaussian")
    u = dist.cdf(w.reshape(1, -1))
    noise = dist.cdf(inject_noise(w, bits).reshape(1, -1)) - u

    # exclude the outermost bins, where the clamp to [1/(2k), 1 - 1/(2k)] acts
    inner = ((u > 1 / k) & (u < 1 - 1 / k)).squeeze(0)
    e = noise[0, inner]
    assert e.abs().max() <= 0.5 / k + 1e-9
    # the sample mean of n uniform draws has std (1/k) / sqrt(12 n): 6 of them is a safe bound
    n = e.numel()
    assert abs(e.mean().item()) <= 6 / (k * math.sqrt(12 * n))
    # the sample variance is within 2% of 1/(12 k^2) for n > 10^5 (its relative std is ~0.3%)
    assert e.var().item() == pytest.approx(1 / (12 * k**2), rel=0.02)


def test_noise_clamps_to_outermost_levels() -> None:
    """Noisy weights never leave [r_1, r_k], the range of the quantizer's levels."""
    w = torch.randn(100_000)
    _, levels = quantize(w, 2)
    noisy = inject_noise(w, 2)
    assert noisy.min() >= levels[0] - 1e-6 and noisy.max() <= levels[-1] + 1e-6


@pytest.mark.parametrize("fit", ["gaussian", "empirical"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_noise_gradient_is_identity(fit: str, per_channel: bool) -> None:
    """d w~ / d w is the identity: the gradient reaches w unchanged."""
    w = torch.randn(8, 3, 3, 3, requires_grad=True)
    upstream = torch.randn_like(w)
    inject_noise(w, 3, fit, per_channel).backward(upstream)
    assert torch.equal(w.grad, upstream)


def test_noise_is_fresh_every_call_and_reproducible_with_a_generator() -> None:
    """Two calls differ; the same generator seed gives the same noise."""
    w = torch.randn(1000)
    assert not torch.equal(inject_noise(w, 4), inject_noise(w, 4))
    a = inject_noise(w, 4, generator=torch.Generator().manual_seed(1))
    b = inject_noise(w, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_fake_quantize_has_straight_through_gradient() -> None:
    """fake_quantize equals dequantize(quantize(w)) forward and passes gradients unchanged."""
    w = torch.randn(64, 16, requires_grad=True)
    out = fake_quantize(w, 3, "uniform")
    assert torch.equal(out, dequantize(*quantize(w, 3, "uniform")))
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


@pytest.mark.parametrize("bits", [0, 9, -1, 2.5, "4", True, None])
def test_bad_bits_are_rejected(bits: object) -> None:
    """Bits outside 1..8 (or not an integer) raise a ValueError naming the value."""
    with pytest.raises(ValueError, match=r"weight bits must be an integer in 1\.\.8"):
        quantize(torch.randn(10), bits)
    with pytest.raises(ValueError, match=r"1\.\.8"):
        inject_noise(torch.randn(10), bits)


def test_bad_tensors_and_methods_are_rejected() -> None:
    """Empty, NaN, infinite or integer tensors and unknown methods or fits raise clearly."""
    with pytest.raises(ValueError, match="empty"):
        quantize(torch.empty(0, 3), 4)
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantize(torch.tensor([1.0, float("nan")]), 4)
    with pytest.raises(ValueError, match="NaN or infinite"):
        inject_noise(torch.tensor([1.0, float("inf")]), 4)
    with pytest.raises(TypeError, match="floating-point"):
        quantize(torch.arange(10), 4)
    with pytest.raises(ValueError, match="'kquantile'"):
        quantize(torch.randn(10), 4, method="lloyd")
    with pytest.raises(ValueError, match="'gaussian', 'empirical'"):
        inject_noise(torch.randn(10), 4, fit="laplace")


def test_dequantize_rejects_mismatched_input() -> None:
    """Float codes or levels of the wrong shape raise errors that name the shapes."""
    codes, levels = quantize(torch.randn(4, 5), 2, per_channel=True)
    with pytest.raises(TypeError, match="integer"):
        dequantize(codes.float(), levels)
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        dequantize(codes, levels[:3])


def test_symmetric_uniform_fills_its_16_bit_grid_evenly() -> None:
    """Values lie on h (j + 1/2) / 2^15 inside (-h, h); every position of the 64-bit words
    contributes unbiased draws (the sign of each is a fair coin)."""
    h, n = 0.25, 2**20 + 3  # not a multiple of four values per word
    x = symmetric_uniform((n,), h, torch.empty(0, dtype=torch.float64))
    assert x.shape == (n,) and x.dtype == torch.float64
    j = x / h * 2**15 - 0.5
    assert torch.equal(j, j.round()) and x.abs().max() < h
    lanes = x[: n - 3].reshape(-1, 4)  # one row per random word
    assert ((lanes < 0).double().mean(0) - 0.5).abs().max() < 6 * 0.5 / math.sqrt(lanes.shape[0])
    assert x.var().item() == pytest.approx(h**2 / 3, rel=0.01)
