"""``uniq-quant eval``: top-1 and top-5 of a run, a packed file or a float checkpoint.

uniq-quant eval runs/mnist                        # the run's quantized model on its data set
uniq-quant eval runs/mnist --float                # the run's float model (float_model.pt)
uniq-quant eval mnist-w4.safetensors --dataset mnist
uniq-quant eval resnet18.pth --model tv:resnet18 --dataset imagenet --data /data/imagenet

TARGET is one of:
* a run folder of ``uniq-quant train`` (model.safetensors, config.yaml): the data set, its
  folder, the image size, the batch size, the loader workers and mixed precision default to
  the run's settings, so that for a run trained in one process on the same kind of device,
  ``--max-batches`` equal to its --max-eval-batches gives its summary.json accuracy exactly;
* a packed .safetensors file written by ``save_quantized``: needs --dataset (and --data for a
  data set read from a folder); --model builds the architecture when the file stores no recipe;
* a float checkpoint (.pt or .pth; torchvision, nested and DDP-prefixed state_dicts): needs
  --model and --dataset.
The model is evaluated on the validation split, in order, in one process. The model is first
run on one validation image, so a model made for another data set (other classes, channels or
sizes) is refused with exit code 2 before the pass. Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from uniq_quant.data import DATASETS, DatasetInfo, build_datasets, build_loaders
from uniq_quant.models import check_model_name
from uniq_quant.train.distributed import Process
from uniq_quant.train.engine import evaluate
from uniq_quant.train.run import CONFIG, FLOAT_MODEL, QUANT_MODEL
from uniq_quant.train.settings import DEVICES, TrainSettings, settings_from_dict

logger = logging.getLogger(__name__)

EXIT_USAGE = 2  # the exit code argparse uses for bad arguments
KINDS = ("run", "run-float", "packed", "float")  # what TARGET held, as reported by --json
PACKED_SUFFIX = ".safetensors"
FLOAT_SUFFIXES = (".pt", ".pth")
DEFAULT_BATCH_SIZE = 128  # train's default; a run folder's own batch size takes precedence
DEFAULT_WORKERS = 2  # likewise


@dataclass(frozen=True)
class Target:
    """What TARGET names: its ``kind`` (one of KINDS), the model file and the run's settings."""

    kind: str
    file: Path
    settings: TrainSettings | None = None


