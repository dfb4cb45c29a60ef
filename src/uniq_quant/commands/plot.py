"""``uniq-quant plot``: redraw the figures of finished runs and compare them on one figure.

uniq-quant plot runs/lenet5-w4a8                      # curves into the run, comparison here
uniq-quant plot runs/*-w*a8 --out figures --peers peers.csv

For each RUN (the --out folder of a finished ``uniq-quant train``), its training curves are
drawn from metrics.jsonl to RUN/training_curves.png, or with --out to
OUT/<run folder name>-training_curves.png. Across all RUNs, top-1 against GBOPs per image
(from each summary.json) is drawn to OUT/accuracy_vs_gbops.png, OUT being the current folder
by default, with published points from a CSV of label,gbops,top1 when --peers is given.
Every input is read and checked before anything is drawn. Figures in a run folder are redrawn
in place; an existing figure anywhere else is kept unless --force is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uniq_quant.mixed_precision import weight_bits_label
from uniq_quant.train.run import METRICS, SUMMARY

logger = logging.getLogger(__name__)

EXIT_USAGE = 2  # the exit code argparse uses for bad arguments
COMPARISON = "accuracy_vs_gbops.png"
CURVES = "training_curves.png"
FLOAT_ACT_BITS = 32  # a run with float activations is labelled A32, as train labels it


@dataclass(frozen=True)
class Run:
    """A finished run: its folder, its summary.json and its metrics.jsonl records."""

    folder: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]

    @property
    def label(self) -> str:
        """``MODEL WxAy``, e.g. ``small_cnn W4A8`` (``WmixA8`` for a GBOPs-budget run)."""
        s = self.summary
        return f"{s['model']} W{weight_bits_label(s)}A{s['act_bits'] or FLOAT_ACT_BITS}"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plot`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "plot",
        help="redraw the figures of runs and compare their accuracy against GBOPs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"folder of the figures (default: curves into each run, {COMPARISON} here)",
    )
    parser.add_argument(
        "--peers", type=Path, metavar="CSV", help="published points: label,gbops,top1 (percent)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite figures outside runs")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Read and check every input, then draw; prints the files written, one per line."""
    try:
        from uniq_quant import plots  # matplotlib is an optional dependency

        runs = _unique([read_run(folder) for folder in args.runs])
        out = Path(".") if args.out is None else args.out
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file; give a folder for the figures")
        if args.peers is not None:
            plots.read_peer_points(args.peers)  # a bad CSV stops us before any figure
        curves = _curve_paths(runs, args.out)
        comparison = out / COMPARISON
        _check_free([*curves, comparison], args.force)
    except (FileNotFoundError, ValueError, ImportError) as error:
        logger.error("%s", error)
        return EXIT_USAGE

    # 1. each run's training curves, 2. all runs on the accuracy-complexity plane
    written = [
        plots.plot_training_curves(r.metrics, path, title=f"{r.label}: training with UNIQ")
        for r, path in zip(runs, curves, strict=True)
    ]
    points = [{**r.summary, "act_bits": r.summary["act_bits"] or FLOAT_ACT_BITS} for r in runs]
    written.append(plots.plot_accuracy_vs_gbops(points, comparison, args.peers, title=_title(runs)))
    sys.stdout.write("".join(f"{path}\n" for path in written))
    return 0


def read_run(folder: Path) -> Run:
    """Read a run folder's summary.json and metrics.jsonl.

    Raises:
        FileNotFoundError: the folder or one of the two files does not exist.
        ValueError: a file is not valid JSON, or the summary lacks a key the figure needs.
    """
    from uniq_quant.plots import RUN_KEYS

    hint = "give the --out folder of a finished `uniq-quant train` run"
    for name in (SUMMARY, METRICS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} holds no {name}; {hint}")
    summary = _json(folder / SUMMARY, (folder / SUMMARY).read_text())
    if not isinstance(summary, dict):
        raise ValueError(f"{folder / SUMMARY} holds no JSON object; {hint}")
    missing = [key for key in RUN_KEYS if key not in summary]
    if missing:
        raise ValueError(f"{folder / SUMMARY} lacks {missing}; {hint}")
    lines = (folder / METRICS).read_text().splitlines()
    metrics = [_json(folder / METRICS, line) for line in lines if line.strip()]
    if not metrics:
        raise ValueError(f"{folder / METRICS} records no epoch; {hint}")
    return Run(folder, summary, metrics)


def _json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); rerun or repair the run") from None


def _unique(runs: list[Run]) -> list[Run]:
    """``runs`` without repeats of the same folder, in their order."""
    seen: dict[Path, Run] = {}
    for r in runs:
        seen.setdefault(r.folder.resolve(), r)
    return list(seen.values())


def _curve_paths(runs: list[Run], out: Path | None) -> list[Path]:
    """Where each run's training curves go: into the run, or named after it in ``out``."""
    paths, taken = [], set()
    for r in runs:
        if out is None or out.resolve() == r.folder.resolve():
            paths.append(r.folder / CURVES)
            continue
        stem, index = r.folder.resolve().name, 1
        while (name := f"{stem}{f'-{index}' if index > 1 else ''}-{CURVES}") in taken:
            index += 1  # two runs in folders of the same name
        taken.add(name)
        paths.append(out / name)
    return paths


def _check_free(paths: list[Path], force: bool) -> None:
    """ValueError naming an existing figure outside every run folder, unless ``force``."""
    kept = [p for p in paths if p.exists() and not (p.parent / SUMMARY).is_file()]
    if kept and not force:
        names = ", ".join(str(p) for p in kept)
        verb = "exists" if len(kept) == 1 else "exist"
        raise ValueError(f"{names} {verb}; pass --force to overwrite, or choose another --out")


def _title(runs: list[Run]) -> str:
    """The comparison's title, naming the data set when every run shares one."""
    datasets = {str(r.summary.get("dataset")) for r in runs}
    on = f" on {datasets.pop()}" if len(datasets) == 1 else ""
    return f"Accuracy against complexity{on}"
