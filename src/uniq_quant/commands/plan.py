"""``uniq-quant plan``: the weight bits a GBOPs budget gives each layer, without training.

It takes the flags and recipes of ``uniq-quant train``, builds the data and the model from
``--init``, and prints the plan ``train --gbops-budget`` would make: per layer its bits, GBOPs
and measured divergence, then the total against the budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from uniq_quant.train.settings import add_arguments, resolve

logger = logging.getLogger(__name__)

EPILOG = """examples:
  uniq-quant plan --dataset mnist --model lenet5 --init runs/lenet5/float_model.pt \\
      --gbops-budget 0.0271
  uniq-quant plan --config configs/mnist_lenet5_mixed.yaml --init float.pt --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plan`` subcommand."""
    parser = subparsers.add_parser(
        "plan",
        help="show the weight bits per layer that a --gbops-budget gives, without training",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the settings, plan and print; bad input exits with 2 and a message."""
    from uniq_quant.train.run import plan_only

    try:
        plan = plan_only(resolve(args))
    except (ValueError, TypeError, FileNotFoundError) as error:
        logger.error("%s", error)
        logger.debug("details", exc_info=True)
        return 2
    text = json.dumps(plan.to_dict(), indent=2) if args.json else plan.format_table()
    sys.stdout.write(text + "\n")
    return 0
