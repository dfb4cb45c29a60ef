"""Helpers shared by the benchmark scripts: data in memory, a training loop, results files.

The benchmarks train on whole data sets held as one normalized float tensor and draw batches by
index, which on a small CPU is several times faster than a per-item DataLoader; every method
sees the same batches in the same order for a given seed (``batch_indices``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from uniq_quant.data import build_datasets
from uniq_quant.train.engine import build_lr_schedule, build_optimizer

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
RESULTS_HEADER = "# Benchmark results\n"
EVAL_BATCH = 1000  # images per evaluation forward pass


@dataclass(frozen=True)
class Split:
    """One split of a data set in memory: normalized images (N, C, H, W) and labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Data:
    """Train and test splits of a data set, and the shape of one image (C, H, W)."""

    name: str
    train: Split
    test: Split
    num_classes: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])


def load_data(name: str) -> Data:
    """The data set ``name`` (``mnist`` or ``fashion-mnist``) as normalized tensors."""
    train, test, info = build_datasets(name)
    return Data(name, _as_split(train), _as_split(test), info.num_classes)


def _as_split(dataset) -> Split:
    """Normalize an ArrayDataset's uint8 images all at once, as its __getitem__ does per item."""
    images = (dataset.images.float() * dataset.scale - dataset.mean) / dataset.std
    return Split(images.contiguous(), dataset.labels.clone())


def batch_indices(size: int, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """``steps`` batches of indices: seeded shuffles of range(size), one per epoch, no partial."""
    per_epoch = max(1, size // batch_size)
    for step in range(steps):
        epoch, position = divmod(step, per_epoch)
        if position == 0:
            order = torch.randperm(
                size, generator=torch.Generator().manual_seed(seed * 1000 + epoch)
            )
        yield order[position * batch_size : (position + 1) * batch_size]


def steps_per_epoch(data: Data, batch_size: int) -> int:
    return max(1, len(data.train) // batch_size)


@dataclass(frozen=True)
class TrainSettings:
    """The optimizer and data settings every method is fine-tuned with."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0


def make_optimizer(
    model: nn.Module, settings: TrainSettings
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (weight decay only on weights of two or more dimensions) with a cosine decay."""
    optimizer = build_optimizer(model, "adamw", settings.lr, 0.9, settings.weight_decay)
    return optimizer, schedule_for(optimizer, settings)


def schedule_for(
    optimizer: torch.optim.Optimizer, settings: TrainSettings
) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay to zero over the run, no warm-up, over every parameter group."""
    return build_lr_schedule(optimizer, "cosine", settings.steps, 0)


def train_steps(
    model: nn.Module,
    split: Split,
    optimizer: torch.optim.Optimizer,
    lr_schedule: torch.optim.lr_scheduler.LRScheduler,
    settings: TrainSettings,
    seed: int,
    penalty: Callable[[], torch.Tensor] | None = None,
    after_step: Callable[[], object] | None = None,
) -> float:
    """Train ``settings.steps`` batches with cross-entropy (+ ``penalty()``); returns the loss."""
    model.train()
    loss = torch.zeros(())
    for idx in batch_indices(len(split), settings.batch_size, settings.steps, seed):
        logits = model(split.images[idx])
        loss = F.cross_entropy(logits, split.labels[idx])
        if penalty is not None:
            loss = loss + penalty()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_schedule.step()
        if after_step is not None:
            after_step()
    return float(loss.detach())


@torch.no_grad()
def evaluate(model: nn.Module, split: Split) -> float:
    """Top-1 accuracy in percent over the whole split, in eval mode."""
    model.eval()
    correct = 0
    for start in range(0, len(split), EVAL_BATCH):
        logits = model(split.images[start : start + EVAL_BATCH])
        correct += int((logits.argmax(1) == split.labels[start : start + EVAL_BATCH]).sum())
    return 100.0 * correct / len(split)


def machine() -> str:
    """``uname -m``, ``nproc``, Python and torch versions, in one line."""
    cpus = _command(["nproc"]) or str(os.cpu_count())
    return (
        f"{platform.machine()}, {cpus} CPUs (nproc), Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def revision() -> str:
    """The checked-out commit (short hash, ``+changes in ...`` when the package's or the
    benchmarks' code differs from it), or ``unknown``."""
    head = _command(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"])
    if head is None:
        return "unknown"
    changed = [
        name
        for name, paths in (
            ("src", ["src"]),
            ("benchmarks", ["benchmarks/*.py", "benchmarks/methods"]),
        )
        if _command(["git", "-C", str(HERE.parent), "status", "--porcelain", "--", *paths])
    ]
    return head + (f"+changes in {' and '.join(changed)}" if changed else "")


def command_line(script: str, argv: Sequence[str]) -> str:
    return shlex.join(["python", f"benchmarks/{script}", *argv])


def today() -> str:
    return datetime.date.today().isoformat()


def provenance(script: str, argv: Sequence[str], threads: int) -> dict[str, object]:
    """What every results file records: the exact command, date, machine, commit and threads."""
    return {
        "command": command_line(script, argv),
        "date": today(),
        "machine": machine(),
        "revision": revision(),
        "threads": threads,
    }


def slug(title: str) -> str:
    """``title`` as a file-name part: lower-case words joined by hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def publish(title_prefix: str, text: str, write: bool) -> None:
    """Print a benchmark's section; with ``write``, also replace it in RESULTS.md."""
    sys.stdout.write(text)
    if write:
        write_section(title_prefix, text)


def write_section(title_prefix: str, body: str, path: Path = RESULTS_MD) -> None:
    """Replace the ``## title_prefix...`` section of RESULTS.md with ``body``, or append it.

    Sections of other benchmarks are kept as they are; ``body`` starts with its own ``## ``
    heading line.
    """
    text = path.read_text() if path.exists() else RESULTS_HEADER
    head, sections = _split_sections(text)
    for i, section in enumerate(sections):
        if section.startswith(f"## {title_prefix}"):
            sections[i] = body.strip() + "\n"
            break
    else:
        sections.append(body.strip() + "\n")
    path.write_text(head.rstrip() + "\n\n" + "\n".join(sections))


def _split_sections(text: str) -> tuple[str, list[str]]:
    """(text before the first ``## `` heading, one string per ``## `` section)."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")]
    if not starts:
        return text, []
    ends = [*starts[1:], len(lines)]
    head = "".join(lines[: starts[0]])
    return head, ["".join(lines[a:b]).rstrip() + "\n" for a, b in zip(starts, ends, strict=True)]


def relative(path: Path) -> str:
    """``path`` relative to the repository root when inside it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def save_json(path: Path, payload: object) -> None:
    """Write ``payload`` as indented JSON through a temporary file (never half written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def _command(argv: list[str]) -> str | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
