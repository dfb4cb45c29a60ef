"""How closely the exported ONNX graph reproduces the converted torch model.

    python benchmarks/onnx_agreement.py [--models tv:resnet18 tv:mobilenet_v2 resnet20]
        [--batch 16]

For each model, two quantized variants at 4-bit weights: float activations (``W4``) and 8-bit
activations (``W4A8``). Each is prepared, calibrated on random input, converted and exported
with ``export_onnx``; then, on one random batch:
* onnxruntime (CPU, float32) against torch (float32): the largest absolute logit difference,
  the largest logit, and the share of images whose top-1 class agrees;
* for W4A8, the share of values of the first quantized activation that differ (by one grid step:
  torch and onnxruntime convolutions sum in different orders, so a value lying on a rounding
  tie of the grid to within float32 error can round either way);
* the yardstick: torch in float32 against torch in float64 (the same model and batch): how far
  float32 rounding alone moves this quantized model's outputs;
* onnx's reference runtime on a float64 export against torch in float64 (the graph's own
  error, free of float32 rounding; ONNX stores attributes such as BatchNorm's epsilon in
  float32, which bounds it near 1e-9 where no activation is rounded).
Models are untrained (random init; BatchNorm statistics set on random input, so activations keep
their scale): agreement does not depend on training. torchvision models
run on 64 x 64 inputs to keep the float64 reference runtime fast. The table replaces the section
of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import numpy as np
import onnx
import onnxruntime
import torch
from onnx.reference import ReferenceEvaluator
from torch import nn

from uniq_quant import QuantConfig, calibrate, convert, prepare
from uniq_quant.export import export_onnx
from uniq_quant.export.onnx import INPUT_NAME, OUTPUT_NAME, onnx_graph_model
from uniq_quant.models import build_model
from uniq_quant.prepare import quantized_layers

logger = logging.getLogger("onnx_agreement")

SECTION = "ONNX export: agreement with torch"
MODELS = {  # name -> (classes, input shape)
    "small_cnn": (10, (1, 28, 28)),
    "resnet20": (10, (3, 32, 32)),
    "mobilenet_small": (10, (3, 32, 32)),
    "tv:resnet18": (1000, (3, 64, 64)),
    "tv:mobilenet_v2": (1000, (3, 64, 64)),
}
WEIGHT_BITS, ACT_BITS = 4, 8
REFERENCE_BATCH = 2  # images through onnx's (slow, numpy) reference runtime


def converted_model(name: str, act_bits: int | None, batch: int) -> nn.Module:
    """``name`` at 4-bit weights and ``act_bits`` activations, calibrated on random input."""
    classes, shape = MODELS[name]
    torch.manual_seed(0)
    model = build_model(name, classes, shape[0], shape[1])
    set_batchnorm_statistics(model, [torch.randn(batch, *shape) for _ in range(2)])
    config = QuantConfig(weight_bits=WEIGHT_BITS, act_bits=act_bits)
    model = prepare(model, config, torch.randn(1, *shape))
    if act_bits is not None:
        calibrate(model, [torch.randn(batch, *shape) for _ in range(2)])
    return convert(model).eval()


@torch.no_grad()
def set_batchnorm_statistics(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Set every BatchNorm's running statistics to those of ``batches``; leave ``model`` in eval.

    Untrained torchvision models keep unit running variances, so in eval their activations
    shrink layer after layer (MobileNet-V2's logits end near 1e-10): a poor test of agreement.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the batches
    model.train()
    for images in batches:
        model(images)
    model.eval()


def first_round_flips(path: Path, model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(values on which onnxruntime and torch differ, values) of the first quantized activation."""
    graph = onnx.load(path)
    first = next(node.output[0] for node in graph.graph.node if node.op_type == "Round")
    graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(first))
    session = _session(graph.SerializeToString())
    (grid,) = session.run([first], {INPUT_NAME: x.numpy()})

    traced = onnx_graph_model(model)
    quantizer = next(
        layer.input_quantizer for _, layer in quantized_layers(traced) if layer.input_quantizer
    )
    scaled = []
    handle = quantizer.register_forward_hook(
        lambda m, args, out: scaled.append(torch.round(torch.clamp(args[0], m.lo, m.hi) / m.step))
    )
    with torch.no_grad():
        traced(x)
    handle.remove()
    differing = grid != scaled[0].numpy()
    return int(differing.sum()), int(differing.size)


