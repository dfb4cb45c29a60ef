"""What the weight-noise path of a UNIQ step costs, and what its Gaussian statistics cost.

    python benchmarks/noise_path.py [--models resnet20 tv:resnet18] [--rounds 7] [--threads 1]

For every Conv / Linear weight of a model, per tensor and per output channel: the Gaussian
statistics (mu, sigma) as ``gaussian_stats`` computes them (two passes: the mean, then the norm
of the deviations) against ``torch.std`` with its mean, and the whole noisy weight of a UNIQ
training step (``noisy_weights`` at 4 bits) against the same path with ``torch.std``
statistics. Times are summed over the model's layers, one sample per round; the rounds
interleave the variants, and a ratio is the median over rounds of the per-round ratio.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import torch
from torch import nn

from uniq_quant.functional import noise
from uniq_quant.functional.distributions import SIGMA_FLOOR, gaussian_stats, grouped
from uniq_quant.functional.noise import noisy_weights
from uniq_quant.models import build_model

logger = logging.getLogger("noise_path")

SECTION = "Noise path: Gaussian statistics and noisy weights"
BITS = 4
MODELS = {"resnet20": (10, 3, 32), "tv:resnet18": (1000, 3, 224)}  # classes, channels, size


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--no-report", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--out", type=Path, default=common.HERE / "results" / "noise_path.json")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        parser.error(f"--rounds and --threads must be >= 1, got {args.rounds}, {args.threads}")
    return args


def weights(model_name: str) -> list[torch.Tensor]:
    """The Conv / Linear weights of ``model_name`` at its construction (untrained)."""
    classes, channels, size = MODELS[model_name]
    torch.manual_seed(0)
    model = build_model(model_name, classes, channels, size)
    return [m.weight.detach() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def std_stats(w: torch.Tensor, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference statistics: mean and ``torch.std`` (population), floored as ours."""
    x = grouped(w, per_channel).float()
    sigma = x.std(dim=1, correction=0, keepdim=True).clamp_min(SIGMA_FLOOR)
    return x.mean(dim=1, keepdim=True), sigma


def std_centered_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``centered_stats`` with ``std_stats``: (mu, sigma, x - mu) of each row of ``x``."""
    mu, sigma = std_stats(x, per_channel=True)
    return mu, sigma, x.float() - mu


def std_noisy(w: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """``noisy_weights`` with ``torch.std`` statistics: the same path, the same law."""
    with mock.patch.object(noise, "centered_stats", std_centered_stats):
        return noisy_weights(w, bits, "gaussian", per_channel)


def variants(per_channel: bool) -> dict[str, object]:
    """name -> function of one weight, for one granularity."""
    return {
        "std statistics": lambda w: std_stats(w, per_channel),
        "two-pass statistics": lambda w: gaussian_stats(w, per_channel),
        "noisy weights, std statistics": lambda w: std_noisy(w, BITS, per_channel),
        "noisy weights": lambda w: noisy_weights(w, BITS, "gaussian", per_channel),
    }


def time_model(tensors: list[torch.Tensor], rounds: int) -> dict[str, dict]:
    """Per granularity and variant: the summed milliseconds per round over ``tensors``."""
    table = {}
    for per_channel in (False, True):
        funcs = variants(per_channel)
        for f in funcs.values():  # warm-up
            for w in tensors:
                f(w)
        samples: dict[str, list[float]] = {name: [] for name in funcs}
        names = list(funcs)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                for w in tensors:
                    funcs[name](w)
                samples[name].append(1e3 * (time.perf_counter() - start))
        table["per channel" if per_channel else "per tensor"] = samples
    return table


def ratio(samples: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over rounds of ``name``'s time over ``reference``'s in the same round."""
    return statistics.median(a / b for a, b in zip(samples[name], samples[reference], strict=True))


def report(payload: dict) -> str:
    p = payload["provenance"]
    lines = [
        f"## {SECTION} ({p['date']})",
        "",
        f"Command: `{p['command']}`  ",
        f"Machine: {p['machine']}, {p['threads']} torch thread(s); code: commit {p['revision']}",
        "",
        "Summed over every Conv / Linear weight of the model (untrained), per step of a UNIQ run "
        f"with every layer noisy at {BITS} bits; median of {payload['rounds']} interleaved "
        "rounds. Statistics: (mu, sigma) of each fit group, `gaussian_stats` (the mean, then "
        "the norm of the deviations) against the mean and `torch.std`. Noisy weights: "
        "`noisy_weights` (which reuses the deviations) against the same path with `torch.std`.",
        "",
        "| model | weights | fit | std statistics (ms) | two-pass (ms) | speed-up | noisy "
        "weights, std (ms) | noisy weights (ms) | noisy / std path |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, result in payload["models"].items():
        for fit, samples in result["times"].items():
            med = {name: statistics.median(v) for name, v in samples.items()}
            lines.append(
                f"| {model} | {result['parameters'] / 1e6:.2f} M | {fit} | "
                f"{med['std statistics']:.2f} | {med['two-pass statistics']:.2f} | "
                f"{1 / ratio(samples, 'two-pass statistics', 'std statistics'):.1f}x | "
                f"{med['noisy weights, std statistics']:.2f} | {med['noisy weights']:.2f} | "
                f"{ratio(samples, 'noisy weights', 'noisy weights, std statistics'):.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    payload = {
        "provenance": common.provenance("noise_path.py", argv, torch.get_num_threads()),
        "rounds": args.rounds,
        "models": {},
    }
    for model in args.models:
        tensors = weights(model)
        times = time_model(tensors, args.rounds)
        parameters = sum(w.numel() for w in tensors)
        payload["models"][model] = {"parameters": parameters, "times": times}
        logger.info("%s: %d weight tensors, %.2f M weights timed", model, len(tensors), parameters)
    common.save_json(args.out, payload)
    common.publish(SECTION, report(payload), write=not args.no_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