@dataclass(frozen=True)
class EvalSettings:
    """The flags merged with the run's settings (the flags win)."""

    dataset: str
    data: str | None
    model: str | None
    image_size: int | None
    batch_size: int
    workers: int
    amp: bool


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "eval",
        help="measure top-1 and top-5 of a run, a packed file or a float checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="TARGET", help="run folder, .safetensors, .pt or .pth")
    parser.add_argument(
        "--float", action="store_true", help="evaluate a run folder's float_model.pt instead"
    )
    parser.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default: the run's)")
    parser.add_argument("--data", help="dataset folder (default: the run's)")
    parser.add_argument("--model", help="architecture of a float checkpoint (our name or tv:NAME)")
    parser.add_argument("--image-size", type=_positive, help="image side (default: the run's)")
    parser.add_argument("--batch-size", type=_positive, help="images per batch (default: run's)")
    parser.add_argument("--workers", type=_non_negative, help="data loader worker processes")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="default: auto")
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bfloat16 autocast on a GPU (default: the run's setting, else off)",
    )
    parser.add_argument("--max-batches", type=_positive, help="evaluate only the first batches")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load the model and its validation data, evaluate and print; returns the exit code."""
    try:
        target = find_target(Path(args.target), args.float)
        settings = eval_settings(args, target)
        process = _single_process(args.device)
        _, val_set, info = build_datasets(
            settings.dataset, settings.data, image_size=settings.image_size, train=False
        )
        model = load_model(target, settings, info).to(process.device)
        _check_fits(model, val_set, info, target, process)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as error:
        logger.error("%s", error)
        logger.debug("details", exc_info=True)
        return EXIT_USAGE

    # the validation split in order, batched as in training, so a run's numbers come back
    _, loader = build_loaders(val_set, val_set, settings.batch_size, settings.workers)
    images = len(val_set)
    if args.max_batches is not None:
        images = min(images, args.max_batches * settings.batch_size)
    bar = _progress(images, settings.batch_size)
    batches = loader if bar is None else _counted(loader, bar)
    top1, top5 = evaluate(model, batches, process, settings.amp, args.max_batches)
    if bar is not None:
        bar.close()

    result = {
        "top1": top1,
        "top5": top5,
        "images": images,
        "target": args.target,
        "kind": target.kind,
        "dataset": settings.dataset,
    }
    if args.json:
        text = json.dumps(result, indent=2)
    else:
        text = f"top-1 {top1:.2f}%  top-5 {top5:.2f}%  ({images} images, {args.target})"
    sys.stdout.write(text + "\n")
    return 0


def find_target(path: Path, use_float: bool) -> Target:
    """Tell what ``path`` holds, from the files of a folder or a file's suffix.

    Raises:
        FileNotFoundError: ``path`` or a file the run folder needs does not exist.
        ValueError: ``--float`` without a run folder, or a suffix that names no known kind.
    """
    if path.is_dir():
        settings = _run_settings(path)
        file = path / (FLOAT_MODEL if use_float else QUANT_MODEL)
        if not file.is_file():
            raise FileNotFoundError(
                f"run folder {path} holds no {file.name}; give the --out folder of a finished "
                "`uniq-quant train` run, a packed .safetensors file or a float .pt checkpoint"
            )
        return Target("run-float" if use_float else "run", file, settings)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; give a run folder, a packed .safetensors file or a float "
            ".pt / .pth checkpoint"
        )
    if use_float:
        raise ValueError(
            f"--float applies to run folders only (their {FLOAT_MODEL}); {path} is a file: "
            "drop --float, and give --model and --dataset for a float checkpoint"
        )
    suffix = path.suffix.lower()
    if suffix == PACKED_SUFFIX:
        return Target("packed", path)
    if suffix in FLOAT_SUFFIXES:
        return Target("float", path)
    raise ValueError(
        f"cannot tell what {path} holds from its suffix {suffix!r}: a packed model ends in "
        f"{PACKED_SUFFIX} and a float checkpoint in {' or '.join(FLOAT_SUFFIXES)}"
    )


def eval_settings(args: argparse.Namespace, target: Target) -> EvalSettings:
    """The flags, with the run's settings where a flag is not given.

    Raises:
        ValueError: --dataset is needed and not given, or --model for a float checkpoint.
    """
    run = target.settings
    dataset = args.dataset or (run.dataset if run else None)
    model = args.model or (run.model if run else None)
    what = _describe(target)
    if dataset is None:
        raise ValueError(
            f"--dataset is needed to evaluate {what}; choose one of {', '.join(DATASETS)}"
        )
    if model is None and target.kind in ("float", "run-float"):
        raise ValueError(
            f"--model is needed to evaluate {what}: the name of its architecture, ours or "
            "tv:NAME (e.g. --model small_cnn or --model tv:resnet18)"
        )
    if model is not None:
        check_model_name(model)
    same_data = run is not None and dataset == run.dataset  # the run's folder serves it
    return EvalSettings(
        dataset=dataset,
        data=args.data or (run.data if same_data else None),
        model=model,
        image_size=args.image_size or (run.image_size if run else None),
        batch_size=args.batch_size or (run.batch_size if run else DEFAULT_BATCH_SIZE),
        workers=_first(args.workers, run.workers if run else None, DEFAULT_WORKERS),
        amp=_first(args.amp, run.amp if run else None, False),
    )


def load_model(target: Target, settings: EvalSettings, info: DatasetInfo) -> nn.Module:
    """The model TARGET holds, on the CPU, in eval mode.

    Raises:
        ValueError: the file is not a model of the expected kind, or does not fit the
            architecture built for it (e.g. another number of classes).
    """
    from uniq_quant.export import load_quantized
    from uniq_quant.models import build_model, load_float_checkpoint

    def architecture() -> nn.Module:
        return build_model(settings.model, info.num_classes, info.in_channels, settings.image_size)

    if target.kind == "run" or (target.kind == "packed" and settings.model is None):
        return load_quantized(target.file)
    if target.kind == "packed":
        return load_quantized(target.file, architecture())
    model = architecture()
    load_float_checkpoint(model, _read_checkpoint(target.file))
    return model.eval()


def _first(*values: object) -> object:
    """The first value that is not None (False and 0 count as given)."""
    return next(v for v in values if v is not None)


def _run_settings(folder: Path) -> TrainSettings | None:
    """The settings in a run folder's config.yaml, or None when it has none."""
    path = folder / CONFIG
    if not path.is_file():
        return None
    try:
        return settings_from_dict(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, ValueError, TypeError) as error:
        raise ValueError(
            f"{path} is not the config.yaml of a `uniq-quant train` run ({error}); "
            "repair it, or give --dataset and evaluate the model file itself"
        ) from None