def measure(name: str, act_bits: int | None, batch: int, folder: Path) -> dict:
    """Agreement figures of one model and variant (see the module docstring)."""
    _, shape = MODELS[name]
    model = converted_model(name, act_bits, batch)
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))

    path = export_onnx(model, folder / "model.onnx", x[:1])
    got = _session(path).run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    row = {
        "onnx_bytes": os.path.getsize(path),
        "max_abs_diff": float(np.abs(got - expected).max()),
        "max_abs_logit": float(np.abs(expected).max()),
        "top1_agreement": float(np.mean(got.argmax(1) == expected.argmax(1))),
    }
    if act_bits is not None:
        row["first_activation_flips"] = first_round_flips(path, model, x)

    double = copy.deepcopy(model).double()
    with torch.no_grad():
        exact = double(x.double()).numpy()
    row["torch_float32_vs_float64"] = float(np.abs(expected - exact).max())
    row["torch_top1_agreement"] = float(np.mean(expected.argmax(1) == exact.argmax(1)))
    x64 = x[:REFERENCE_BATCH].double()
    path64 = export_onnx(double, folder / "model64.onnx", x64[:1])
    reference = ReferenceEvaluator(os.fspath(path64)).run(None, {INPUT_NAME: x64.numpy()})[0]
    with torch.no_grad():
        row["float64_max_abs_diff"] = float(np.abs(reference - double(x64).numpy()).max())
    logger.info("%s %s: %s", name, _variant(act_bits), row)
    return row


def table(rows: dict[tuple[str, str], dict]) -> str:
    lines = [
        "| model | variant | max abs logit | ORT float32 vs torch: max abs diff | top-1 "
        "agreement | first activation values one step apart | torch float32 vs torch float64: "
        "max abs diff | top-1 agreement | ONNX reference float64 vs torch float64 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, variant), r in rows.items():
        flips = r.get("first_activation_flips")
        flips = "" if flips is None else f"{flips[0]:,} of {flips[1]:,}"
        lines.append(
            f"| {name} | {variant} | {r['max_abs_logit']:.2f} | {r['max_abs_diff']:.1e} | "
            f"{100 * r['top1_agreement']:.1f}% | {flips} | {r['torch_float32_vs_float64']:.1e} | "
            f"{100 * r['torch_top1_agreement']:.1f}% | {r['float64_max_abs_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def section(text: str, argv: list[str], batch: int) -> str:
    return (
        f"## {SECTION} ({common.today()})\n\n"
        f"Command: `{common.command_line('onnx_agreement.py', argv)}`  \n"
        f"Machine: {common.machine()}, onnxruntime {onnxruntime.__version__}  \n"
        f"Code: commit {common.revision()}  \n"
        "Untrained models with BatchNorm statistics and activation ranges set on random input, "
        f"4-bit weights; one "
        f"random batch of {batch} (float64 reference: {REFERENCE_BATCH} images). W4: float "
        "activations; W4A8: 8-bit activations. The float32 differences of W4A8 come from "
        "activations that lie on a rounding tie of their 8-bit grid to within float32 "
        "convolution error and round to the neighbouring step in one runtime (the share is in "
        "the flips column). Torch itself moves as far between float32 and float64 (yardstick "
        "columns): the graph is as faithful as float32 arithmetic allows; with float "
        "activations, or in float64, it agrees with torch to float rounding. An untrained "
        "model's logits lie close together, so one flip can change a top-1 class.\n\n" + text
    )


def _variant(act_bits: int | None) -> str:
    return f"W{WEIGHT_BITS}" if act_bits is None else f"W{WEIGHT_BITS}A{act_bits}"


def _session(model: str | os.PathLike | bytes) -> onnxruntime.InferenceSession:
    source = os.fspath(model) if isinstance(model, os.PathLike) else model
    return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=16, help="images compared in float32")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--no-report", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("uniq_quant").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for act_bits in (None, ACT_BITS):
                rows[name, _variant(act_bits)] = measure(name, act_bits, args.batch, Path(tmp))
    common.publish(SECTION, section(table(rows), argv, args.batch), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
