"""GBOPs of the paper's ImageNet models at the bit widths the paper reports.

Prints a markdown table (one row per model, one column per weight/activation bits pair) of the
bit operations per 224 x 224 image counted by ``uniq_quant.bops.count_bops`` with the paper's
formula, the first layer's input counted as 8-bit pixels. torchvision has no MobileNet v1, so
mobilenet_v2 stands in for the paper's MobileNet.

    python benchmarks/gbops_table.py
"""

from __future__ import annotations

import argparse
import sys

import torchvision

from uniq_quant.bops import count_bops

MODELS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2")
BITS = ((32, 32), (8, 8), (5, 8), (4, 8), (4, 4), (2, 2))


def gbops_row(name: str, size: int) -> list[float]:
    """GBOPs of torchvision ``name`` at every (weight, activation) bits pair of ``BITS``."""
    model = torchvision.models.get_model(name, weights=None).eval()
    shape = (3, size, size)
    return [count_bops(model, shape, weight_bits=w, act_bits=a).gbops for w, a in BITS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=224, help="image side in pixels")
    args = parser.parse_args()
    header = " | ".join(f"{w}/{a}" for w, a in BITS)
    lines = [f"| model | {header} |", "|---|" + "---:|" * len(BITS)]
    for name in MODELS:
        cells = " | ".join(f"{g:,.2f}" for g in gbops_row(name, args.input_size))
        lines.append(f"| {name} | {cells} |")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
