"""``uniq-quant eval`` and ``uniq-quant plot`` on a real tiny run: numbers, kinds, bad input."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from uniq_quant import QuantConfig, calibrate, convert, prepare
from uniq_quant.cli import main
from uniq_quant.export import save_quantized
from uniq_quant.models import build_model, model_recipe

EVAL_BATCHES = 2  # the run's --max-eval-batches: its summary was measured on these batches
BATCH = 16
# the run's validation batches, evaluated again in one process on the CPU
SAME_BATCHES = ["--batch-size", str(BATCH), "--max-batches", str(EVAL_BATCHES), "--workers", "0"]
SYNTHETIC_SHAPE = (3, 32, 32)  # the synthetic data set's default image


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny training run (about ten seconds on two CPU cores)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    argv = [
        "train",
        "--dataset",
        "synthetic",
        "--model",
        "small_cnn",
        "--batch-size",
        str(BATCH),
        "--workers",
        "0",
        "--float-epochs",
        "1",
        "--stage-epochs",
        "1",
        "--max-steps-per-epoch",
        "3",
        "--max-eval-batches",
        str(EVAL_BATCHES),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    return out


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _eval_json(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert main(["eval", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


# -- eval ----------------------------------------------------------------------------------


def test_eval_of_a_run_reproduces_its_quantized_accuracy(run_dir, capsys) -> None:
    """On the run's own evaluation batches, eval gives summary.json's quant_top1 exactly."""
    summary = _summary(run_dir)
    result = _eval_json(capsys, str(run_dir), "--max-batches", str(EVAL_BATCHES))
    assert result["kind"] == "run" and result["target"] == str(run_dir)
    assert result["images"] == EVAL_BATCHES * BATCH
    assert (result["top1"], result["top5"]) == (summary["quant_top1"], summary["quant_top5"])


def test_eval_float_of_a_run_reproduces_its_float_accuracy(run_dir, capsys) -> None:
    """``--float`` evaluates float_model.pt and gives summary.json's fp_top1 exactly."""
    summary = _summary(run_dir)
    result = _eval_json(capsys, str(run_dir), "--float", "--max-batches", str(EVAL_BATCHES))
    assert result["kind"] == "run-float"
    assert (result["top1"], result["top5"]) == (summary["fp_top1"], summary["fp_top5"])


def test_eval_of_the_packed_file_matches_the_run(run_dir, capsys) -> None:
    """The exported file alone, given the data set, scores what the run folder scores."""
    packed = str(run_dir / "model.safetensors")
    result = _eval_json(capsys, packed, "--dataset", "synthetic", *SAME_BATCHES)
    assert result["kind"] == "packed"
    assert result["top1"] == _summary(run_dir)["quant_top1"]


def test_eval_of_a_float_checkpoint_prints_one_line(run_dir, capsys) -> None:
    """A .pt with --model and --dataset prints the short line with fp_top1's value."""
    checkpoint = str(run_dir / "float_model.pt")
    argv = ["eval", checkpoint, "--model", "small_cnn", "--dataset", "synthetic", *SAME_BATCHES]
    assert main(argv) == 0
    line = capsys.readouterr().out
    pattern = r"top-1 (\d+\.\d\d)%  top-5 \d+\.\d\d%  \((\d+) images, (.+)\)\n"
    match = re.fullmatch(pattern, line)
    assert match, line
    assert match[1] == f"{_summary(run_dir)['fp_top1']:.2f}"
    assert (int(match[2]), match[3]) == (EVAL_BATCHES * BATCH, checkpoint)


def _packed_with_classes(path: Path, num_classes: int) -> Path:
    """A converted small_cnn for ``num_classes`` classes saved as a packed file."""
    recipe = model_recipe("small_cnn", num_classes, SYNTHETIC_SHAPE[0], SYNTHETIC_SHAPE[1])
    model = build_model(**recipe)
    prepare(model, QuantConfig(weight_bits=4, act_bits=8), torch.randn(1, *SYNTHETIC_SHAPE))
    calibrate(model, [torch.randn(4, *SYNTHETIC_SHAPE)])
    convert(model)
    return save_quantized(model, path, recipe=recipe)


