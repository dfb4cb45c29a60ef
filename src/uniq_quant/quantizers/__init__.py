"""Quantizer modules: they own a mode, bits and buffers, and show them in repr and state_dict.

Modules:
    weight: WeightQuantizer, UNIQ's k-quantile weight quantizer with float / noise / quant modes.
    activation: ActivationQuantizer, uniform activation quantization with a tracked range.
"""

from uniq_quant.quantizers.activation import ActivationQuantizer
from uniq_quant.quantizers.weight import MODES, WeightQuantizer

__all__ = ["MODES", "ActivationQuantizer", "WeightQuantizer"]
