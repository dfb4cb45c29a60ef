"""Top-1 accuracy of UNIQ against baselines and peer libraries, by weight and activation bits.

    python benchmarks/accuracy.py [--datasets mnist fashion-mnist] [--seeds 0 1 2]
        [--weight-bits 2 3 4 8] [--act-bits 8 float] [--methods ...] [--epochs 1]

Protocol, per data set and seed:
1. train one float model (``--model``, default the zoo's small CNN) for ``--float-epochs``
   with AdamW and a cosine decay; it is cached under ``--cache`` and reused by later runs with
   the same settings;
2. for every (weight bits, act bits, method): start from a copy of that float model, fine-tune
   for ``--epochs`` epochs with the same data order, optimizer (AdamW, ``--lr``, cosine decay,
   no weight decay) and batch size for every method (post-training methods only calibrate),
   and evaluate top-1 on the whole test split;
3. count GBOPs per image (``uniq_quant.bops.count_bops``).
Every run is written to the JSON file ``--out`` as it finishes (``--resume`` reuses the runs
of an earlier, identical configuration; ``--merge`` adds the runs of shards run elsewhere,
e.g. one data set per machine, each with its own ``--out``). At the end the mean and
standard deviation over seeds go into benchmarks/RESULTS.md, with the command, date and
machine, and into a figure of accuracy against GBOPs.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import shlex
import statistics
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import torch
from methods import METHODS, Job, Method, Prepared, available
from torch import nn

from uniq_quant.bops import count_bops
from uniq_quant.models import build_model

logger = logging.getLogger("accuracy")

DATASETS = ("mnist", "fashion-mnist")
FLOAT = "float"
SECTION = "Accuracy: UNIQ against baselines and peers"  # of the default model
DEFAULT_MODEL = "small_cnn"
GOAL_W4_GAP = 0.3  # points of top-1 UNIQ W4A8 may lose against float
MIXED_BITS = "uniq-mixed"  # UNIQ gradual at bits planned under the column's GBOPs
UNIQ_REFERENCE = "uniq"  # the method the goals are checked for
FLOAT_THREADS = 2  # intra-op threads of float training (reductions split by thread count)
ROUNDING_TWIN = "kquantile-ste-gradual"  # UNIQ's schedule and quantizer, rounding for noise
LEARNED_LEVELS = "uniq-learned"  # UNIQ gradual whose frozen layers train their levels
_COLORS = (  # 14 distinguishable colors: UNIQ blues and greens, baselines warm, peers grey
    "#1f4e9c",
    "#3b8bd9",
    "#1b9e77",
    "#66c2a5",
    "#7b3294",
    "#c2a5cf",
    "#d95f02",
    "#e7298a",
    "#a6761d",
    "#e6ab02",
    "#b2182b",
    "#252525",
    "#737373",
    "#bdbdbd",
)
_MARKERS = "osD^vdP*XhpH<>"
_STYLES = {"UNIQ": "-", "baseline": "--", "peer": ":"}
_DODGE = 0.006  # relative sideways spread between methods at the same GBOPs
ERROR_TICKS = (0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 90)  # top-1 error, %


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    grid = parser.add_argument_group("grid")
    grid.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    grid.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model of the zoo (default {DEFAULT_MODEL}; another gets its own section and figure)",
    )
    grid.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    grid.add_argument("--weight-bits", nargs="+", type=int, default=[2, 3, 4, 8])
    grid.add_argument(
        "--act-bits", nargs="+", default=["8", FLOAT], help="activation bits, or 'float'"
    )
    grid.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=float, default=1.0, help="fine-tuning epochs")
    train.add_argument("--float-epochs", type=float, default=2.0, help="float training epochs")
    train.add_argument(
        "--max-steps", type=int, help="cap on the steps of every training phase (smoke runs)"
    )
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--lr", type=float, default=2e-4, help="fine-tuning learning rate")
    train.add_argument("--float-lr", type=float, default=2e-3, help="float training rate")
    train.add_argument("--calibration-batches", type=int, default=8, help="post-training")
    train.add_argument(
        "--final-fraction",
        type=float,
        default=0.1,
        help="UNIQ: share of the steps with every layer frozen",
    )
    train.add_argument(
        "--blocks",
        type=int,
        help="gradual UNIQ and its twins: blocks of consecutive layers (default: one per layer)",
    )
    train.add_argument(
        "--diffq-penalty", type=float, default=0.01, help="DiffQ: loss per bit per weight"
    )
    out = parser.add_argument_group("output")
    out.add_argument("--cache", type=Path, default=common.HERE / "cache", help="float models")
    out.add_argument("--out", type=Path, default=common.HERE / "results" / "accuracy.json")
    out.add_argument("--figure", type=Path, help="default: accuracy_vs_gbops[-MODEL or -TITLE].png")
    out.add_argument("--resume", action="store_true", help="reuse finished runs from --out")
    out.add_argument(
        "--report-only", action="store_true", help="redo RESULTS.md and the figure from --out"
    )
    out.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="add the runs of these files (shards run elsewhere, same settings) to --out, "
        "then report",
    )
    out.add_argument(
        "--no-report", action="store_true", help="write neither RESULTS.md nor the figure"
    )
    out.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    out.add_argument(
        "--title",
        help="RESULTS.md heading of a section of its own (default: by model), for a grid on "
        "float models other than those of the model's main section",
    )
    args = parser.parse_args(argv)
    args.act_bits = [_act_bits(a, parser) for a in args.act_bits]
    if args.blocks is not None and args.blocks < 1:
        parser.error(f"--blocks must be a positive integer, got {args.blocks}")
    return args


def adopt_section(args: argparse.Namespace, payload: dict) -> bool:
    """Settle the RESULTS.md section and the figure of the grid in ``payload``: as given on the
    command line, else as the file recorded them, else by model. Recorded in ``payload``, so a
    later --report-only, --resume or --merge of the file writes the same section, never the
    model's main one. Returns True when ``payload`` changed."""
    before = (payload.get("title"), payload.get("figure"))
    args.title = args.title or payload.get("title")
    if args.figure is None and payload.get("figure"):
        args.figure = common.HERE.parent / payload["figure"]
    if args.figure is None:
        suffix = "" if args.model == DEFAULT_MODEL else f"-{args.model}"
        if args.title:
            suffix = "-" + common.slug(args.title)
        args.figure = common.HERE / f"accuracy_vs_gbops{suffix}.png"
    if args.title:
        payload["title"] = args.title
        payload["figure"] = common.relative(args.figure)
    return (payload.get("title"), payload.get("figure")) != before


