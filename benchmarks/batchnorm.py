"""Top-1 of UNIQ models with the BatchNorm statistics of training against re-estimated ones.

    python benchmarks/batchnorm.py [--models small_cnn resnet20] [--datasets fashion-mnist]
        [--seeds 0 1 2] [--weight-bits 2] [--methods uniq uniq-oneshot]
        [--final-fractions 0 0.1] [--bn-batches 50]

For every model, data set, seed, method and final fraction (the share of the steps trained with
every layer frozen at the end): fine-tune the cached float model of ``accuracy.py`` exactly as
that benchmark does (``accuracy.fine_tune``, its default training settings), convert, evaluate,
then ``reestimate_batchnorm`` over ``--bn-batches`` training batches and evaluate again: a
paired comparison on one trained model. Runs are written to ``--out`` as they finish
(``--resume`` reuses them); the mean and standard deviation over seeds go into
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy
import common
import torch
from methods import METHODS

from uniq_quant import reestimate_batchnorm

logger = logging.getLogger("batchnorm")

SECTION = "BatchNorm re-estimation after UNIQ"
SEED_OFFSET = 7919  # the re-estimation batches are not those of the last training steps


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["small_cnn", "resnet20"])
    parser.add_argument("--datasets", nargs="+", default=["fashion-mnist"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--weight-bits", nargs="+", type=int, default=[2])
    parser.add_argument("--act-bits", type=int, default=8)
    uniq_methods = [name for name, method in METHODS.items() if method.family == "UNIQ"]
    parser.add_argument(
        "--methods", nargs="+", default=["uniq", "uniq-oneshot"], choices=uniq_methods
    )
    parser.add_argument("--final-fractions", nargs="+", type=float, default=[0.0, 0.1])
    parser.add_argument("--bn-batches", type=int, default=50, help="training batches averaged")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--out", type=Path, default=common.HERE / "results" / "batchnorm.json", help="raw runs"
    )
    parser.add_argument("--resume", action="store_true", help="reuse finished runs from --out")
    parser.add_argument("--no-report", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.bn_batches < 1:
        parser.error(f"--bn-batches must be a positive integer, got {args.bn_batches}")
    bad = [f for f in args.final_fractions if not 0 <= f < 1]
    if bad:
        parser.error(f"--final-fractions must lie in [0, 1), got {bad}")
    return args


def run_key(run: dict) -> tuple:
    keys = ("model", "dataset", "seed", "method", "weight_bits", "final_fraction")
    return tuple(run[k] for k in keys)


def run_one(cell: dict, data: common.Data, args: argparse.Namespace) -> dict:
    """Fine-tune one cell, convert; top-1 before and after re-estimation."""
    training = accuracy.parse_args(["--model", cell["model"]])
    training.final_fraction = cell["final_fraction"]
    model, _ = accuracy.float_model(data, cell["seed"], training)
    start = time.perf_counter()
    prepared, _ = accuracy.fine_tune(
        METHODS[cell["method"]],
        model,
        data,
        cell["seed"],
        cell["weight_bits"],
        args.act_bits,
        training,
    )
    final = prepared.finished()
    trained = common.evaluate(final, data.test)
    indices = common.batch_indices(
        len(data.train), training.batch_size, args.bn_batches, cell["seed"] + SEED_OFFSET
    )
    reestimate_batchnorm(final, (data.train.images[idx] for idx in indices))
    reestimated = common.evaluate(final, data.test)
    return {
        **cell,
        "act_bits": args.act_bits,
        "bn_batches": args.bn_batches,
        "top1_trained": trained,
        "top1_reestimated": reestimated,
        "seconds": time.perf_counter() - start,
    }


def report(payload: dict) -> str:
    """The RESULTS.md section of ``payload``'s runs."""
    groups: dict[tuple, list[dict]] = {}
    for run in payload["runs"]:
        key = (run["model"], run["dataset"], run["weight_bits"], run["method"])
        groups.setdefault((*key, run["final_fraction"]), []).append(run)
    history = _history(payload)
    p = history[-1]
    commands = ", ".join(f"`{h['command']}` ({h['revision']})" for h in history)
    lines = [
        f"## {SECTION} ({p['date']})",
        "",
        f"Command{'s, run in turn' if len(history) > 1 else ''} (code commit): {commands}  ",
        f"Machine: {p['machine']}, {p['threads']} torch thread(s)  ",
        f"Raw runs: `{common.relative(Path(payload['out']))}`",
        "",
        "Each model is fine-tuned as in `accuracy.py` (the cached float models of its default "
        "settings, 1 epoch, AdamW lr 0.0002, cosine, batch 128), converted and evaluated on the "
        "whole test split with the BatchNorm statistics tracked in training, then again after "
        f"`reestimate_batchnorm` over {payload['bn_batches']} training batches (the plain "
        "average of their batch statistics). Final fraction: the share of the steps trained "
        "with every layer frozen at the end (accuracy.py uses 0.1); at 0 the last noisy block "
        "is frozen by the last step. Mean ± sample std over seeds; the difference is paired "
        "(the same trained model).",
        "",
        "| model | data | bits | method | final fraction | top-1, trained statistics | "
        "top-1, re-estimated | difference | n |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3], k[4])):
        runs = groups[key]
        model, dataset, bits, method, fraction = key
        before = [r["top1_trained"] for r in runs]
        after = [r["top1_reestimated"] for r in runs]
        gain = [a - b for a, b in zip(after, before, strict=True)]
        lines.append(
            f"| {model} | {dataset} | W{bits}A{payload['act_bits']} | {METHODS[method].label} | "
            f"{fraction:g} | {_mean_std(before)} | {_mean_std(after)} | "
            f"{statistics.fmean(gain):+.2f} | {len(runs)} |"
        )
    lines += _against_final_phase(groups, payload["act_bits"])
    return "\n".join(lines) + "\n"


def _against_final_phase(groups: dict[tuple, list[dict]], act_bits: int) -> list[str]:
    """Lines comparing re-estimation without a final phase (fraction 0) to the longest final
    phase with its trained statistics, per model, data set, bits and method."""
    lines = []
    for key in sorted({k[:4] for k in groups}):
        fractions = sorted(k[4] for k in groups if k[:4] == key)
        if len(fractions) < 2 or fractions[0] != 0:
            continue
        model, dataset, bits, method = key
        reestimated = [r["top1_reestimated"] for r in groups[(*key, 0.0)]]
        phase = [r["top1_trained"] for r in groups[(*key, fractions[-1])]]
        lines.append(
            f"- {model} {dataset} W{bits}A{act_bits} {METHODS[method].label}: no final phase, "
            f"re-estimated {_mean_std(reestimated)}; final phase of {fractions[-1]:g} of the "
            f"steps, trained statistics {_mean_std(phase)} "
            f"({statistics.fmean(reestimated) - statistics.fmean(phase):+.2f} points)"
        )
    if lines:
        lines[:0] = [
            "",
            "Re-estimation in place of a final phase (two trainings, not paired: without a "
            "final phase its steps go to the quantization stages):",
        ]
    return lines


def _history(payload: dict) -> list[dict]:
    """The provenance of every command that added runs to ``payload``, oldest first (a file
    written before commands were kept holds one ``provenance``)."""
    return payload.get("history") or [payload["provenance"]]


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {spread:.2f}"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    provenance = common.provenance("batchnorm.py", argv, torch.get_num_threads())
    payload = {
        "history": [provenance],
        "out": str(args.out),
        "act_bits": args.act_bits,
        "bn_batches": args.bn_batches,
        "runs": [],
    }
    if args.resume and args.out.exists():
        saved = json.loads(args.out.read_text())
        if (saved["act_bits"], saved["bn_batches"]) != (args.act_bits, args.bn_batches):
            raise SystemExit(
                f"{args.out} holds runs with other --act-bits / --bn-batches; choose another --out"
            )
        payload["runs"] = saved["runs"]
        payload["history"] = [*_history(saved), provenance]
    done = {run_key(r) for r in payload["runs"]}
    for dataset in args.datasets:
        data = common.load_data(dataset)
        grid = itertools.product(
            args.models, args.seeds, args.weight_bits, args.final_fractions, args.methods
        )
        for model, seed, bits, fraction, method in grid:
            cell = {
                "model": model,
                "dataset": dataset,
                "seed": seed,
                "method": method,
                "weight_bits": bits,
                "final_fraction": fraction,
            }
            if run_key(cell) in done:
                continue
            run = run_one(cell, data, args)
            logger.info(
                "%s %s seed %d W%d %s final %g: top-1 %.2f, re-estimated %.2f (%.0f s)",
                model,
                dataset,
                seed,
                bits,
                method,
                fraction,
                run["top1_trained"],
                run["top1_reestimated"],
                run["seconds"],
            )
            payload["runs"].append(run)
            common.save_json(args.out, payload)
    common.publish(SECTION, report(payload), write=not args.no_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
