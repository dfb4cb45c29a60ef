"""Figures: each plotting function writes a real PNG, and bad input is refused by name."""

from pathlib import Path

import pytest
import torch

pytest.importorskip("matplotlib")

from uniq_quant import plots  # after the skip: the figures need matplotlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 10_000  # an empty 7 x 4 inch canvas at 150 dpi compresses to a few kB


def _assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > MIN_PNG_BYTES


def _runs() -> list[dict]:
    points = [("resnet18", 4, 8, 67.0, 98.4), ("resnet18", 5, 8, 68.0, 116.3)]
    points += [("mobilenet_v2", 4, 8, 66.0, 17.0), ("mobilenet_v2", 8, 8, 68.3, 30.0)]
    keys = ("model", "weight_bits", "act_bits", "quant_top1", "gbops")
    return [dict(zip(keys, p, strict=True)) for p in points]


def _metrics() -> list[dict]:
    return [
        {"epoch": e, "train_loss": 2.0 / (e + 1), "val_top1": 40.0 + 3 * e, "stage": e // 3}
        for e in range(9)
    ]


def test_accuracy_vs_gbops_with_peers(tmp_path) -> None:
    """Runs and peer points from a CSV make a PNG in a folder that did not exist yet."""
    peers = tmp_path / "peers.csv"
    peers.write_text("label,gbops,top1\nLSQ W4A4,61.0,71.1\nFP32,1860,69.8\n")
    path = plots.plot_accuracy_vs_gbops(_runs(), tmp_path / "figs" / "acc.png", peers_csv=peers)
    _assert_png(path)


def test_weight_histogram(tmp_path) -> None:
    """A conv weight's histogram with its 3-bit codebook is written as a PNG."""
    weight = torch.randn(64, 32, 3, 3) * 0.05
    _assert_png(plots.plot_weight_histogram(weight, 3, tmp_path / "hist.png", name="conv"))


def test_training_curves(tmp_path) -> None:
    """Per-epoch metrics, one missing val_top1 included, are drawn into a PNG."""
    metrics = _metrics()
    metrics[4]["val_top1"] = None
    _assert_png(plots.plot_training_curves(metrics, tmp_path / "curves.png"))


def test_stage_boundaries_sit_between_stages() -> None:
    """A boundary lies halfway between the last epoch of a stage and the first of the next."""
    assert plots.stage_boundaries(_metrics()) == [2.5, 5.5]
    assert plots.stage_boundaries([{"epoch": 0}, {"epoch": 1}]) == []


def test_read_peer_points(tmp_path) -> None:
    """The peer CSV becomes dicts with float gbops and top1; a missing column is named."""
    good = tmp_path / "good.csv"
    good.write_text("label,gbops,top1,note\nA,1.5,70.25,x\n")
    assert plots.read_peer_points(good) == [{"label": "A", "gbops": 1.5, "top1": 70.25}]
    bad = tmp_path / "bad.csv"
    bad.write_text("label,top1\nA,70\n")
    with pytest.raises(ValueError, match="gbops"):
        plots.read_peer_points(bad)


def test_bad_input_is_refused(tmp_path) -> None:
    """A run without gbops, no metrics, or weight bits outside 1..8 raise ValueError."""
    run = {k: v for k, v in _runs()[0].items() if k != "gbops"}
    with pytest.raises(ValueError, match=r"run 0 lacks \['gbops'\]"):
        plots.plot_accuracy_vs_gbops([run], tmp_path / "a.png")
    with pytest.raises(ValueError, match="non-empty"):
        plots.plot_training_curves([], tmp_path / "c.png")
    with pytest.raises(ValueError, match=r"1\.\.8"):
        plots.plot_weight_histogram(torch.randn(10), 12, tmp_path / "h.png")