def section_title(model: str, title: str | None = None) -> str:
    """The RESULTS.md heading of a grid on ``model``; the default model's is ``SECTION``;
    ``title`` (``--title``) names a section of its own."""
    if title:
        return title
    if model == DEFAULT_MODEL:
        return SECTION
    return f"Accuracy of {model}: UNIQ against baselines and peers"


def _act_bits(value: str, parser: argparse.ArgumentParser) -> int | None:
    if value == FLOAT:
        return None
    if not value.isdigit() or not 2 <= int(value) <= 8:
        parser.error(f"--act-bits takes integers in 2..8 or 'float', got {value!r}")
    return int(value)


def settings_of(args: argparse.Namespace) -> dict:
    """Everything that changes a run's result except its grid cell (for --resume)."""
    keys = (
        "model",
        "epochs",
        "float_epochs",
        "max_steps",
        "batch_size",
        "lr",
        "float_lr",
        "calibration_batches",
        "final_fraction",
        "diffq_penalty",
    )
    settings = {k: getattr(args, k) for k in keys}
    if args.blocks is not None:  # absent by default, so earlier result files still resume
        settings["blocks"] = args.blocks
    return settings


def _blocks_text(settings: dict) -> str:
    blocks = settings.get("blocks")
    return "one block per layer" if blocks is None else f"{blocks} blocks of consecutive layers"


def phase_steps(epochs: float, data: common.Data, args: argparse.Namespace) -> int:
    steps = max(1, round(epochs * common.steps_per_epoch(data, args.batch_size)))
    return steps if args.max_steps is None else min(steps, args.max_steps)


def float_model(data: common.Data, seed: int, args: argparse.Namespace) -> tuple[nn.Module, dict]:
    """The trained float model of ``seed``, from the cache or trained now (and cached)."""
    steps = phase_steps(args.float_epochs, data, args)
    name = f"{data.name}-{args.model}-seed{seed}-{steps}steps-b{args.batch_size}-lr{args.float_lr}"
    path = args.cache / f"{name}.pt"
    torch.manual_seed(seed)
    model = build_model(args.model, data.num_classes, data.shape[0])
    if path.exists():
        cached = torch.load(path, weights_only=True)
        model.load_state_dict(cached["state_dict"])
        logger.info("float model %s from the cache: top-1 %.2f%%", name, cached["top1"])
        return model, cached["info"]

    # a fixed thread count: the float model (and every run from it) must not depend on --threads
    settings = common.TrainSettings(steps, args.batch_size, args.float_lr)
    optimizer, lr_schedule = common.make_optimizer(model, settings)
    threads = torch.get_num_threads()
    torch.set_num_threads(FLOAT_THREADS)
    start = time.perf_counter()
    try:
        common.train_steps(model, data.train, optimizer, lr_schedule, settings, seed)
    finally:
        torch.set_num_threads(threads)
    info = {
        "top1": common.evaluate(model, data.test),
        "steps": steps,
        "train_seconds": time.perf_counter() - start,
        "gbops": count_bops(model, data.shape).gbops,
    }
    args.cache.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "top1": info["top1"], "info": info}, path)
    logger.info("float model %s: top-1 %.2f%% in %.0f s", name, info["top1"], info["train_seconds"])
    return model, info