def _bad_eval_inputs(run_dir: Path, tmp: Path) -> dict[str, list[str]]:
    """Arguments of eval that must be refused, by what is wrong with them."""
    (tmp / "empty").mkdir()
    seven = build_model("small_cnn", num_classes=7, in_channels=SYNTHETIC_SHAPE[0])
    torch.save(seven.state_dict(), tmp / "seven.pt")
    (tmp / "junk.pt").write_bytes(b"not a checkpoint")
    float_pt = str(run_dir / "float_model.pt")
    seven_packed = str(_packed_with_classes(tmp / "seven.safetensors", 7))
    synthetic = ["--dataset", "synthetic"]
    return {
        "missing target": [str(tmp / "nothing-here")],
        "folder without model.safetensors": [str(tmp / "empty")],
        "float checkpoint without --model": [float_pt, *synthetic],
        "packed file without --dataset": [str(run_dir / "model.safetensors")],
        "unknown dataset": [str(run_dir), "--dataset", "cifar7"],
        "unknown model": [float_pt, "--model", "no_such_net", *synthetic],
        "float checkpoint with 7 classes": [
            str(tmp / "seven.pt"),
            "--model",
            "small_cnn",
            *synthetic,
        ],
        "packed file with 7 classes": [seven_packed, *synthetic],
        "grayscale data for an RGB model": [str(run_dir), "--dataset", "digits"],
        "damaged checkpoint": [str(tmp / "junk.pt"), "--model", "small_cnn", *synthetic],
        "--float on a file": [str(run_dir / "model.safetensors"), "--float", *synthetic],
        "unknown suffix": [str(run_dir / "config.yaml"), *synthetic],
    }


def test_eval_refuses_bad_input_with_exit_2_and_writes_nothing(
    run_dir, tmp_path, capsys, caplog, monkeypatch
) -> None:
    """Each bad input exits 2 with an error line, prints no result and writes no file."""
    cases = _bad_eval_inputs(run_dir, tmp_path)
    monkeypatch.chdir(tmp_path)
    before = (_files(run_dir), _files(tmp_path))
    for what, argv in cases.items():
        caplog.clear()
        assert main(["eval", *argv, "--workers", "0"]) == 2, what
        assert capsys.readouterr().out == "", what
        assert any(r.levelname == "ERROR" for r in caplog.records), what
    assert (_files(run_dir), _files(tmp_path)) == before


# -- plot ----------------------------------------------------------------------------------


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _second_run(run_dir: Path, folder: Path) -> Path:
    """A copy of the run posing as a W2, float-activation run of other cost and accuracy."""
    shutil.copytree(run_dir, folder)
    summary = _summary(folder)
    summary.update(weight_bits=2, act_bits=None, gbops=summary["gbops"] / 2, quant_top1=50.0)
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_plot_redraws_curves_in_the_run_and_compares_here(run_dir, tmp_path, monkeypatch, capsys):
    """Without --out: curves into the run folder, the comparison into the current folder."""
    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(run_dir)]) == 0
    written = [Path(p) for p in capsys.readouterr().out.splitlines()]
    assert written == [run_dir / "training_curves.png", Path("accuracy_vs_gbops.png")]
    assert all(_is_png(p) for p in written)


def test_plot_of_two_runs_with_peers_into_out(run_dir, tmp_path, capsys) -> None:
    """Two runs and a peers CSV: one curve figure per run and one comparison, all in --out."""
    other = _second_run(run_dir, tmp_path / "w2")
    peers = tmp_path / "peers.csv"
    peers.write_text("label,gbops,top1\nPeer W4A8,0.09,66.0\nPeer W2A2,0.03,55.0\n")
    out = tmp_path / "figures"
    assert main(["plot", str(run_dir), str(other), "--out", str(out), "--peers", str(peers)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "accuracy_vs_gbops.png",
        "tiny-training_curves.png",
        "w2-training_curves.png",
    ]
    assert all(_is_png(out / name) for name in written)
    assert capsys.readouterr().out.count("\n") == 3


def test_plot_keeps_an_existing_comparison_unless_forced(run_dir, tmp_path, monkeypatch) -> None:
    """A second plot into the same folder exits 2 and leaves the file; --force replaces it."""
    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(run_dir)]) == 0
    figure = tmp_path / "accuracy_vs_gbops.png"
    stamp = figure.stat().st_mtime_ns
    assert main(["plot", str(run_dir)]) == 2
    assert figure.stat().st_mtime_ns == stamp
    assert main(["plot", str(run_dir), "--force"]) == 0


def test_plot_refuses_bad_input_with_exit_2(run_dir, tmp_path, monkeypatch, capsys) -> None:
    """A folder without summary.json, or a peers CSV without its columns, writes nothing."""
    (tmp_path / "not-a-run").mkdir()
    bad_peers = tmp_path / "peers.csv"
    bad_peers.write_text("name,cost\nx,1\n")
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)
    assert main(["plot", str(run_dir), str(tmp_path / "not-a-run")]) == 2
    assert main(["plot", str(run_dir), "--peers", str(bad_peers)]) == 2
    assert main(["plot", str(run_dir), "--peers", str(tmp_path / "absent.csv")]) == 2
    assert _files(tmp_path) == before and capsys.readouterr().out == ""


@pytest.mark.parametrize("command", ["eval", "plot"])
def test_help_renders(command: str, capsys) -> None:
    """``--help`` prints the usage and exits 0 (help strings are %-formatted by argparse)."""
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: uniq-quant {command}")