def _read_checkpoint(path: Path) -> object:
    """``torch.load`` with ``weights_only=True`` (no code runs), or a ValueError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged pickle fails with any type of error
        raise ValueError(
            f"{path} is not a checkpoint that torch.load(weights_only=True) reads "
            f"({type(error).__name__}; a damaged file or a pickled whole model): "
            "save the model's state_dict with torch.save(model.state_dict(), path)"
        ) from None


@torch.no_grad()
def _check_fits(
    model: nn.Module, val_set: Dataset, info: DatasetInfo, target: Target, process: Process
) -> None:
    """Run one validation image through ``model``; ValueError unless it gives one logit a class."""
    image = val_set[0][0][None].to(process.device)  # (1, C, H, W)
    hint = "evaluate it on the data set it was trained for (--dataset, --image-size)"
    try:
        logits = model.eval()(image)
    except RuntimeError as error:
        raise ValueError(
            f"{_describe(target)} cannot read {info.name} images of shape "
            f"{tuple(image.shape[1:])} ({error}); {hint}"
        ) from None
    if logits.dim() != 2 or logits.shape[1] != info.num_classes:
        outputs = logits.shape[1] if logits.dim() == 2 else f"outputs of shape {logits.shape}"
        raise ValueError(
            f"{_describe(target)} gives {outputs} logits per image but {info.name} has "
            f"{info.num_classes} classes; {hint}"
        )


def _describe(target: Target) -> str:
    """A few words naming TARGET in an error message."""
    if target.kind == "packed":
        return f"the packed file {target.file}"
    if target.kind == "float":
        return f"the float checkpoint {target.file}"
    folder = target.file.parent
    if target.settings is None:
        return f"run folder {folder}, which holds no {CONFIG},"
    return f"the {'float' if target.kind == 'run-float' else 'quantized'} model of {folder}"


def _single_process(device: str) -> Process:
    """A one-process Process on ``device`` (auto: CUDA when available)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available; use auto")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return Process(0, 1, torch.device("cuda" if use_cuda else "cpu"))


def _progress(images: int, batch_size: int) -> tqdm | None:
    """A progress bar over the batches when stderr is a terminal, else None."""
    if not sys.stderr.isatty():
        return None
    batches = -(-images // batch_size)  # ceil
    return tqdm(total=batches, desc="eval", leave=False, dynamic_ncols=True)


def _counted(loader: Iterable, bar: tqdm) -> Iterator:
    """The loader's batches, each counted on ``bar`` as it is taken."""
    for batch in loader:
        yield batch
        bar.update(1)


def _positive(text: str) -> int:
    """argparse type: a positive integer."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _non_negative(text: str) -> int:
    """argparse type: an integer >= 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)
