"""``uniq-quant train``: the run folder contract, resume after SIGKILL, DDP, recipes, bad input."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from uniq_quant.cli import main
from uniq_quant.data import build_datasets
from uniq_quant.mixed_precision import check_budget, gbops_range
from uniq_quant.models import build_model, model_recipe
from uniq_quant.train.settings import load_recipe, settings_from_dict

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))
CONTRACT = (
    "model",
    "dataset",
    "weight_bits",
    "act_bits",
    "fp_top1",
    "quant_top1",
    "gbops",
    "gbops_fp32",
    "size_bytes",
    "size_bytes_fp32",
    "train_seconds",
)
TINY = [
    "--dataset",
    "synthetic",
    "--model",
    "small_cnn",
    "--batch-size",
    "16",
    "--workers",
    "0",
    "--float-epochs",
    "1",
    "--stage-epochs",
    "1",
    "--final-epochs",
    "1",
    "--max-steps-per-epoch",
    "4",
]


def _check_contract(out: Path, epochs: int) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    assert all(key in summary for key in CONTRACT), sorted(summary)
    assert summary["epochs"] == epochs
    assert summary["size_bytes"] == (out / "model.safetensors").stat().st_size
    assert summary["gbops"] < summary["gbops_fp32"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == list(range(1, epochs + 1))
    for name in ("config.yaml", "checkpoint.pt", "float_model.pt", "training_curves.png"):
        assert (out / name).is_file(), name
    return summary


def test_train_writes_the_run_folder_contract(tmp_path: Path) -> None:
    """A tiny run writes config, metrics per epoch, checkpoint, export, figures and summary."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    summary = _check_contract(out, epochs=1 + 3 + 1)  # float, three layers, final phase
    assert summary["weight_bits"] == 4 and summary["act_bits"] == 8
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"] == "small_cnn" and saved["max_steps_per_epoch"] == 4


def test_rounding_with_learned_levels_runs_and_exports_the_levels_it_learned(
    tmp_path: Path,
) -> None:
    """--emulation rounding --learn-levels: the run finishes, the checkpoint holds moved levels,
    and the packed file stores levels + shift (what the checkpointed model decodes with)."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    flags = ["--emulation", "rounding", "--learn-levels", "--optimizer", "adamw"]
    assert main(["train", *TINY, *flags, "--out", str(out)]) == 0
    _check_contract(out, epochs=1 + 3 + 1)
    state = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    packed = load_file(out / "model.safetensors")
    shifts = {k: v for k, v in state.items() if k.endswith("level_shift")}
    assert len(shifts) == 3 and all(v.any() for v in shifts.values())
    for key, shift in shifts.items():
        levels = key.replace("level_shift", "levels")
        assert torch.equal(packed[levels], state[levels] + shift)


@pytest.mark.parametrize("batches", ["0", "3"])
def test_batchnorm_statistics_are_reestimated_once_every_layer_is_frozen(
    tmp_path: Path, batches: str
) -> None:
    """One noisy stage and no final phase: the exported statistics are the last checkpoint's
    (those of training with noise) with --bn-batches 0, re-estimated ones otherwise."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    flags = ["--num-stages", "1", "--final-epochs", "0", "--bn-batches", batches]
    assert main(["train", *TINY, *flags, "--out", str(out)]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    packed = load_file(out / "model.safetensors")
    keys = [k for k in state if k.endswith(("running_mean", "running_var"))]
    assert keys
    same = [torch.equal(packed[k], state[k]) for k in keys]
    assert all(same) if batches == "0" else not any(same)
    tracked = [k for k in state if k.endswith("num_batches_tracked")]
    assert all(int(packed[k]) == (int(state[k]) if batches == "0" else 3) for k in tracked)


def test_existing_run_folder_is_never_overwritten(tmp_path: Path) -> None:
    """A second run into a used folder exits 2 and leaves every file as it was."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["train", *TINY, "--out", str(out)]) == 2
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--model", "resnet1000"],
        ["--dataset", "imagenet22k"],
        ["--dataset", "cifar10", "--data", "/nonexistent/cifar"],
        ["--weight-bits", "12"],
        ["--act-bits", "1"],
        ["--override", "fc"],
        ["--lr", "-1"],
        ["--gbops-budget", "0"],
        ["--gbops-budget", "1e-6"],
        ["--bits-candidates", "2,9"],
        ["--bits-candidates", "two"],
        ["--emulation", "round"],
        ["--bn-batches", "-1"],
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, flags: list, caplog) -> None:
    """Unknown model or dataset, missing data, bad bits: a message, exit 2, no run folder."""
    out = tmp_path / "run"
    assert main(["train", *TINY, *flags, "--out", str(out)]) == 2
    assert not out.exists()
    assert caplog.records and caplog.records[-1].levelname == "ERROR"


def test_resume_with_different_settings_is_refused(tmp_path: Path) -> None:
    """--resume with other bits names the difference and changes nothing."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["train", *TINY, "--weight-bits", "2", "--out", str(out), "--resume"]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_gbops_budget_plans_each_layers_bits_and_a_resumed_run_keeps_the_plan(
    tmp_path: Path, caplog
) -> None:
    """--gbops-budget writes bits_plan.json, trains at those bits and stays within the budget."""
    out = tmp_path / "run"
    flags = [*TINY, "--gbops-budget", "0.07", "--bits-candidates", "2,4,8", "--out", str(out)]
    assert main(["train", *flags]) == 0
    summary = _check_contract(out, epochs=5)
    plan = json.loads((out / "bits_plan.json").read_text())
    planned = {layer["name"]: layer["bits"] for layer in plan["layers"]}
    assert summary["layer_bits"] == planned and set(planned.values()) <= {2, 4, 8}
    assert summary["gbops"] == pytest.approx(
        plan["fixed_gbops"] + sum(layer["gbops"] for layer in plan["layers"])
    )
    assert summary["gbops"] <= 0.07 and summary["gbops_budget"] == 0.07

    (out / "summary.json").unlink()
    caplog.set_level(logging.INFO, logger="uniq_quant")
    assert main(["train", *flags, "--resume"]) == 0
    assert "bits plan read from" in caplog.text
    assert json.loads((out / "summary.json").read_text())["layer_bits"] == planned

    (out / "bits_plan.json").write_text('{"layers": "damaged"}')
    assert main(["train", *flags, "--resume"]) == 2
    assert "is not a bits plan" in caplog.records[-1].getMessage()
    assert (out / "bits_plan.json").read_text() == '{"layers": "damaged"}'