def run_method(
    method: Method,
    model: nn.Module,
    data: common.Data,
    seed: int,
    weight_bits: int,
    act_bits: int | None,
    args: argparse.Namespace,
) -> dict:
    """Quantize a copy of ``model`` with ``method``, fine-tune, evaluate; one result record."""
    start = time.perf_counter()
    prepared, loss = fine_tune(method, model, data, seed, weight_bits, act_bits, args)
    final = prepared.finished()
    seconds = time.perf_counter() - start
    return {
        "top1": common.evaluate(final, data.test),
        "gbops": prepared.gbops(),
        "bits_reached": weight_bits if prepared.bits is None else prepared.bits(),
        "steps": phase_steps(args.epochs, data, args) if prepared.trains else 0,
        "final_loss": loss,
        "seconds": seconds,
    }


def fine_tune(
    method: Method,
    model: nn.Module,
    data: common.Data,
    seed: int,
    weight_bits: int,
    act_bits: int | None,
    args: argparse.Namespace,
) -> tuple[Prepared, float | None]:
    """A copy of ``model`` quantized by ``method`` and fine-tuned as the protocol says (not yet
    finished), and its last training loss (None for post-training methods)."""
    torch.manual_seed(seed)
    steps = phase_steps(args.epochs, data, args)
    calibration = [
        data.train.images[idx]
        for idx in common.batch_indices(
            len(data.train), args.batch_size, args.calibration_batches, seed
        )
    ]
    job = Job(
        weight_bits,
        act_bits,
        data.test.images[:1],
        calibration,
        steps,
        {
            "final_fraction": args.final_fraction,
            "diffq_penalty": args.diffq_penalty,
            "blocks": args.blocks,
        },
    )
    prepared = method.build(copy.deepcopy(model), job)
    if not prepared.trains:
        return prepared, None
    settings = common.TrainSettings(steps, args.batch_size, args.lr)
    optimizer, _ = common.make_optimizer(prepared.model, settings)
    if prepared.attach is not None:
        prepared.attach(optimizer)
    lr_schedule = common.schedule_for(optimizer, settings)  # after attach: all groups
    loss = common.train_steps(
        prepared.model,
        data.train,
        optimizer,
        lr_schedule,
        settings,
        seed,
        prepared.penalty,
        prepared.after_step,
    )
    return prepared, loss


def cell_key(record: dict) -> tuple:
    return (
        record["dataset"],
        record["seed"],
        record["method"],
        record["weight_bits"],
        record["act_bits"],
    )


def run_grid(args: argparse.Namespace, payload: dict) -> None:
    """Run every grid cell not in ``payload`` yet, saving ``payload`` after each."""
    done = {cell_key(r) for r in payload["runs"]}
    methods = [METHODS[name] for name in args.methods]
    for method in methods:
        reason = available(method)
        if reason is not None:
            payload["not_run"][method.name] = reason
            logger.warning("%s not run: %s", method.label, reason)
    runnable = [m for m in methods if m.name not in payload["not_run"]]
    for dataset in args.datasets:
        data = common.load_data(dataset)
        for seed in args.seeds:
            model, info = float_model(data, seed, args)
            payload["float"][f"{dataset}/{seed}"] = info
            for act_bits in args.act_bits:
                for weight_bits in args.weight_bits:
                    for method in runnable:
                        record = {
                            "dataset": dataset,
                            "model": args.model,
                            "seed": seed,
                            "method": method.name,
                            "label": method.label,
                            "family": method.family,
                            "uniform": method.uniform,
                            "weight_bits": weight_bits,
                            "act_bits": act_bits,
                            "float_top1": info["top1"],
                            "gbops_fp32": info["gbops"],
                        }
                        if cell_key(record) in done:
                            continue
                        try:
                            record.update(
                                run_method(method, model, data, seed, weight_bits, act_bits, args)
                            )
                            record["status"] = "ok"
                        except Exception as error:  # one failing peer must not stop the grid
                            logger.error("%s failed:\n%s", method.label, traceback.format_exc())
                            record["status"] = f"failed: {type(error).__name__}: {error}"
                        logger.info(
                            "%s seed %d W%dA%s %-20s top-1 %s (%.0f s)",
                            dataset,
                            seed,
                            weight_bits,
                            act_bits or "f",
                            method.label,
                            f"{record['top1']:.2f}" if "top1" in record else record["status"],
                            record.get("seconds", 0.0),
                        )
                        payload["runs"].append(record)
                        common.save_json(args.out, payload)


