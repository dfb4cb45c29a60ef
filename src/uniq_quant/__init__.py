"""uniq-quant: UNIQ non-uniform quantization of PyTorch networks (arXiv:1804.10969).

Weights are mapped through a fitted CDF, quantized uniformly there and mapped back (the
k-quantile quantizer: every level holds equal probability mass); training emulates that
quantizer with uniform noise injected in the uniformized domain.

Modules:
    functional: pure tensor math (fitted CDFs, codebooks, quantize / dequantize, noise).
    quantizers: WeightQuantizer and ActivationQuantizer modules with float / noise / quant modes.
    nn: QuantConv1d, QuantConv2d and QuantLinear, drop-in subclasses of the torch layers.
    cli: the ``uniq-quant`` command line.
"""

from uniq_quant.functional import dequantize, fake_quantize, inject_noise, quantize
from uniq_quant.nn import QuantConv1d, QuantConv2d, QuantLinear
from uniq_quant.quantizers import ActivationQuantizer, WeightQuantizer

__version__ = "0.1.0"

__all__ = [
    "ActivationQuantizer",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLinear",
    "WeightQuantizer",
    "__version__",
    "dequantize",
    "fake_quantize",
    "inject_noise",
    "quantize",
]
