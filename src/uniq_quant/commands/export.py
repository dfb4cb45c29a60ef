"""``uniq-quant export``: ship a trained run's quantized model as a packed file or as ONNX.

uniq-quant export runs/mnist --format onnx                    # -> runs/mnist/model.onnx
uniq-quant export model.safetensors --format onnx --out m.onnx
uniq-quant export runs/mnist --format packed --out mnist-w4.safetensors

RUN_OR_FILE is a packed file written by ``save_quantized`` or a run folder holding one as
``model.safetensors`` (what ``uniq-quant train`` writes to its --out folder). The file is read
with every integrity check (format, version, checksum, architecture) before anything is written.
``--format packed`` writes a verified copy; ``--format onnx`` converts it, with the input shape
stored in the file (or in its recipe, or given by --input-shape). The output defaults to the
input's folder and stem with the format's suffix, and is never overwritten without --force.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from torch import nn

from uniq_quant.config import QuantConfig
from uniq_quant.export import export_onnx, load_quantized, read_metadata, save_quantized
from uniq_quant.export.format import CODES, LEVELS

logger = logging.getLogger(__name__)

EXIT_USAGE = 2  # the exit code argparse uses for bad arguments
RUN_FILE = "model.safetensors"  # the packed model inside a run folder
FORMATS = ("packed", "onnx")
_SUFFIXES = {"packed": ".packed.safetensors", "onnx": ".onnx"}
_FLOAT32_BYTES = 4


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "export",
        help="write a run's quantized model as a packed file or as ONNX",
        description="Check a packed model (from a run folder or a file) and write it as a "
        "verified packed copy or as ONNX with the weights kept as codes and levels.",
    )
    parser.add_argument(
        "source",
        metavar="RUN_OR_FILE",
        help=f"a packed .safetensors file or a run folder holding {RUN_FILE}",
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="output format")
    parser.add_argument(
        "--out", type=Path, help="output file (default: next to the input, suffix per format)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.add_argument(
        "--input-shape",
        type=_shape,
        help="C,H,W of one input for ONNX, when the file stores none (e.g. 3,224,224)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Read, check and write the model; returns the exit code (2 on bad input)."""
    try:
        source = _packed_file(Path(args.source))
        out = args.out or source.with_name(source.name.removesuffix(".safetensors"))
        out = out if args.out else out.with_name(out.name + _SUFFIXES[args.format])
        if out.exists() and not args.force:
            raise ValueError(f"{out} exists; pass --force to overwrite it or choose --out")
        if out.resolve() == source.resolve():
            raise ValueError(f"--out {out} is the input file itself; choose another path")
        metadata = read_metadata(source)
        model = load_quantized(source)
        if args.format == "onnx":
            shape = args.input_shape or _stored_shape(metadata, source)
            export_onnx(model, out, torch.zeros(1, *shape))
        else:
            config = metadata["config"]
            save_quantized(
                model,
                out,
                recipe=metadata["recipe"],
                config=None if config is None else QuantConfig.from_dict(config),
                input_shape=metadata["input_shape"],
            )
    except (FileNotFoundError, ValueError, ImportError) as error:
        logger.error("%s", error)
        return EXIT_USAGE
    size, float_size = out.stat().st_size, _float_bytes(model)
    sys.stdout.write(
        f"wrote {out} ({args.format}, {size} bytes; float32 {float_size} bytes, "
        f"{float_size / size:.1f}x smaller)\n"
    )
    return 0


def _packed_file(path: Path) -> Path:
    """The packed file named by RUN_OR_FILE, or ValueError / FileNotFoundError."""
    if path.is_dir():
        if not (path / RUN_FILE).is_file():
            raise FileNotFoundError(
                f"run folder {path} holds no {RUN_FILE}; give the packed file itself, or the "
                "--out folder of a finished `uniq-quant train` run"
            )
        return path / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is neither a packed file nor a run folder")
    return path


def _stored_shape(metadata: dict, source: Path) -> tuple[int, ...]:
    """The input shape stored in the file or implied by its recipe, or ValueError."""
    if metadata.get("input_shape"):
        return tuple(metadata["input_shape"])
    recipe = metadata.get("recipe") or {}
    if recipe.get("image_size") and recipe.get("in_channels"):
        return (recipe["in_channels"], recipe["image_size"], recipe["image_size"])
    raise ValueError(f"{source} stores no input shape; pass --input-shape C,H,W (e.g. 3,224,224)")


def _float_bytes(model: nn.Module) -> int:
    """Bytes of the model's state_dict with every weight in float32 and no codes or levels."""
    state = model.state_dict()
    return sum(
        t.numel() * (_FLOAT32_BYTES if t.is_floating_point() else t.element_size())
        for k, t in state.items()
        if not k.endswith((CODES, LEVELS))
    )


def _shape(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated positive integers, e.g. ``3,224,224``."""
    parts = text.split(",")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected positive integers like 3,224,224, got {text!r}")
    return tuple(int(p) for p in parts)
