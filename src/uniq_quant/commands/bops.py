"""``uniq-quant bops``: the per-layer BOPs table of a model at given bits.

uniq-quant bops --model tv:resnet18 --weight-bits 4 --act-bits 8 --input-size 224
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from uniq_quant._validation import check_bits
from uniq_quant.bops import BITS, count_bops
from uniq_quant.models import build_model

logger = logging.getLogger(__name__)

EXIT_USAGE = 2  # the exit code argparse uses for bad arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bops`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "bops",
        help="count the bit operations (BOPs) of a model, layer by layer",
        description="Count BOPs per layer with the paper's formula "
        "m n k^2 (b_a b_w + b_a + b_w + log2(n k^2)) per output position.",
    )
    parser.add_argument(
        "--model", required=True, help="our model name, or tv:NAME for a torchvision classifier"
    )
    parser.add_argument(
        "--weight-bits", type=_bits, default=32, help="bits of every weight (default 32)"
    )
    parser.add_argument(
        "--act-bits",
        type=_bits,
        default=32,
        help="bits of every layer input but the network input (default 32)",
    )
    parser.add_argument(
        "--first-input-bits", type=_bits, default=8, help="bits of the network input (default 8)"
    )
    parser.add_argument("--input-size", type=_positive, default=224, help="image side in pixels")
    parser.add_argument("--in-channels", type=_positive, default=3, help="input image channels")
    parser.add_argument("--num-classes", type=_positive, default=1000, help="output classes")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the model, count its BOPs and print the table (or JSON); returns the exit code."""
    try:
        model = build_model(args.model, args.num_classes, args.in_channels, args.input_size)
    except (ValueError, ImportError) as error:
        logger.error("%s", error)
        return EXIT_USAGE

    shape = (args.in_channels, args.input_size, args.input_size)
    report = count_bops(model, shape, args.weight_bits, args.act_bits, args.first_input_bits)
    if args.json:
        settings = {
            "model": args.model,
            "weight_bits": args.weight_bits,
            "act_bits": args.act_bits,
            "first_input_bits": args.first_input_bits,
        }
        text = json.dumps({**settings, **report.to_dict()}, indent=2)
    else:
        bits = f"W{args.weight_bits} A{args.act_bits}, first input {args.first_input_bits} bits"
        text = f"{args.model}, {bits}\n{report.format_table()}"
    sys.stdout.write(text + "\n")
    return 0


def _bits(text: str) -> int:
    """argparse type: an integer number of bits in 1..32."""
    value = int(text) if text.lstrip("-").isdigit() else text
    try:
        return check_bits(value, BITS, "bits")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> int:
    """argparse type: a positive integer."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)
