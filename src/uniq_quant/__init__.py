"""uniq-quant: UNIQ non-uniform quantization of PyTorch networks (arXiv:1804.10969).

Weights are mapped through a fitted CDF, quantized uniformly there and mapped back (the
k-quantile quantizer: every level holds equal probability mass); training emulates that
quantizer with uniform noise injected in the uniformized domain.

Modules:
    functional: pure tensor math (fitted CDFs, codebooks, quantize / dequantize, noise).
    quantizers: WeightQuantizer and ActivationQuantizer modules with float / noise / quant modes.
    nn: QuantConv1d, QuantConv2d and QuantLinear, drop-in subclasses of the torch layers.
    config: QuantConfig, the validated settings of prepare.
    prepare: prepare (swap in quantized layers), calibrate (ranges) and convert (freeze).
    batchnorm: reestimate_batchnorm, BatchNorm statistics recomputed for the frozen weights.
    schedule: GradualSchedule, block-by-block quantize-and-freeze in data-flow order.
    report: a per-layer table of a prepared model.
    bops: count_bops, the paper's bit-operation count per layer and per model.
    mixed_precision: plan_bits, per-layer weight bits chosen to fit a GBOPs budget.
    export: save_quantized / load_quantized (bit-packed safetensors) and export_onnx.
    data, models: offline datasets and loaders; small models and torchvision models by name.
    train: the training run behind ``uniq-quant train``.
    plots: figures of runs and of a layer's codebook.
    cli, commands: the ``uniq-quant`` command line, one module per subcommand.
"""

from uniq_quant.batchnorm import reestimate_batchnorm
from uniq_quant.config import QuantConfig
from uniq_quant.export import export_onnx, load_quantized, save_quantized
from uniq_quant.functional import dequantize, fake_quantize, inject_noise, quantize
from uniq_quant.mixed_precision import BitsPlan, plan_bits
from uniq_quant.nn import QuantConv1d, QuantConv2d, QuantLinear
from uniq_quant.prepare import calibrate, convert, prepare, quantized_layers
from uniq_quant.quantizers import ActivationQuantizer, WeightQuantizer
from uniq_quant.report import format_report, layer_report
from uniq_quant.schedule import GradualSchedule

__version__ = "0.1.0"

__all__ = [
    "ActivationQuantizer",
    "BitsPlan",
    "GradualSchedule",
    "QuantConfig",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLinear",
    "WeightQuantizer",
    "__version__",
    "calibrate",
    "convert",
    "dequantize",
    "export_onnx",
    "fake_quantize",
    "format_report",
    "inject_noise",
    "layer_report",
    "load_quantized",
    "plan_bits",
    "prepare",
    "quantize",
    "quantized_layers",
    "reestimate_batchnorm",
    "save_quantized",
]
