"""Codebooks: the k = 2^bits levels of a quantizer and the thresholds between them.

A codebook holds, per group (the tensor, or each output channel), k sorted ``levels`` and k - 1
sorted ``thresholds``. A weight w gets the code j (0-based) with t_j <= w < t_{j+1}, and is
represented by the level r_j. Methods:

* ``kquantile``: UNIQ's quantizer (paper, section 3). With F the fitted Gaussian CDF,
  thresholds t_i = F^-1(i / k), i = 1..k-1 and levels r_i = F^-1((i - 1/2) / k), i = 1..k:
  every bin holds 1/k of the probability mass and each level is its bin's median.
* ``empirical``: the same with the tensor's own quantiles in place of the Gaussian fit, a true
  k-quantile quantizer for any distribution; levels are the bins' medians.
* ``uniform``: k evenly spaced levels from min(w) to max(w); thresholds at the midpoints.
* ``uniform_symmetric``: k evenly spaced levels from -max|w| to max|w|.
* ``kmeans``: Lloyd's algorithm started from the empirical k-quantile levels, the
  minimum-squared-error codebook; thresholds at the midpoints.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from uniq_quant.functional.distributions import empirical_quantiles, gaussian_stats, grouped

METHODS = ("kquantile", "empirical", "uniform", "uniform_symmetric", "kmeans")
KMEANS_ITERATIONS = 30  # Lloyd's algorithm stops earlier once no level moves


class Codebook(NamedTuple):
    """Levels (G, k) and thresholds (G, k - 1), both sorted ascending along dim 1."""

    levels: torch.Tensor
    thresholds: torch.Tensor


def bin_probabilities(bits: int, device: torch.device | None = None) -> tuple[torch.Tensor, ...]:
    """Bin centres (i - 1/2) / k, i = 1..k, and edges i / k, i = 1..k-1, in float64."""
    k = 2**bits
    i = torch.arange(1, k + 1, dtype=torch.float64, device=device)
    return (i - 0.5) / k, i[:-1] / k


@torch.no_grad()
def fit_codebook(
    w: torch.Tensor, bits: int, method: str = "kquantile", per_channel: bool = False
) -> Codebook:
    """Fit the codebook of ``method`` with 2^bits levels to ``w``; inputs are not validated.

    Returns:
        A float64 Codebook: computing in double keeps levels near zero (mu + sigma * z with
        cancelling terms) accurate to the precision of ``w``'s dtype once cast back.
    """
    x = grouped(w, per_channel).double()
    centres, edges = bin_probabilities(bits, x.device)
    if method == "kquantile":
        mu, sigma = gaussian_stats(x, per_channel=True)
        return Codebook(
            mu + sigma * torch.special.ndtri(centres), mu + sigma * torch.special.ndtri(edges)
        )
    if method == "empirical":
        return Codebook(empirical_quantiles(x, centres), empirical_quantiles(x, edges))
    if method == "kmeans":
        return _kmeans(x, empirical_quantiles(x, centres))
    if method == "uniform":
        lo, hi = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    else:
        hi = x.abs().amax(dim=1, keepdim=True)
        lo = -hi
    steps = torch.linspace(0, 1, 2**bits, dtype=x.dtype, device=x.device)
    return _with_midpoints(lo + (hi - lo) * steps)


def encode(w: torch.Tensor, codebook: Codebook, per_channel: bool = False) -> torch.Tensor:
    """Codes (uint8, shaped like ``w``): the bin index j with t_j <= w < t_{j+1}."""
    x = grouped(w, per_channel).to(codebook.thresholds.dtype).contiguous()
    codes = torch.searchsorted(codebook.thresholds.contiguous(), x, right=True)
    return codes.to(torch.uint8).reshape(w.shape)


def decode(codes: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Levels looked up by codes: ``levels`` (k,) per tensor or (C, k) per output channel."""
    idx = codes.long()
    if levels.dim() == 1:
        return levels[idx]
    return levels.gather(1, idx.reshape(levels.shape[0], -1)).reshape(codes.shape)


def _with_midpoints(levels: torch.Tensor) -> Codebook:
    return Codebook(levels, (levels[:, 1:] + levels[:, :-1]) / 2)


def _kmeans(x: torch.Tensor, levels: torch.Tensor) -> Codebook:
    """Lloyd's algorithm on each row of x (G, N) from initial sorted levels (G, k)."""
    k = levels.shape[1]
    for _ in range(KMEANS_ITERATIONS):
        # 1. assign each value to its nearest level (the midpoints are the decision thresholds)
        thresholds = (levels[:, 1:] + levels[:, :-1]) / 2
        assign = torch.searchsorted(thresholds.contiguous(), x.contiguous(), right=True)

        # 2. move each level to the mean of its values; an empty cluster keeps its level
        sums = torch.zeros_like(levels).scatter_add_(1, assign, x)
        counts = torch.zeros_like(levels).scatter_add_(1, assign, torch.ones_like(x))
        updated = torch.where(counts > 0, sums / counts.clamp_min(1), levels)
        updated, _ = torch.sort(updated, dim=1)
        if torch.equal(updated, levels):
            break
        levels = updated
    assert levels.shape[1] == k
    return _with_midpoints(levels)
