"""Figures of a quantization study, written as PNG files.

* ``plot_accuracy_vs_gbops``: top-1 accuracy against GBOPs per image (log scale), one line per
  model through its (weight bits, act bits) runs, with optional peer methods from a CSV; the
  paper compares methods on this plane (section 4).
* ``plot_weight_histogram``: one layer's weights with the k-quantile codebook drawn on them:
  thresholds t_i = F^-1(i / k) split the fitted Gaussian into k bins of equal mass, and each
  level r_i = F^-1((i - 1/2) / k) sits at its bin's median.
* ``plot_training_curves``: training loss and validation top-1 per epoch, the boundaries of the
  gradual quantization stages marked by vertical lines.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas: no pyplot state,
no window, no change of the process's backend. Each function returns the path it wrote.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from itertools import groupby, pairwise
from pathlib import Path

import torch

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as error:  # matplotlib is an optional dependency of the figures only
    raise ImportError("uniq_quant.plots needs matplotlib: pip install matplotlib") from error

from uniq_quant._validation import check_bits, check_weights
from uniq_quant.functional import fit_codebook, gaussian_stats
from uniq_quant.mixed_precision import weight_bits_label

RUN_KEYS = ("model", "weight_bits", "act_bits", "quant_top1", "gbops")
PEER_COLUMNS = ("label", "gbops", "top1")
DPI = 150
_HIST_BINS = 120  # at most; a small tensor gets about sqrt(n) bins
_MANY_LEVELS = 32  # above this many levels, codebook lines are drawn thin
_PDF_POINTS = 400  # samples of the fitted density curve
_LEVEL_HEIGHT = 0.12  # level markers rise this fraction of the y-axis above zero
_STAGE_LABEL_PAD = 16  # points between the title and the axes, room for the stage names


def read_peer_points(path: str | Path) -> list[dict[str, object]]:
    """Read published (label, gbops, top1) points from a CSV file with a header row.

    Args:
        path: CSV file with at least the columns label, gbops and top1 (top-1 in percent).

    Returns:
        One dict per row: label (str), gbops (float), top1 (float).

    Raises:
        ValueError: a column is missing or a number does not parse.
    """
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in PEER_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(
                f"peer CSV {str(path)!r} lacks column(s) {missing}; its header must hold "
                f"{','.join(PEER_COLUMNS)}, got {reader.fieldnames}"
            )
        rows = list(reader)
    try:
        return [
            {"label": r["label"], "gbops": float(r["gbops"]), "top1": float(r["top1"])}
            for r in rows
        ]
    except ValueError as error:
        raise ValueError(
            f"peer CSV {str(path)!r}: gbops and top1 must be numbers; {error}"
        ) from None


def stage_boundaries(metrics: Sequence[Mapping[str, object]]) -> list[float]:
    """Epoch positions between consecutive records whose ``stage`` differs.

    Args:
        metrics: per-epoch records in epoch order, each with ``epoch`` and optionally ``stage``.

    Returns:
        The midpoint between the last epoch of a stage and the first epoch of the next one,
        once per stage change.

    Example:
        >>> stage_boundaries([{"epoch": 0, "stage": 0}, {"epoch": 1, "stage": 1}])
        [0.5]
    """
    return [
        (before["epoch"] + after["epoch"]) / 2
        for before, after in pairwise(metrics)
        if before.get("stage") != after.get("stage")
    ]


def plot_accuracy_vs_gbops(
    runs: Sequence[Mapping[str, object]],
    path: str | Path,
    peers_csv: str | Path | None = None,
    title: str = "Accuracy against complexity",
) -> Path:
    """Plot top-1 accuracy against GBOPs per image for runs and, optionally, peer methods.

    Args:
        runs: run summaries (``summary.json`` contents), each with model, weight_bits, act_bits,
            quant_top1 (percent) and gbops (1e9 BOPs per image).
        path: the PNG file to write.
        peers_csv: optional CSV of published points with columns label, gbops, top1.
        title: the figure title.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: ``runs`` is empty or a run lacks one of ``RUN_KEYS``.
    """
    _check_runs(runs)
    fig = _figure(7.0, 4.8)
    ax = fig.add_subplot()

    # 1. one line per model through its runs, cheapest first, each point labelled WxAy
    by_model = sorted(runs, key=lambda r: (str(r["model"]), float(r["gbops"])))
    for model, group in groupby(by_model, key=lambda r: str(r["model"])):
        points = list(group)
        gbops = [float(r["gbops"]) for r in points]
        top1 = [float(r["quant_top1"]) for r in points]
        ax.plot(gbops, top1, marker="o", label=model)
        for r, x, y in zip(points, gbops, top1, strict=True):
            _annotate(ax, f"W{weight_bits_label(r)}A{r['act_bits']}", x, y)

    # 2. published points of other methods, grey crosses
    if peers_csv is not None:
        peers = read_peer_points(peers_csv)
        xs, ys = [p["gbops"] for p in peers], [p["top1"] for p in peers]
        ax.scatter(xs, ys, marker="x", color="0.35", zorder=3, label="published")
        for p in peers:
            _annotate(ax, str(p["label"]), p["gbops"], p["top1"], color="0.35")

    ax.set_xscale("log")
    ax.set_xlabel("GBOPs per image (log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_weight_histogram(
    weight: torch.Tensor, bits: int, path: str | Path, name: str = "weights"
) -> Path:
    """Plot a weight histogram with its k-quantile thresholds and levels at ``bits`` bits.

    Args:
        weight: one layer's weight, any shape (fitted per tensor).
        bits: bits per weight; the codebook has k = 2^bits levels.
        path: the PNG file to write.
        name: the layer's name, for the title.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: ``bits`` is outside 1..8 or ``weight`` is empty or not finite.
    """
    bits = check_bits(bits)
    w = check_weights(weight).detach().float().cpu()
    levels, thresholds = (t[0].tolist() for t in fit_codebook(w, bits, "kquantile"))
    mu, sigma = (float(s) for s in gaussian_stats(w, False))
    many = len(levels) > _MANY_LEVELS
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot()

    # 1. the weights and the Gaussian the quantizer fits to them
    bins = min(_HIST_BINS, max(10, math.isqrt(w.numel())))
    ax.hist(w.flatten().numpy(), bins=bins, density=True, color="0.75", label="weights")
    lo, hi = min(w.min().item(), thresholds[0]), max(w.max().item(), thresholds[-1])
    xs = torch.linspace(lo, hi, _PDF_POINTS)
    pdf = torch.exp(-0.5 * ((xs - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    ax.plot(
        xs.numpy(),
        pdf.numpy(),
        color="black",
        lw=1.2,
        label=rf"Gaussian fit, $\mu$ = {mu:.3g}, $\sigma$ = {sigma:.3g}",
    )

    # 2. the codebook: thresholds split the fit into equal-mass bins, levels are bin medians
    for i, t in enumerate(thresholds):
        label = r"thresholds $F^{-1}(i/k)$" if i == 0 else None
        ax.axvline(t, color="tab:blue", ls="--", lw=0.5 if many else 1.0, alpha=0.8, label=label)
    top = ax.get_ylim()[1]
    ax.vlines(
        levels,
        0,
        _LEVEL_HEIGHT * top,
        color="tab:red",
        lw=1.0 if many else 2.0,
        label=r"levels $F^{-1}((i - \frac{1}{2})/k)$",
    )

    ax.set_xlabel("weight value")
    ax.set_ylabel("density")
    ax.set_title(f"{name}: {bits}-bit k-quantile codebook, k = {len(levels)} levels")
    ax.legend(loc="upper right", fontsize="small")
    return _save(fig, path)


def plot_training_curves(
    metrics: Sequence[Mapping[str, object]],
    path: str | Path,
    title: str = "Training with gradual quantization",
) -> Path:
    """Plot training loss and validation top-1 per epoch, stage boundaries as vertical lines.

    Args:
        metrics: per-epoch records (``metrics.jsonl`` lines) with epoch and, where measured,
            train_loss, val_top1 (percent) and stage; a missing or None value is skipped.
        path: the PNG file to write.
        title: the figure title.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: ``metrics`` is empty or a record has no epoch.
    """
    if not metrics or any("epoch" not in m for m in metrics):
        raise ValueError(
            "metrics must be a non-empty list of per-epoch dicts, each with an 'epoch' key; "
            f"got {len(metrics)} record(s)"
        )
    records = sorted(metrics, key=lambda m: m["epoch"])
    fig = _figure(7.0, 5.6)
    loss_ax, top1_ax = fig.subplots(2, 1, sharex=True)

    # 1. one curve per metric, each on its own axis
    for ax, key, label, color in (
        (loss_ax, "train_loss", "training loss", "tab:blue"),
        (top1_ax, "val_top1", "validation top-1 (%)", "tab:green"),
    ):
        points = [(m["epoch"], m[key]) for m in records if m.get(key) is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", color=color)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)

    # 2. stage boundaries on both axes, each stage named over its span
    boundaries = stage_boundaries(records)
    for ax in (loss_ax, top1_ax):
        for x in boundaries:
            ax.axvline(x, color="0.4", ls="--", lw=1.0)
    has_stages = any("stage" in m for m in records)
    if has_stages:
        _label_stages(loss_ax, records, boundaries)

    top1_ax.set_xlabel("epoch")
    loss_ax.set_title(title, pad=_STAGE_LABEL_PAD if has_stages else None)
    return _save(fig, path)


def _check_runs(runs: Sequence[Mapping[str, object]]) -> None:
    """Raise ValueError naming the first run that lacks a key of ``RUN_KEYS``."""
    if not runs:
        raise ValueError("runs is empty; pass at least one run summary to plot")
    for index, run in enumerate(runs):
        missing = [k for k in RUN_KEYS if k not in run]
        if missing:
            raise ValueError(
                f"run {index} lacks {missing}; every run needs {', '.join(RUN_KEYS)} "
                "(the keys of a training run's summary.json)"
            )


def _label_stages(ax, records: Sequence[Mapping[str, object]], boundaries: list[float]) -> None:
    """Write 'stage S' just above the axes, over the middle of each stage's span of epochs."""
    edges = [records[0]["epoch"], *boundaries, records[-1]["epoch"]]
    stages = [records[0].get("stage")]
    stages += [b.get("stage") for a, b in pairwise(records) if a.get("stage") != b.get("stage")]
    for (left, right), stage in zip(pairwise(edges), stages, strict=True):
        ax.annotate(
            f"stage {stage}" if str(stage).isdigit() else str(stage),
            xy=((left + right) / 2, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize="small",
            color="0.3",
        )


def _annotate(ax, text: str, x: float, y: float, color: str | None = None) -> None:
    ax.annotate(
        text, (x, y), xytext=(4, 4), textcoords="offset points", fontsize="x-small", color=color
    )


def _figure(width: float, height: float) -> Figure:
    """A Figure on the Agg canvas (inches)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG to ``path``, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
