"""ONNX export of a converted model: codes and levels as initializers, weights rebuilt by Gather.

Each quantized layer's weight stays quantized in the file: its codes are a uint8 initializer
shaped like the weight (one byte per weight, a quarter of float32) and its levels a float
initializer, and the graph rebuilds the weight as

    per tensor:  W = Gather(levels, Cast<int64>(codes))                 levels (k,)
    per channel: W = Gather(levels_flat, Cast<int64>(codes) + offsets)  levels_flat (C_out * k,)

with offsets[c] = c * k (ONNX Gather needs int32 / int64 indices, hence the Cast). Every input
quantizer becomes Clip(x, lo, hi) -> Div(step) -> Round -> Mul(step) with the stored range, the
same float32 operations the converted torch model runs, and Round halves to even in both.

The export traces a copy of the model in which each quantized layer's quantizers are swapped for
the two small modules below, so the tracer emits exactly these nodes. The exporter's constant
folding is off: it would fold the look-ups into float weights.

Numerics: the graph computes the converted model's function (onnx's reference runtime on a
float64 export agrees with torch to 1e-15). In float32, onnxruntime's convolution kernels
round differently from torch's by an ulp; at an activation lying on a rounding tie that moves
the quantized value one grid step (2 of 65536 values at the first quantizer of ResNet-18), and
such steps spread through later layers: the logits of an untrained ResNet-18 (W4A8) differ by
up to about 5e-3 of 0.27. Without activation quantization the two agree to 1e-6. Both are the
float rounding of the runtimes, not a difference of the graph. onnxruntime folds the look-ups
into float weights once when it loads the file, so the weights cost nothing at inference; the
four nodes per quantized input make a W4A8 file take 1.04-1.22x the float model's time in
onnxruntime (benchmarks/overhead.py).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from uniq_quant.export._converted import converted_layers
from uniq_quant.export._files import PathLike, atomic_target

logger = logging.getLogger(__name__)

OPSET_VERSION = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def export_onnx(
    model: nn.Module,
    path: PathLike,
    example_input: torch.Tensor,
    *,
    opset_version: int = OPSET_VERSION,
    dynamic_batch: bool = True,
) -> Path:
    """Write a converted model to an ONNX file whose quantized weights stay codes and levels.

    Args:
        model: a model after ``convert`` (or returned by ``load_quantized``, eager or lazy);
            it is not changed.
        path: the .onnx file to write (atomically; overwrites ``path``); its folder must exist.
        example_input: one input batch, e.g. (1, C, H, W), to trace the graph.
        opset_version: the ONNX opset of the graph.
        dynamic_batch: let the batch dim of input and output vary.

    Returns:
        ``path`` as a Path. Its graph has one input ``input`` and one output ``output``.

    Raises:
        RuntimeError: the model is not converted.
        TypeError: ``example_input`` is not a tensor.
    """
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(
            f"example_input must be one input tensor, e.g. torch.zeros(1, 3, 224, 224), got "
            f"{type(example_input).__name__}"
        )
    graph_model = onnx_graph_model(model)
    device = next(iter(graph_model.buffers())).device
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with atomic_target(path) as temporary, warnings.catch_warnings():
        # TODO: the torch.export-based exporter (dynamo=True, torch's default) needs the
        # onnxscript package, and its optimizer may fold the look-ups: check before moving.
        warnings.simplefilter("ignore", DeprecationWarning)  # all about the legacy exporter
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)  # it is off
        torch.onnx.export(
            graph_model,
            (example_input.to(device),),
            os.fspath(temporary),
            dynamo=False,
            do_constant_folding=False,
            opset_version=opset_version,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
        )
    logger.info("exported ONNX to %s (%d bytes)", path, os.path.getsize(path))
    return Path(path)


def onnx_graph_model(model: nn.Module) -> nn.Module:
    """A copy of a converted model whose quantizers compute exactly what the ONNX graph does.

    Its outputs equal ``model``'s bit for bit in torch; ``export_onnx`` traces it.

    Raises:
        RuntimeError: the model is not converted.
    """
    converted_layers(model)
    graph_model = copy.deepcopy(model).eval()
    for _, layer in converted_layers(graph_model):
        quantizer = layer.weight_quantizer
        layer.weight_quantizer = GatherWeight(quantizer.codes, quantizer.effective_levels.detach())
        if layer.input_quantizer is not None:
            layer.input_quantizer = RoundToGrid(*layer.input_quantizer.range())
    return graph_model


class GatherWeight(nn.Module):
    """A weight rebuilt from uint8 codes and levels by one Gather (see the module docstring).

    Args:
        codes: uint8 codes shaped like the weight; dim 0 indexes the output channels.
        levels: (k,) per tensor or (C_out, k) per output channel.
    """

    def __init__(self, codes: torch.Tensor, levels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("codes", codes.detach().clone())
        self.register_buffer("levels", levels.detach().reshape(-1).clone())
        self.register_buffer("offsets", None)
        if levels.dim() == 2:
            channels, k = levels.shape
            offsets = torch.arange(channels, device=codes.device) * k  # (C_out,)
            self.offsets = offsets.reshape(-1, *[1] * (codes.dim() - 1))  # (C_out, 1, ..., 1)

    def forward(self, w: torch.Tensor | None = None) -> torch.Tensor:
        """The weight, shaped like ``codes``; ``w`` (the layer's float weight) is ignored."""
        index = self.codes.long()
        if self.offsets is not None:
            index = index + self.offsets
        return self.levels[index]


class RoundToGrid(nn.Module):
    """Uniform activation quantization on a fixed grid: step * round(clamp(x, lo, hi) / step).

    Args:
        lo, hi: the clipping range, 0-dim tensors.
        step: the grid step, a 0-dim tensor.
    """

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor, step: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("lo", lo.detach().clone())
        self.register_buffer("hi", hi.detach().clone())
        self.register_buffer("step", step.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` quantized to the grid, same shape and dtype."""
        clamped = torch.clamp(x, self.lo.to(x.dtype), self.hi.to(x.dtype))
        return torch.round(clamped / self.step) * self.step
