"""Packed file size against the float model's size, per model and weight bits.

    python benchmarks/export_size.py [--bits 2 3 4 8] [--models ...] [--no-append]

For each model, the float size is the safetensors file of its float32 state_dict, and the packed
size that of ``save_quantized`` after prepare (every Conv / Linear at the given bits, 8-bit
activations), calibration and convert. Sizes do not depend on the weights' values: the models
are untrained (random init) and their activation ranges are calibrated on random input. The
markdown table is printed and appended to benchmarks/RESULTS.md with the command, the date and
the machine.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import logging
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from uniq_quant import QuantConfig, calibrate, convert, prepare
from uniq_quant.export import save_quantized
from uniq_quant.models import build_model, model_recipe

logger = logging.getLogger("export_size")

RESULTS = Path(__file__).with_name("RESULTS.md")
RESULTS_HEADER = "# Benchmark results\n"
# (name, input shape C, H, W); torchvision models at 64 x 64 only to calibrate fast: the
# architecture and so the file size do not depend on the image size.
MODELS = (
    ("small_cnn", (1, 28, 28)),
    ("resnet20", (3, 32, 32)),
    ("mobilenet_small", (3, 32, 32)),
    ("tv:resnet18", (3, 64, 64)),
    ("tv:mobilenet_v2", (3, 64, 64)),
)
NUM_CLASSES = {"small_cnn": 10, "resnet20": 10, "mobilenet_small": 10}  # else ImageNet's 1000
ACT_BITS = 8
CALIBRATION_BATCH = 8


def float_size(model: nn.Module, folder: Path) -> int:
    """Bytes of the safetensors file of ``model``'s float32 state_dict."""
    path = folder / "float.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path)
    return path.stat().st_size


def packed_size(
    model: nn.Module, recipe: dict, shape: tuple[int, ...], bits: int, folder: Path
) -> int:
    """Bytes of the packed file of ``model`` quantized to ``bits`` (activations 8 bits)."""
    config = QuantConfig(weight_bits=bits, act_bits=ACT_BITS)
    quantized = prepare(copy.deepcopy(model), config, torch.randn(1, *shape))
    calibrate(quantized, [torch.randn(CALIBRATION_BATCH, *shape)])
    path = folder / f"w{bits}.safetensors"
    save_quantized(convert(quantized), path, recipe=recipe, config=config, input_shape=shape)
    return path.stat().st_size


def measure(models: list[str], bits: list[int]) -> list[tuple[str, int, dict[int, int]]]:
    """(model, float bytes, {bits: packed bytes}) for every model."""
    shapes = dict(MODELS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            shape = shapes[name]
            recipe = model_recipe(name, NUM_CLASSES.get(name, 1000), shape[0], shape[1])
            model = build_model(**recipe).eval()
            sizes = {b: packed_size(model, recipe, shape, b, Path(tmp)) for b in bits}
            rows.append((name, float_size(model, Path(tmp)), sizes))
            logger.info("%s: float %d B, packed %s", name, rows[-1][1], sizes)
    return rows


def table(rows: list[tuple[str, int, dict[int, int]]], bits: list[int]) -> str:
    """A markdown table: bytes and float / packed ratio per bits."""
    head = "| model | float32 bytes | " + " | ".join(f"W{b}A{ACT_BITS} bytes (x)" for b in bits)
    lines = [head + " |", "|---|---:|" + "---:|" * len(bits)]
    for name, fp, sizes in rows:
        cells = " | ".join(f"{sizes[b]:,} ({fp / sizes[b]:.1f}x)" for b in bits)
        lines.append(f"| {name} | {fp:,} | {cells} |")
    return "\n".join(lines) + "\n"


def section(text: str, argv: list[str]) -> str:
    """The RESULTS.md section: title, command, date, machine, note, table."""
    command = shlex.join(["python", "benchmarks/export_size.py", *argv])
    today = datetime.date.today().isoformat()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    return (
        f"\n## Export size: packed file vs float32 ({today})\n\n"
        f"Command: `{command}`  \nMachine: {machine}  \n"
        "Untrained models (random init; sizes do not depend on the values), activation ranges "
        "calibrated on random input. Float32 bytes: safetensors file of the float state_dict; "
        "packed: `save_quantized` file (codes at the weight bits, levels, float remainder, "
        "metadata). Torchvision models have 1000 classes, ours 10.\n\n" + text
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 8])
    parser.add_argument("--models", nargs="+", default=[m for m, _ in MODELS])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--no-append", action="store_true", help=f"do not append to {RESULTS}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    text = table(measure(args.models, args.bits), args.bits)
    sys.stdout.write(text)
    if not args.no_append:
        existing = RESULTS.read_text() if RESULTS.exists() else RESULTS_HEADER
        RESULTS.write_text(existing + section(text, argv))
        logger.info("appended to %s", RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