def test_plan_prints_the_plan_train_would_make_without_training(tmp_path: Path, capsys) -> None:
    """``uniq-quant plan`` takes train's flags, prints the table or JSON and writes nothing."""
    flags = ["--dataset", "synthetic", "--gbops-budget", "0.07", "--bits-candidates", "2,4,8"]
    assert main(["plan", *flags, "--out", str(tmp_path / "run")]) == 0
    table = capsys.readouterr().out
    assert "features.2.0" in table and "of a 0.0700 budget" in table

    assert main(["plan", *flags, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["budget_gbops"] == 0.07 and len(plan["layers"]) == 3
    assert {layer["bits"] for layer in plan["layers"]} <= {2, 4, 8}
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [([], "pass --gbops-budget"), (["--gbops-budget", "1e-6"], "below the cheapest plan")],
)
def test_plan_without_a_feasible_budget_exits_2(flags: list, message: str, caplog) -> None:
    assert main(["plan", "--dataset", "synthetic", *flags]) == 2
    assert message in caplog.records[-1].getMessage()


def test_resume_without_a_run_is_refused(tmp_path: Path) -> None:
    """--resume of a folder with no checkpoint exits 2."""
    assert main(["train", *TINY, "--out", str(tmp_path / "none"), "--resume"]) == 2


def test_config_file_supplies_defaults_that_flags_override(tmp_path: Path) -> None:
    """Values come from the YAML recipe unless a flag says otherwise; '-' and '_' alike."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("weight-bits: 3\nact_bits: float\nmodel: lenet5\n")
    out = tmp_path / "run"
    assert (
        main(["train", *TINY, "--config", str(recipe), "--weight-bits", "2", "--out", str(out)])
        == 0
    )
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["weight_bits"], saved["act_bits"], saved["model"]) == (2, None, "small_cnn")


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "uniq_quant", "train", *args]


def test_sigkill_mid_epoch_then_resume_finishes_the_run(tmp_path: Path) -> None:
    """A run killed with SIGKILL inside an epoch resumes and ends with all its epochs."""
    out = tmp_path / "run"
    flags = [
        "--dataset",
        "synthetic",
        "--model",
        "resnet20",
        "--batch-size",
        "32",
        "--workers",
        "0",
        "--float-epochs",
        "2",
        "--num-stages",
        "2",
        "--stage-epochs",
        "1",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(_command(*flags), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first_epoch = json.loads(metrics.read_text().splitlines()[0])["seconds"]
    time.sleep(first_epoch / 2)  # half-way through the second epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    finished = metrics.read_text().count("\n")
    assert finished < 4 and not (out / "summary.json").exists()

    resumed = subprocess.run(_command(*flags, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    _check_contract(out, epochs=4)


@pytest.mark.parametrize("recipe", [p for p in RECIPES if "gbops_budget" in p.read_text()])
def test_a_recipes_gbops_budget_fits_its_model_on_its_images(recipe: Path) -> None:
    """A budget recipe's plan is feasible for its model at its dataset's image size."""
    settings = settings_from_dict(load_recipe(recipe))
    _, _, info = build_datasets(settings.dataset, None)
    model = build_model(**model_recipe(settings.model, info.num_classes, info.in_channels))
    example = torch.zeros(1, info.in_channels, *info.image_size)
    config = settings.quant_config()
    check_budget(model, config, example, settings.gbops_budget, settings.candidate_bits())
    _, dearest = gbops_range(model, config, example, settings.candidate_bits())
    assert settings.gbops_budget < dearest


def _torchrun_train(out: Path, *options: str) -> dict:
    """``uniq-quant train`` on TINY under torchrun with 2 gloo processes; its summary."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(29500 + (os.getpid() + len(options)) % 1000),
        "-m",
        "uniq_quant",
        "train",
        *TINY,
        *options,
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _check_contract(out, epochs=5)
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    return summary


def test_ddp_two_cpu_processes_keep_weights_identical(tmp_path: Path) -> None:
    """torchrun with 2 gloo processes: ranks end bit-identical and the contract holds; the bits
    plan of a GBOPs budget, made on rank 0, reaches both ranks."""
    out = tmp_path / "ddp"
    summary = _torchrun_train(out, "--gbops-budget", "0.07")
    plan = json.loads((out / "bits_plan.json").read_text())
    assert summary["layer_bits"] == {layer["name"]: layer["bits"] for layer in plan["layers"]}


def test_ddp_trains_learned_levels_under_rounding_in_sync(tmp_path: Path) -> None:
    """Under DDP, rounding stages and learned levels (a Parameter unused until its layer
    freezes) train: ranks end bit-identical, level shifts included, and every shift moved."""
    out = tmp_path / "ddp"
    _torchrun_train(out, "--learn-levels", "--emulation", "rounding")
    state = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    shifts = {k: v for k, v in state.items() if k.endswith("level_shift")}
    assert len(shifts) == 3 and all(v.abs().sum() > 0 for v in shifts.values())


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_loads_and_runs_a_few_steps(recipe: Path, tmp_path: Path) -> None:
    """Each recipe resolves, then runs two steps per epoch on small synthetic images."""
    settings = settings_from_dict(load_recipe(recipe))
    assert settings.weight_bits in (2, 3, 4, 5)
    small = [
        "--dataset",
        "synthetic",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--max-steps-per-epoch",
        "2",
        "--max-eval-batches",
        "2",
        "--init",
        "none",
        "--num-stages",
        "2",
        "--stage-steps",
        "2",
        "--final-epochs",
        "0",
        "--float-epochs",
        "0",
        "--gbops-budget",
        "none",  # a budget is for the recipe's own images: checked below
    ]
    out = tmp_path / "run"
    assert main(["train", "--config", str(recipe), *small, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == settings.model and summary["weight_bits"] == settings.weight_bits


def test_demo_prints_the_result_table(tmp_path: Path, monkeypatch, capsys) -> None:
    """The demo trains its recipe on bundled MNIST and ends with the comparison table."""
    from uniq_quant.commands import demo

    quick = {**demo.DEMO_RECIPE, "max_steps_per_epoch": 30, "stage_steps": 10}
    quick["max_eval_batches"] = 5
    monkeypatch.setattr(demo, "DEMO_RECIPE", quick)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    for part in ("top-1 (%)", "GBOPs", "file (bytes)", "UNIQ W4A8", f"run folder: {out}"):
        assert part in table
    summary = _check_contract(out, epochs=2)
    assert summary["dataset"] == "mnist" and summary["size_bytes"] < summary["size_bytes_fp32"]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile's CPU backend needs a C++ compiler",
)
def test_compiled_training_runs_every_stage_compiled(tmp_path: Path, monkeypatch) -> None:
    """--compile trains through torch.compile: the float phase, each of the three noisy stages
    and the final phase is its own graph, and none falls back to eager even under a
    recompilation limit set below their number (the run raises it)."""
    import torch

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    out = tmp_path / "run"
    assert main(["train", *TINY, "--compile", "--out", str(out)]) == 0
    _check_contract(out, epochs=1 + 3 + 1)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1 + 3 + 1
