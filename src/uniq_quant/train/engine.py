"""One epoch of training, one evaluation pass, a BatchNorm re-estimation, and the optimizer.

Learning rate: linear warm-up over ``warmup`` steps, then cosine decay to zero, or a step
decay (x0.1 at 1/2 and at 3/4 of the phase), updated every optimizer step. Weight decay is not
applied to one-dimensional parameters (BatchNorm weights and biases, layer biases).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from uniq_quant.batchnorm import batchnorm_layers, reestimate_batchnorm
from uniq_quant.train.distributed import Process, all_sum, average_tensors

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochStats:
    """Mean loss and top-1 (percent) over an epoch's training batches, and its duration."""

    loss: float
    top1: float
    steps: int
    seconds: float


def build_optimizer(
    model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD (Nesterov-free) or AdamW with weight decay on weights of two or more dimensions.

    Learned level shifts are not decayed, whatever their shape: a per-channel shift is (C, k),
    and decaying it would pull the levels of some layers back and not of others.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        decayed = param.dim() > 1 and not name.endswith("level_shift")
        (decay if decayed else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return torch.optim.AdamW(groups, lr=lr)


def build_lr_schedule(
    optimizer: torch.optim.Optimizer, kind: str, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate multiplier: warm-up, then cosine or step decay."""
    total_steps = max(1, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 0.1 ** sum(progress >= milestone for milestone in (0.5, 0.75))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    lr_schedule: torch.optim.lr_scheduler.LRScheduler,
    process: Process,
    *,
    max_steps: int,
    label_smoothing: float = 0.0,
    amp: bool = False,
    channels_last: bool = False,
    after_step: Callable[[], bool] | None = None,
    description: str = "train",
    log_every: int = 50,
) -> EpochStats:
    """Train for at most ``max_steps`` batches.

    Args:
        after_step: called after every optimizer step; returning True ends the epoch early
            (the schedule finished).
    """
    model.train()
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    totals = [0.0, 0.0, 0.0]  # loss sum, correct, items
    start, steps = time.perf_counter(), 0
    bar = _progress(max_steps, description, process)
    for images, labels in loader:
        images, labels = _to_device(images, labels, process, channels_last)
        with _autocast(process, amp):
            logits = model(images)
            loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_schedule.step()

        # bookkeeping and progress
        steps += 1
        count = labels.numel()
        totals[0] += loss.item() * count
        totals[1] += (logits.argmax(1) == labels).sum().item()
        totals[2] += count
        _report(bar, steps, max_steps, totals, optimizer, description, log_every)
        stop = after_step() if after_step is not None else False
        if stop or steps >= max_steps:
            break
    if bar is not None:
        bar.close()
    loss_sum, correct, items = all_sum(totals, process)
    seconds = time.perf_counter() - start
    return EpochStats(loss_sum / max(1, items), 100 * correct / max(1, items), steps, seconds)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    process: Process,
    amp: bool = False,
    max_batches: int | None = None,
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in percent over the (sharded) validation set.

    Args:
        max_batches: evaluate only the first batches (smoke tests); None for all.
    """
    model.eval()
    totals = [0.0, 0.0, 0.0]  # top-1 correct, top-5 correct, items
    for index, (images, labels) in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            break
        images, labels = _to_device(images, labels, process, channels_last=False)
        with _autocast(process, amp):
            logits = model(images).float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == labels[:, None]
        totals[0] += hits[:, 0].sum().item()
        totals[1] += hits.any(dim=1).sum().item()
        totals[2] += labels.numel()
    top1, top5, items = all_sum(totals, process)
    return 100 * top1 / max(1, items), 100 * top5 / max(1, items)


@torch.no_grad()
def reestimate(
    model: nn.Module, loader: Iterable, process: Process, amp: bool, max_batches: int
) -> int:
    """``reestimate_batchnorm`` over the first ``max_batches`` training batches of each process,
    under the evaluation's autocast; the statistics are then averaged over the processes, so
    every rank holds the same. Returns the batches this process used."""
    batches = (
        _to_device(images, labels, process, channels_last=False)[0]
        for images, labels in itertools.islice(loader, max_batches)
    )
    with _autocast(process, amp):
        count = reestimate_batchnorm(model, batches)
    statistics = [
        getattr(m, n) for m in batchnorm_layers(model) for n in ("running_mean", "running_var")
    ]
    average_tensors(statistics, process)
    return count


def _to_device(images, labels, process: Process, channels_last: bool):
    images = images.to(process.device, non_blocking=True)
    if channels_last and process.device.type == "cuda" and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(process.device, non_blocking=True)


def _autocast(process: Process, amp: bool) -> contextlib.AbstractContextManager:
    if amp and process.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _progress(total: int, description: str, process: Process) -> tqdm | None:
    if process.is_main and sys.stderr.isatty():
        return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True)
    return None


def _report(bar, steps, max_steps, totals, optimizer, description, log_every) -> None:
    loss, top1 = totals[0] / totals[2], 100 * totals[1] / totals[2]
    lr = optimizer.param_groups[0]["lr"]
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", top1=f"{top1:.1f}", lr=f"{lr:.2e}")
    elif steps % log_every == 0 or steps == max_steps:
        logger.info(
            "%s step %d/%d loss %.4f top1 %.2f lr %.2e",
            description,
            steps,
            max_steps,
            loss,
            top1,
            lr,
        )
