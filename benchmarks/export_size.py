"""Packed file size and loaded-model memory against the float model's, per model and bits.

    python benchmarks/export_size.py [--bits 2 3 4 8] [--models ...] [--no-report]

For each model, the float size is the safetensors file of its float32 state_dict, and the packed
size that of ``save_quantized`` after prepare (every Conv / Linear at the given bits, 8-bit
activations), calibration and convert. Memory: the bytes of every parameter and buffer of the
model that ``load_quantized`` returns, eagerly (float weights rebuilt) and with ``lazy=True``
(codes kept packed, weights expanded on the fly), after one forward pass, against the float
model's. Nothing depends on the weights' values: the models are untrained (random init) and
their activation ranges are calibrated on random input. The markdown tables are printed and
written to their section of benchmarks/RESULTS.md with the command, the date and the machine.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import logging
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import torch
from safetensors.torch import save_file
from torch import nn

from uniq_quant import QuantConfig, calibrate, convert, load_quantized, prepare
from uniq_quant.export import save_quantized
from uniq_quant.models import build_model, model_recipe

logger = logging.getLogger("export_size")

SECTION = "Export size: packed file vs float32"
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


@dataclass(frozen=True)
class Exported:
    """One model at one weight width: packed file bytes, loaded-model bytes (eager, lazy)."""

    file_bytes: int
    eager_bytes: int
    lazy_bytes: int


def resident_bytes(model: nn.Module) -> int:
    """Bytes of the storages behind ``model``'s parameters and buffers, each counted once."""
    storages = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def export(
    model: nn.Module, recipe: dict, shape: tuple[int, ...], bits: int, folder: Path
) -> Exported:
    """Pack ``model`` at ``bits`` (activations 8 bits), then load it back eagerly and lazily."""
    config = QuantConfig(weight_bits=bits, act_bits=ACT_BITS)
    quantized = prepare(copy.deepcopy(model), config, torch.randn(1, *shape))
    calibrate(quantized, [torch.randn(CALIBRATION_BATCH, *shape)])
    path = folder / f"w{bits}.safetensors"
    save_quantized(convert(quantized), path, recipe=recipe, config=config, input_shape=shape)

    # a forward first: what stays resident during inference counts (decoded-weight caches)
    loaded = {lazy: load_quantized(path, lazy=lazy) for lazy in (False, True)}
    with torch.no_grad():
        for model_ in loaded.values():
            model_(torch.randn(1, *shape))
    return Exported(
        path.stat().st_size, resident_bytes(loaded[False]), resident_bytes(loaded[True])
    )


def measure(models: list[str], bits: list[int]) -> list[tuple[str, int, int, dict[int, Exported]]]:
    """(model, float file bytes, float memory bytes, {bits: Exported}) for every model."""
    shapes = dict(MODELS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            shape = shapes[name]
            recipe = model_recipe(name, NUM_CLASSES.get(name, 1000), shape[0], shape[1])
            model = build_model(**recipe).eval()
            exported = {b: export(model, recipe, shape, b, Path(tmp)) for b in bits}
            rows.append((name, float_size(model, Path(tmp)), resident_bytes(model), exported))
            logger.info("%s: float %d B, %s", name, rows[-1][1], exported)
    return rows


def table(rows: list[tuple[str, int, int, dict[int, Exported]]], bits: list[int]) -> str:
    """Two markdown tables: file bytes, and loaded-model memory, each against float."""
    head = "| model | float32 bytes | " + " | ".join(f"W{b}A{ACT_BITS} bytes (x)" for b in bits)
    lines = [head + " |", "|---|---:|" + "---:|" * len(bits)]
    for name, fp, _, exported in rows:
        cells = " | ".join(
            f"{exported[b].file_bytes:,} ({fp / exported[b].file_bytes:.1f}x)" for b in bits
        )
        lines.append(f"| {name} | {fp:,} | {cells} |")

    lines += [
        "",
        "Memory of the loaded model (parameters and buffers, after one forward pass), eager / "
        "lazy, in MB, and what lazy saves against eager:",
        "",
        "| model | float32 MB | "
        + " | ".join(f"W{b} eager / lazy MB (saved)" for b in bits)
        + " |",
        "|---|---:|" + "---:|" * len(bits),
    ]
    for name, _, fp_bytes, exported in rows:
        cells = " | ".join(_memory_cell(exported[b]) for b in bits)
        lines.append(f"| {name} | {fp_bytes / 1e6:.2f} | {cells} |")
    return "\n".join(lines) + "\n"


def _memory_cell(e: Exported) -> str:
    saved = 1 - e.lazy_bytes / e.eager_bytes
    return f"{e.eager_bytes / 1e6:.2f} / {e.lazy_bytes / 1e6:.2f} ({saved:.1%})"


def section(text: str, argv: list[str]) -> str:
    """The RESULTS.md section: title, command, date, machine, note, tables."""
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    return (
        f"## {SECTION} ({common.today()})\n\n"
        f"Command: `{common.command_line('export_size.py', argv)}`  \nMachine: {machine}  \n"
        f"Code: commit {common.revision()}  \n"
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
    parser.add_argument("--no-report", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    text = table(measure(args.models, args.bits), args.bits)
    sys.stdout.write(text)
    if not args.no_report:
        common.write_section(SECTION, section(text, argv))
        logger.info("wrote the section %r of %s", SECTION, common.RESULTS_MD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
