"""Pure tensor math of UNIQ: fitted CDFs, codebooks, quantize / dequantize and noise injection.

Modules:
    distributions: Gaussian and empirical fits, their CDF F and inverse F^-1, per tensor or channel.
    codebook: levels and thresholds of every quantization method, encode and decode.
    quantize: the public quantize / dequantize / fake_quantize with input checks.
    noise: uniform noise injection in the uniformized domain (training-time emulation).
"""

from uniq_quant.functional.codebook import METHODS, Codebook, fit_codebook
from uniq_quant.functional.distributions import (
    FITS,
    EmpiricalFit,
    GaussianFit,
    empirical_quantiles,
    fit_distribution,
    gaussian_stats,
)
from uniq_quant.functional.noise import inject_noise, uniform_noise
from uniq_quant.functional.quantize import dequantize, fake_quantize, quantize, straight_through

__all__ = [
    "FITS",
    "METHODS",
    "Codebook",
    "EmpiricalFit",
    "GaussianFit",
    "dequantize",
    "empirical_quantiles",
    "fake_quantize",
    "fit_codebook",
    "fit_distribution",
    "gaussian_stats",
    "inject_noise",
    "quantize",
    "straight_through",
    "uniform_noise",
]
