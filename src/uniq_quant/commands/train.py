"""``uniq-quant train``: float training, then UNIQ, convert, evaluate and export."""

from __future__ import annotations

import argparse
import logging

from uniq_quant.train.settings import add_arguments, resolve

logger = logging.getLogger(__name__)

EPILOG = """examples:
  uniq-quant train --dataset mnist --model small_cnn --weight-bits 4 --act-bits 8
  uniq-quant train --config configs/mnist_lenet5_w4a8.yaml --out runs/lenet5
  torchrun --nproc-per-node 8 -m uniq_quant train --config configs/imagenet_resnet18_w4a8.yaml \\
      --data /data/imagenet --init resnet18.pth
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train a float model, then quantize it with UNIQ",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the settings and train; bad input exits with 2 and a message."""
    from uniq_quant.train import train

    try:
        settings = resolve(args)
        summary = train(settings)
    except (ValueError, TypeError, FileNotFoundError) as error:
        logger.error("%s", error)
        logger.debug("details", exc_info=True)
        return 2
    if summary:
        logger.info(
            "done: float top-1 %.2f%%, quantized top-1 %.2f%%, %.4f GBOPs, %d bytes, in %s",
            summary["fp_top1"],
            summary["quant_top1"],
            summary["gbops"],
            summary["size_bytes"],
            summary["run_dir"],
        )
    return 0
