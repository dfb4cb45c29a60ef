"""Smoke runs of the benchmark scripts: they start, measure and print their tables."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _benchmark_module(name: str):
    """Import ``name`` (``accuracy``, ``methods.ours``, ...) from the benchmarks folder."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_overhead_times_float_uniq_and_the_gradual_schedule(tmp_path: Path) -> None:
    """One round of the step timing, the gradual sweeps included (with and without learned
    levels), and the inference timing."""
    out = tmp_path / "overhead.json"
    text = _run(
        "overhead.py",
        *("--models", "resnet20", "--variants", "float", "uniq", "uniq-gradual"),
        "uniq-gradual-learned",
        *("--rounds", "1", "--steps", "1", "--warmup", "0", "--infer-rounds", "1"),
        *("--no-memory", "--no-report", "--goal", "100", "--out", str(out)),
    )
    step = json.loads(out.read_text())["models"]["resnet20"]["step"]
    assert set(step) == {"float", "uniq", "uniq-gradual", "uniq-gradual-learned"}
    assert step["float"]["ratio"] == 1.0
    assert all(s["ratio"] > 0 for s in step.values())
    assert "| uniq-gradual |" in text and "| converted |" in text and "| onnx-uniq |" in text
    inference = json.loads(out.read_text())["models"]["resnet20"]["inference"]
    assert {"onnx-float", "onnx-uniq"} <= set(inference["1"])


@pytest.mark.filterwarnings("ignore")
def test_onnx_agreement_reports_both_runtimes(tmp_path: Path) -> None:
    """The ONNX table has a row per variant with the float32 and float64 comparisons."""
    text = _run("onnx_agreement.py", "--models", "small_cnn", "--batch", "2", "--no-report")
    rows = [line for line in text.splitlines() if line.startswith("| small_cnn |")]
    assert [row.split(" | ")[1] for row in rows] == ["W4", "W4A8"]
    float64_diff = float(rows[1].rstrip(" |").split(" | ")[-1])
    assert float64_diff < 1e-9


def test_accuracy_merge_adds_a_shard_once(tmp_path: Path) -> None:
    """Merging a shard twice adds its runs and its command once; other settings are refused."""
    accuracy = _benchmark_module("accuracy")

    def run(seed: int) -> dict:
        cell = {"dataset": "mnist", "seed": seed, "method": "lsq", "weight_bits": 2}
        return {**cell, "act_bits": 8, "status": "ok"}

    def payload(seeds: list[int]) -> dict:
        return {
            "settings": {"epochs": 1},
            "runs": [run(s) for s in seeds],
            "float": {f"mnist/{s}": 98.0 for s in seeds},
            "commands": [f"shard {seeds}"],
            "revisions": ["abc"],
            "wall_seconds": 10.0,
        }

    main, shard = payload([0]), payload([1, 2])
    assert accuracy.merge(main, shard, tmp_path / "shard.json") == 2
    assert accuracy.merge(main, shard, tmp_path / "shard.json") == 0
    assert [r["seed"] for r in main["runs"]] == [0, 1, 2]
    assert main["commands"] == ["shard [0]", "shard [1, 2]"]
    assert main["wall_seconds"] == 20.0

    with pytest.raises(SystemExit, match="rerun the shard"):
        accuracy.merge(main, {**shard, "settings": {"epochs": 2}}, tmp_path / "other.json")


def test_accuracy_merge_into_a_new_file_starts_from_the_first_shard(tmp_path: Path) -> None:
    """--merge into an --out that does not exist yet writes the shards' runs there; a missing
    shard or --report-only without the file is a clear error, not a traceback."""
    accuracy = _benchmark_module("accuracy")

    def shard(seed: int) -> Path:
        cell = {"dataset": "mnist", "seed": seed, "method": "lsq", "weight_bits": 2}
        path = tmp_path / f"shard{seed}.json"
        payload = {
            "settings": {"epochs": 1},
            "runs": [{**cell, "act_bits": 8, "status": "ok"}],
            "float": {},
            "commands": [f"shard {seed}"],
            "revisions": ["abc"],
            "wall_seconds": 1.0,
        }
        path.write_text(json.dumps(payload))
        return path

    out = tmp_path / "merged.json"
    payload, rest = accuracy.merge_base(out, [shard(0), shard(1)])
    assert [r["seed"] for r in payload["runs"]] == [0] and rest == [tmp_path / "shard1.json"]
    assert accuracy.merge(payload, json.loads(rest[0].read_text()), rest[0]) == 1

    with pytest.raises(SystemExit, match="no such file"):
        accuracy.merge_base(out, [tmp_path / "absent.json"])
    with pytest.raises(SystemExit, match="does not exist"):
        accuracy.main(["--report-only", "--out", str(out), "--no-report"])


