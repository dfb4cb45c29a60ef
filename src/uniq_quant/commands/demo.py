"""``uniq-quant demo``: the whole UNIQ life-cycle on the MNIST copy that ships offline.

A small CNN trains one float epoch, then UNIQ quantizes it to 4-bit weights and 8-bit
activations layer by layer; the run ends with a table of float and quantized accuracy, GBOPs
and file sizes. About two epochs of MNIST: a few minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

DEMO_RECIPE = {
    "dataset": "mnist",
    "model": "small_cnn",
    "weight_bits": 4,
    "act_bits": 8,
    "float_epochs": 1,
    "stage_steps": 150,
    "batch_size": 128,
    "optimizer": "adamw",
    "lr": 0.002,
    "workers": 0,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo", help="train and quantize a small CNN on the bundled MNIST", description=__doc__
    )
    parser.add_argument("--out", help="run folder (default: the first free runs/demo-N)")
    parser.add_argument("--weight-bits", type=int, default=4, help="bits per weight (default 4)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Train the demo recipe and print its result table."""
    from uniq_quant.train import settings_from_dict, train

    out = Path(args.out) if args.out else _free_folder(Path("runs"), "demo")
    recipe = {**DEMO_RECIPE, "weight_bits": args.weight_bits, "device": args.device}
    try:
        summary = train(settings_from_dict({**recipe, "out": str(out)}))
    except (ValueError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    sys.stdout.write(format_summary(summary) + "\n")
    return 0


def format_summary(summary: dict) -> str:
    """A short table comparing the float and the quantized model of a run."""
    act = summary["act_bits"] or 32
    rows = [
        ("", "float", f"UNIQ W{summary['weight_bits']}A{act}"),
        ("top-1 (%)", f"{summary['fp_top1']:.2f}", f"{summary['quant_top1']:.2f}"),
        ("GBOPs", f"{summary['gbops_fp32']:.4f}", f"{summary['gbops']:.4f}"),
        ("file (bytes)", f"{summary['size_bytes_fp32']:,}", f"{summary['size_bytes']:,}"),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([*lines, f"run folder: {summary['run_dir']}"])


def _free_folder(parent: Path, stem: str) -> Path:
    index = 1
    while (parent / f"{stem}-{index}").exists():
        index += 1
    return parent / f"{stem}-{index}"