def summarize(runs: list[dict]) -> dict[tuple, dict]:
    """(dataset, act bits, weight bits, method) -> mean / std / n of top-1, GBOPs, bits."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        if r.get("status") == "ok":
            groups[(r["dataset"], r["act_bits"], r["weight_bits"], r["method"])].append(r)
    summary = {}
    for key, rs in groups.items():
        top1 = [r["top1"] for r in rs]
        summary[key] = {
            "mean": statistics.fmean(top1),
            "std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
            "n": len(top1),
            "gbops": statistics.fmean(r["gbops"] for r in rs),
            "bits": statistics.fmean(r["bits_reached"] for r in rs),
            "at_target_bits": sum(abs(r["bits_reached"] - r["weight_bits"]) < 1e-9 for r in rs),
            "label": rs[0]["label"],
            "family": rs[0]["family"],
            "uniform": rs[0]["uniform"],
        }
    return summary


def float_summary(payload: dict, dataset: str) -> tuple[float, float, int, float]:
    """(mean, std, n, GBOPs) of the float models of ``dataset``."""
    infos = [v for k, v in payload["float"].items() if k.split("/")[0] == dataset]
    top1 = [i["top1"] for i in infos]
    std = statistics.stdev(top1) if len(top1) > 1 else 0.0
    return statistics.fmean(top1), std, len(top1), infos[0]["gbops"]


def markdown_tables(payload: dict, summary: dict) -> str:
    """One table per data set: methods as rows, (W, A) as columns, mean ± std over seeds."""
    parts = []
    datasets = sorted({k[0] for k in summary}, key=DATASETS.index)
    for dataset in datasets:
        cells = {(k[1] or 32, k[2]) for k in summary if k[0] == dataset}
        cells = sorted(cells, key=lambda c: (c[0] == 32, c[1]))  # quantized activations first
        methods = [m for m in METHODS if any(k[0] == dataset and k[3] == m for k in summary)]
        fp_mean, fp_std, fp_n, fp_gbops = float_summary(payload, dataset)
        head = ["method", "family"] + [_cell_head(dataset, a, w, summary) for a, w in cells]
        lines = [
            f"**{dataset}** (float {fp_mean:.2f} ± {fp_std:.2f}, n={fp_n}, {fp_gbops:.4f} GBOPs)\n",
            "| " + " | ".join(head) + " |",
            "|---|---|" + "---:|" * len(cells),
        ]
        for name in methods:
            row = [METHODS[name].label, METHODS[name].family]
            for a, w in cells:
                s = summary.get((dataset, None if a == 32 else a, w, name))
                row.append("" if s is None else _cell(s, w))
            lines.append("| " + " | ".join(row) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _cell_head(dataset: str, act: int, weight: int, summary: dict) -> str:
    key = (dataset, None if act == 32 else act, weight, UNIQ_REFERENCE)
    gbops = summary[key]["gbops"] if key in summary else None
    a = "f" if act == 32 else act
    return f"W{weight}A{a}" + ("" if gbops is None else f" ({gbops:.4f} GBOPs)")


def _cell(s: dict, weight_bits: int) -> str:
    text = f"{s['mean']:.2f} ± {s['std']:.2f}"
    if s["n"] < 3:
        text += f" (n={s['n']})"
    if abs(s["bits"] - weight_bits) > 1e-9:
        text += f" [{s['bits']:.2f} b, {s['gbops']:.4f} GBOPs]"
    return text


def goals(payload: dict, summary: dict) -> list[str]:
    """The goal checks, one line each, with the measured figures."""
    lines = []
    for dataset in sorted({k[0] for k in summary}, key=DATASETS.index):
        fp_mean = float_summary(payload, dataset)[0]
        w4 = summary.get((dataset, 8, 4, UNIQ_REFERENCE))
        if w4 is not None:
            gap = fp_mean - w4["mean"]
            verdict = "met" if gap <= GOAL_W4_GAP else "NOT met"
            lines.append(
                f"- {dataset}: UNIQ W4A8 {w4['mean']:.2f} vs float {fp_mean:.2f}: "
                f"{gap:.2f} points below float (goal <= {GOAL_W4_GAP}): {verdict}"
            )
        w2 = summary.get((dataset, 8, 2, UNIQ_REFERENCE))
        best = _best_rival(summary, dataset, 2)
        if w2 is not None and best is not None:
            verdict = "met" if w2["mean"] > best["mean"] else "NOT met"
            lines.append(
                f"- {dataset}: UNIQ W2A8 {w2['mean']:.2f} vs the best uniform method or peer, "
                f"{best['label']} {best['mean']:.2f}: {verdict}"
            )
    return lines


def noise_against_rounding(summary: dict) -> list[str]:
    """Per data set and weight bits (8-bit activations): UNIQ gradual against its rounding twin,
    the same schedule and quantizer with straight-through rounding in place of the noise."""
    return [
        f"- {dataset} W{weight_bits}A8: noise {noise['mean']:.2f} ± {noise['std']:.2f}, "
        f"rounding {twin['mean']:.2f} ± {twin['std']:.2f} "
        f"({noise['mean'] - twin['mean']:+.2f} points for the noise)"
        for dataset, weight_bits, noise, twin in _a8_pairs(summary, UNIQ_REFERENCE, ROUNDING_TWIN)
    ]


def learned_against_fixed(summary: dict) -> list[str]:
    """Per data set and weight bits (8-bit activations): UNIQ gradual with learned levels
    against UNIQ gradual, the same float models and schedule."""
    return [
        f"- {dataset} W{weight_bits}A8: learned {learned['mean']:.2f} ± {learned['std']:.2f}, "
        f"fixed {fixed['mean']:.2f} ± {fixed['std']:.2f} "
        f"({learned['mean'] - fixed['mean']:+.2f} points for learning the levels)"
        for dataset, weight_bits, learned, fixed in _a8_pairs(
            summary, LEARNED_LEVELS, UNIQ_REFERENCE
        )
    ]


def mixed_against_uniform(summary: dict) -> list[str]:
    """Per data set and weight bits (8-bit activations): UNIQ with planned per-layer bits against
    UNIQ gradual at the column's uniform bits, at no more GBOPs; at 2 bits also against the best
    uniform method or peer."""
    lines = []
    for dataset, weight_bits, mixed, uniform in _a8_pairs(summary, MIXED_BITS, UNIQ_REFERENCE):
        line = (
            f"- {dataset} W{weight_bits}A8 budget: mixed {mixed['mean']:.2f} ± {mixed['std']:.2f} "
            f"({mixed['bits']:.2f} bits per weight, {mixed['gbops']:.4f} GBOPs), uniform "
            f"{uniform['mean']:.2f} ± {uniform['std']:.2f} ({uniform['gbops']:.4f} GBOPs): "
            f"{mixed['mean'] - uniform['mean']:+.2f} points for the plan"
        )
        if mixed["at_target_bits"]:
            line += (
                f" (the plan was the uniform bits in {mixed['at_target_bits']} of {mixed['n']} "
                "seeds, where any difference is thread count or code revision)"
            )
        best = _best_rival(summary, dataset, weight_bits)
        if weight_bits == 2 and best is not None:
            line += f"; best uniform method or peer {best['label']} {best['mean']:.2f}"
        lines.append(line)
    return lines


def _a8_pairs(summary: dict, method: str, partner: str) -> list[tuple[str, int, dict, dict]]:
    """(data set, weight bits, method's cell, partner's cell) at 8-bit activations, wherever
    both ran, by data set then bits."""
    pairs = []
    for dataset, act_bits, weight_bits, name in sorted(
        summary, key=lambda k: (DATASETS.index(k[0]), k[2])
    ):
        other = summary.get((dataset, act_bits, weight_bits, partner))
        if name == method and act_bits == 8 and other is not None:
            pairs.append((dataset, weight_bits, summary[(dataset, 8, weight_bits, name)], other))
    return pairs


def _best_rival(summary: dict, dataset: str, weight_bits: int) -> dict | None:
    """The best cell of a uniform method or a peer at ``weight_bits`` and 8-bit activations."""
    rivals = [
        s
        for k, s in summary.items()
        if k[:3] == (dataset, 8, weight_bits) and (s["uniform"] or s["family"] == "peer")
    ]
    return max(rivals, key=lambda s: s["mean"]) if rivals else None


def plot(payload: dict, summary: dict, path: Path) -> None:
    """Accuracy against GBOPs per data set: one line per method through its weight bits.

    The y axis is the top-1 error on a log scale, labelled as accuracy, so that 99.2% and 60%
    both read well (higher is better, as usual). Methods at the same bits share a GBOPs value;
    their points are spread sideways a little so that the error bars stay apart. The float
    model is a horizontal line (its GBOPs lie far to the right).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    datasets = sorted({k[0] for k in summary}, key=DATASETS.index)
    acts = sorted({k[1] or 32 for k in summary})
    fig = Figure(figsize=(2.2 + 6.0 * len(acts), 5.0 * len(datasets)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(datasets), len(acts), squeeze=False)
    panels = [
        (d, a, ax)
        for d, row in zip(datasets, grid, strict=True)
        for a, ax in zip(acts, row, strict=True)
    ]
    names = list(METHODS)
    for dataset, act, ax in panels:
        act_key = None if act == 32 else act
        if not any((k[0], k[1]) == (dataset, act_key) for k in summary):
            ax.set_visible(False)
            continue
        for i, name in enumerate(names):
            points = sorted(
                (s["gbops"], 100 - s["mean"], s["std"])
                for (d, a, _, m), s in summary.items()
                if (d, a, m) == (dataset, act_key, name)
            )
            if not points:
                continue
            xs, errs, stds = zip(*points, strict=True)
            dodge = 1 + _DODGE * (i - (len(names) - 1) / 2)
            method = METHODS[name]
            ax.errorbar(
                [x * dodge for x in xs],
                errs,
                yerr=stds,
                color=_COLORS[i % len(_COLORS)],
                marker=_MARKERS[i % len(_MARKERS)],
                ls=_STYLES[method.family],
                lw=1.3,
                ms=5,
                capsize=2,
                label=f"{method.label} ({method.family})",
            )
        for (d, a, w, m), s in summary.items():  # weight bits under their GBOPs
            if (d, a, m) == (dataset, act_key, UNIQ_REFERENCE):
                ax.annotate(
                    f"W{w}",
                    (s["gbops"], 0),
                    xycoords=("data", "axes fraction"),
                    xytext=(0, 4),
                    textcoords="offset points",
                    ha="center",
                    fontsize=9,
                )
        fp_mean, _, _, fp_gbops = float_summary(payload, dataset)
        ax.axhline(100 - fp_mean, color="black", lw=1, ls="-.")
        ax.annotate(
            f"float {fp_mean:.2f}% ({fp_gbops:.2f} GBOPs)",
            (0.01, 100 - fp_mean),
            xycoords=("axes fraction", "data"),
            xytext=(0, 4),
            textcoords="offset points",
            fontsize=8,
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.invert_yaxis()
        ax.margins(x=0.08)
        ticks = [t for t in ERROR_TICKS if _in_range(ax, t)]
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda e, _: f"{100 - e:g}"))
        ax.set_xlabel("GBOPs per image (log scale)")
        ax.set_ylabel("top-1 accuracy (%), log scale of the error")
        act_text = "float activations" if act == 32 else f"{act}-bit activations"
        ax.set_title(f"{dataset}, {payload['settings']['model']}, {act_text}")
        ax.grid(True, which="both", alpha=0.3)
    visible = [ax for _, _, ax in panels if ax.get_visible()]
    handles, labels = visible[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    fig.suptitle("Top-1 accuracy against complexity (mean ± std over seeds)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    logger.info("wrote %s", path)


def _in_range(ax, value: float) -> bool:
    lo, hi = sorted(ax.get_ylim())
    return lo <= value <= hi


def _diffq_note(runs: list[dict]) -> str:
    diffq = [r for r in runs if r["method"] == "diffq" and r["status"] == "ok"]
    if diffq and all(abs(r["bits_reached"] - r["weight_bits"]) < 1e-9 for r in diffq):
        return " (here DiffQ ended at exactly the target bits in every run)"
    return ""


def report(payload: dict, args: argparse.Namespace) -> str:
    """The RESULTS.md section of this run."""
    summary = summarize(payload["runs"])
    s = payload["settings"]
    runs = payload["runs"]
    failed = sorted({(r["label"], r["status"]) for r in runs if r["status"] != "ok"})
    seconds = sum(r.get("seconds", 0.0) for r in runs)
    lines = [
        f"## {section_title(s['model'], args.title)} ({payload['date']})",
        "",
        "Command"
        + ("s, run in turn" if len(payload["commands"]) > 1 else "")
        + " (code commit): "
        + ", ".join(
            f"`{c}` ({r})"
            for c, r in zip(payload["commands"], payload.get("revisions", []), strict=False)
        )
        + "  ",
        f"Machine: {payload['machine']}  ",
        f"Wall time of the grid: {payload.get('wall_seconds', 0) / 60:.0f} min "
        f"({seconds / 60:.0f} min in fine-tuning and evaluation); raw runs: "
        f"`{common.relative(args.out)}`; figure: `{common.relative(args.figure)}`.",
        "",
        f"Protocol: model `{s['model']}`; per seed one float model ({s['float_epochs']} "
        f"epochs, AdamW lr {s['float_lr']}, cosine), then every method fine-tunes a copy for "
        f"{s['epochs']} epoch(s) (AdamW lr {s['lr']}, cosine, no weight decay, batch "
        f"{s['batch_size']}, the same batches in the same order)"
        + (f", at most {s['max_steps']} steps per phase" if s["max_steps"] else "")
        + "; post-training methods calibrate on "
        f"{s['calibration_batches']} batches. Top-1 on the whole test split, mean ± sample "
        "std over seeds. Every Conv / Linear layer is quantized, the first and last included. "
        f"UNIQ gradual: {_blocks_text(s)}, equal step shares, the last "
        f"{100 * s['final_fraction']:.0f}% of the steps with every layer frozen. "
        "GBOPs per image by `count_bops` at the bits of each column; a cell in brackets gives "
        "the mean bits per weight a method reached and its GBOPs: DiffQ's (bracketed to "
        f"[b-1, b+1], penalty {s['diffq_penalty']} per bit per weight)" + _diffq_note(runs) + ", "
        "UNIQ mixed bits' planned bits.",
        "",
        markdown_tables(payload, summary),
        "",
        "Goals (UNIQ gradual):",
        *(goals(payload, summary) or ["- no cell of the goals was run"]),
    ]
    ablation = noise_against_rounding(summary)
    if ablation:
        lines += [
            "",
            "Noise against rounding: UNIQ gradual against k-quantile STE gradual, the same "
            "float models, schedule and k-quantile quantizer with each stage's noise replaced by "
            "straight-through rounding:",
            *ablation,
        ]
    learned = learned_against_fixed(summary)
    if learned:
        lines += [
            "",
            "Learned against fixed levels: UNIQ learned levels (each frozen layer keeps its "
            "codes and trains its k levels) against UNIQ gradual, the same float models and "
            "schedule:",
            *learned,
        ]
    mixed = mixed_against_uniform(summary)
    if mixed:
        lines += [
            "",
            "Mixed against uniform bits: UNIQ mixed bits (each layer's bits chosen by "
            "`plan_bits` from 1, 2, 3, 4, 6, 8 to fit the GBOPs of the column's uniform bits) "
            "against UNIQ gradual at those uniform bits:",
            *mixed,
        ]
    missing = missing_parts(payload, args)
    if missing:
        lines += ["", "Parts of the full grid not run here (time on this machine):", *missing]
    if payload["not_run"]:
        lines += ["", "Not run:"]
        lines += [f"- {METHODS[m].label}: not run: {why}" for m, why in payload["not_run"].items()]
    if failed:
        lines += ["", "Failed runs:"]
        lines += [f"- {label}: {status}" for label, status in failed]
    return "\n".join(lines) + "\n"


def missing_parts(payload: dict, args: argparse.Namespace) -> list[str]:
    """What of the default full grid has no finished run, and the command that runs it."""
    defaults = parse_args([])
    ok = [r for r in payload["runs"] if r["status"] == "ok"]
    full = {
        "datasets": (defaults.datasets, "dataset"),
        "seeds": (defaults.seeds, "seed"),
        "weight_bits": (defaults.weight_bits, "weight_bits"),
        "act_bits": (defaults.act_bits, "act_bits"),
        "methods": (defaults.methods, "method"),
    }
    lines = []
    for flag, (values, key) in full.items():
        done = {r[key] for r in ok}
        absent = [v for v in values if v not in done]
        if absent:
            shown = ", ".join(FLOAT if v is None else str(v) for v in absent)
            lines.append(f"- {flag.replace('_', ' ')} not run: {shown}")
    changed = [
        f"--{k.replace('_', '-')} {v}"
        for k, v in payload["settings"].items()
        if v != getattr(defaults, k) and v is not None
    ]
    if lines:
        command = " ".join(["python benchmarks/accuracy.py --resume", *changed])
        lines.append(
            f"- the whole grid (3 seeds, both data sets, W2/3/4/8, A8 and float, every method), "
            f"reusing the runs above: `{command}`"
            + (f" (`--out {common.relative(args.out)}`)" if args.out != defaults.out else "")
            + (f" (`--title {shlex.quote(args.title)}`)" if args.title else "")
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("uniq_quant").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.report_only:
        if not args.out.exists():
            raise SystemExit(
                f"--report-only reads the runs of --out {args.out}, which does not exist: "
                "run the grid first, or name the file it wrote with --out"
            )
        payload = json.loads(args.out.read_text())
        if adopt_section(args, payload):
            common.save_json(args.out, payload)
        return write_report(payload, args)
    if args.merge:
        created = not args.out.exists()
        payload, shards = merge_base(args.out, args.merge)
        adopted = adopt_section(args, payload)
        added = sum(merge(payload, json.loads(path.read_text()), path) for path in shards)
        if adopted and not (added or created):
            common.save_json(args.out, payload)
        if added or created:
            payload["commands"].append(common.command_line("accuracy.py", argv))
            payload["revisions"] = [*payload.get("revisions", []), common.revision()]
            common.save_json(args.out, payload)
        return write_report(payload, args)

    payload = {
        "commands": [common.command_line("accuracy.py", argv)],
        "date": common.today(),
        "machine": common.machine(),
        "revisions": [common.revision()],
        "settings": settings_of(args),
        "grid": {
            "datasets": args.datasets,
            "seeds": args.seeds,
            "weight_bits": args.weight_bits,
            "act_bits": args.act_bits,
            "methods": args.methods,
        },
        "float": {},
        "not_run": {},
        "runs": [],
        "wall_seconds": 0.0,
    }
    if args.resume and args.out.exists():
        previous = json.loads(args.out.read_text())
        if previous.get("settings") == payload["settings"]:
            payload["runs"] = [r for r in previous["runs"] if r["status"] == "ok"]
            payload["float"] = previous["float"]
            payload["commands"] = previous["commands"] + payload["commands"]
            payload["revisions"] = previous.get("revisions", []) + payload["revisions"]
            payload["wall_seconds"] = previous["wall_seconds"]
            payload.update({k: previous[k] for k in ("title", "figure") if k in previous})
            logger.info("resuming: %d finished runs reused", len(payload["runs"]))
        else:
            logger.warning("--resume: %s has other settings; starting afresh", args.out)

    adopt_section(args, payload)
    start = time.perf_counter()
    run_grid(args, payload)
    payload["wall_seconds"] += time.perf_counter() - start
    common.save_json(args.out, payload)
    if not payload["runs"]:
        logger.error("no run finished")
        return 1
    return write_report(payload, args)


def merge_base(out: Path, shards: list[Path]) -> tuple[dict, list[Path]]:
    """The payload the shards are merged into, and the shards left to merge: ``out``'s runs,
    or, when ``out`` does not exist yet, the first shard itself (a new file of its runs)."""
    missing = [str(path) for path in shards if not path.exists()]
    if missing:
        raise SystemExit(f"--merge: no such file {', '.join(missing)}")
    if out.exists():
        return json.loads(out.read_text()), list(shards)
    logger.info("%s does not exist: it starts as a copy of %s", out, shards[0])
    return json.loads(shards[0].read_text()), list(shards[1:])


def merge(payload: dict, shard: dict, source: Path) -> int:
    """Add ``shard``'s finished runs (cells ``payload`` lacks), float models and commands.

    Returns:
        The number of runs added (0 when ``payload`` already holds every cell of the shard).

    Raises:
        SystemExit: the shard was run with other settings (its runs would not be comparable).
    """
    if shard.get("settings") != payload.get("settings"):
        raise SystemExit(
            f"{source} was run with settings {shard.get('settings')}, --out with "
            f"{payload.get('settings')}: rerun the shard with the same training options"
        )
    done = {cell_key(r) for r in payload["runs"]}
    added = [r for r in shard["runs"] if r["status"] == "ok" and cell_key(r) not in done]
    logger.info("merged %d runs from %s", len(added), source)
    if not added:
        return 0
    payload["runs"] += added
    payload["float"].update(shard["float"])
    payload["commands"] += shard["commands"]
    payload["revisions"] = payload.get("revisions", []) + shard.get("revisions", [])
    payload["wall_seconds"] += shard["wall_seconds"]
    return len(added)


def write_report(payload: dict, args: argparse.Namespace) -> int:
    """Print the section; unless --no-report, write it to RESULTS.md and draw the figure."""
    text = report(payload, args)
    sys.stdout.write(text)
    if not args.no_report:
        plot(payload, summarize(payload["runs"]), args.figure)
        title = section_title(payload["settings"]["model"], args.title)
        common.write_section(title, text)
        logger.info("wrote the section %r of %s", title, common.RESULTS_MD)
    return 0 if all(math.isfinite(r.get("top1", 0.0)) for r in payload["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