def test_rounding_baseline_rounds_where_uniq_adds_noise() -> None:
    """The gradual straight-through baseline's current block is the quantizer with an identity
    gradient: its forward takes only the 2^b k-quantile levels, its gradient is all ones."""
    import torch
    from torch import nn

    from uniq_quant import quantized_layers

    base, uniq = _benchmark_module("methods.base"), _benchmark_module("methods.ours").uniq

    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    prepared = uniq(model, base.Job(2, 8, torch.randn(1, 1, 8, 8), steps=10), rounding=True)
    layer = next(layer for _, layer in quantized_layers(prepared.model.train()))
    out = layer.quantized_weight()
    out.sum().backward()
    assert out.unique().numel() == 4
    assert torch.equal(layer.weight.grad, torch.ones_like(layer.weight))


def test_mixed_bits_method_costs_no_more_than_the_uniform_bits() -> None:
    """UNIQ and LSQ mixed plan their layers' bits within the GBOPs of the job's uniform bits,
    LSQ from 2 bits up."""
    from functools import partial

    import torch
    from torch import nn

    from uniq_quant.nn import QuantLayerMixin

    base, ours = _benchmark_module("methods.base"), _benchmark_module("methods.ours")
    gbops_at, lsq, uniq_mixed = base.gbops_at, ours.lsq, ours.uniq_mixed

    def network() -> nn.Module:
        layers = [nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten()]
        return nn.Sequential(*layers, nn.Linear(8 * 4 * 4, 10))

    calibration = [torch.randn(16, 1, 8, 8) for _ in range(2)]
    job = base.Job(2, 8, torch.randn(1, 1, 8, 8), calibration, steps=10)
    for build, lowest in ((uniq_mixed, 1), (partial(lsq, mixed=True), 2)):
        prepared = build(network(), job)

        assert prepared.gbops() <= gbops_at(network(), job) * (1 + 1e-12)
        layers = [m for m in prepared.model.modules() if isinstance(m, QuantLayerMixin)]
        bits = [layer.weight_quantizer.bits for layer in layers]
        assert len(bits) == 3 and min(bits) >= lowest and lowest <= prepared.bits() <= 8


def test_accuracy_report_pairs_learned_with_fixed_levels_and_names_its_own_section() -> None:
    """The report pairs UNIQ learned levels with UNIQ gradual cell by cell (8-bit activations
    only), and ``--title`` gives a grid a section and a figure of its own, which its file keeps."""
    accuracy = _benchmark_module("accuracy")

    def cell(mean: float) -> dict:
        return {"mean": mean, "std": 0.1}

    summary = {
        ("mnist", 8, 2, "uniq"): cell(98.0),
        ("mnist", 8, 2, "uniq-learned"): cell(98.5),
        ("mnist", None, 2, "uniq"): cell(97.0),
        ("mnist", None, 2, "uniq-learned"): cell(99.0),
        ("mnist", 8, 4, "uniq-learned"): cell(98.9),
    }
    lines = accuracy.learned_against_fixed(summary)
    assert lines == [
        "- mnist W2A8: learned 98.50 ± 0.10, fixed 98.00 ± 0.10 (+0.50 points for learning the "
        "levels)"
    ]

    args = accuracy.parse_args(["--model", "resnet20", "--title", "Accuracy of resnet20: more"])
    payload: dict = {}
    assert accuracy.adopt_section(args, payload)
    assert accuracy.section_title("resnet20", args.title) == "Accuracy of resnet20: more"
    assert args.figure.name == "accuracy_vs_gbops-accuracy-of-resnet20-more.png"

    # the file remembers its section: a later report of it without --title writes the same one
    later = accuracy.parse_args(["--model", "resnet20", "--report-only"])
    assert not accuracy.adopt_section(later, payload)
    assert later.title == "Accuracy of resnet20: more" and later.figure == args.figure
    assert accuracy.section_title("resnet20") == (
        "Accuracy of resnet20: UNIQ against baselines and peers"
    )


def test_batchnorm_report_names_every_command_and_compares_with_a_final_phase() -> None:
    """A resumed grid's section lists each command with its commit, and pairs re-estimation
    without a final phase against the longest final phase with trained statistics."""
    batchnorm = _benchmark_module("batchnorm")

    def run(seed: int, fraction: float, trained: float, reestimated: float) -> dict:
        cell = {"model": "small_cnn", "dataset": "mnist", "seed": seed, "method": "uniq"}
        return {
            **cell,
            "weight_bits": 2,
            "final_fraction": fraction,
            "top1_trained": trained,
            "top1_reestimated": reestimated,
        }

    def provenance(command: str, revision: str) -> dict:
        return {"command": command, "revision": revision, "date": "d", "machine": "m", "threads": 1}

    payload = {
        "history": [provenance("first", "aaa"), provenance("second --resume", "bbb")],
        "out": "results/batchnorm.json",
        "act_bits": 8,
        "bn_batches": 50,
        "runs": [run(0, 0.0, 80.0, 90.0), run(0, 0.1, 91.0, 91.0)],
    }
    text = batchnorm.report(payload)
    assert "Commands, run in turn (code commit): `first` (aaa), `second --resume` (bbb)" in text
    assert "no final phase, re-estimated 90.00 ± 0.00" in text
    assert "trained statistics 91.00 ± 0.00 (-1.00 points)" in text

    old = {**payload, "provenance": payload["history"][0]}
    del old["history"]
    assert "Command (code commit): `first` (aaa)" in batchnorm.report(old)
