"""A whole ``uniq-quant train`` run: float training, gradual UNIQ, convert, export, report.

Phases, counted in one sequence of epochs:
1. float: ``float_epochs`` epochs of ordinary training (or none, from ``--init``);
2. UNIQ: ``prepare`` the model, then train under the GradualSchedule until it finishes;
3. convert, re-estimate the BatchNorm statistics of the frozen weights (``bn_batches``
   training batches), evaluate, export the packed file, count BOPs, draw figures, write
   summary.json.

The run folder (the output contract other tools rely on):
    config.yaml        the resolved settings
    metrics.jsonl      one JSON object per finished epoch
    checkpoint.pt      the latest epoch's full state (atomic), for --resume
    float_model.pt     the float model's state_dict (torchvision format for tv: models)
    model.safetensors  the exported, bit-packed quantized model
    bits_plan.json     with --gbops-budget: the weight bits chosen per layer (mixed_precision)
    *.png              training curves, a weight histogram, accuracy against GBOPs
    summary.json       model, dataset, weight_bits, act_bits, fp_top1, quant_top1, gbops,
                       gbops_fp32, size_bytes, size_bytes_fp32, train_seconds, layer_bits
                       (weight bits per quantized layer), gbops_budget, and more
A checkpoint is written at the end of every epoch; ``--resume`` restarts the epoch that was
running when the run stopped. An existing run folder is never overwritten.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from uniq_quant.bops import count_bops
from uniq_quant.config import QuantConfig
from uniq_quant.data import build_datasets, build_loaders, set_epoch
from uniq_quant.mixed_precision import BitsPlan, check_budget, plan_bits
from uniq_quant.models import build_model, load_float_checkpoint, model_recipe
from uniq_quant.prepare import convert, prepare, quantized_layers
from uniq_quant.schedule import GradualSchedule
from uniq_quant.train import distributed
from uniq_quant.train.checkpoint import rng_state, save_atomic, seed_everything, set_rng_state
from uniq_quant.train.distributed import Process
from uniq_quant.train.engine import (
    build_lr_schedule,
    build_optimizer,
    evaluate,
    reestimate,
    train_epoch,
)
from uniq_quant.train.settings import TrainSettings, settings_from_dict

logger = logging.getLogger(__name__)

CONFIG, METRICS, CHECKPOINT = "config.yaml", "metrics.jsonl", "checkpoint.pt"
FLOAT_MODEL, QUANT_MODEL, SUMMARY = "float_model.pt", "model.safetensors", "summary.json"
BITS_PLAN = "bits_plan.json"
PLAN_SAMPLES = 512  # training images the bits plan measures divergences on
# Settings a resumed run may change: they do not alter what is computed.
RESUMABLE_CHANGES = frozenset({"resume", "workers", "device", "log_every", "out"})


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (exists already, or nothing to resume)."""


@dataclass
class RunState:
    """What a checkpoint carries between epochs."""

    epoch: int = 0  # finished epochs, float and UNIQ together
    fp_top1: float | None = None
    fp_top5: float | None = None
    train_seconds: float = 0.0
    metrics: list[dict[str, Any]] = field(default_factory=list)


def run_folder(settings: TrainSettings) -> Path:
    """The folder a run with ``settings`` writes to."""
    return Path(settings.out) if settings.out else Path("runs") / settings.run_name()


def train(settings: TrainSettings) -> dict[str, Any]:
    """Run training end to end and return the summary (also written to summary.json)."""
    process = distributed.start(settings.device)
    try:
        return _train(settings, process)
    finally:
        distributed.stop(process)


def _train(settings: TrainSettings, process: Process) -> dict[str, Any]:
    out = run_folder(settings)
    checkpoint = _open_folder(out, settings)

    # 1. data and model, built before anything is written so bad input leaves no trace
    seed_everything(settings.seed)
    size = settings.image_size
    train_set, val_set, info = build_datasets(settings.dataset, settings.data, image_size=size)
    train_loader, val_loader = build_loaders(
        train_set,
        val_set,
        settings.batch_size,
        settings.workers,
        process.distributed,
        settings.seed,
    )
    steps = min(len(train_loader), settings.max_steps_per_epoch or len(train_loader))
    recipe = model_recipe(settings.model, info.num_classes, info.in_channels, size)
    model = build_model(**recipe).to(process.device)
    if settings.init:
        load_float_checkpoint(model, settings.init)
    example = val_set[0][0][None].to(process.device)
    if settings.gbops_budget is not None:
        check_budget(
            model,
            settings.quant_config(),
            example,
            settings.gbops_budget,
            settings.candidate_bits(),
        )
    distributed.barrier(process)
    if process.is_main and checkpoint is None:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG).write_text(yaml.safe_dump(settings.to_dict(), sort_keys=False))
    logger.info("run folder: %s", out)
    state = RunState() if checkpoint is None else _restore_run_state(checkpoint)
    context = _Context(
        settings, process, out, train_loader, val_loader, steps, state, settings.quant_config()
    )

    # 2. float phase
    if state.epoch < settings.float_epochs:
        _float_phase(model, context, checkpoint)
        checkpoint = None
    elif checkpoint is not None and checkpoint["phase"] == "float":
        model.load_state_dict(checkpoint["model"])
        checkpoint = None
    if state.fp_top1 is None:
        state.fp_top1, state.fp_top5 = evaluate(
            model, val_loader, process, settings.amp, settings.max_eval_batches
        )
    if process.is_main and checkpoint is None:  # else the float model was saved before
        torch.save(model.state_dict(), out / FLOAT_MODEL)
    logger.info("float model: top-1 %.2f%%", state.fp_top1)

    # 3. UNIQ phase, at the bits of a GBOPs budget if one is given
    if settings.gbops_budget is not None:
        plan = _bits_plan(model, context, train_set, example)
        context.quant_config = plan.apply(context.quant_config)
    prepare(model, context.quant_config, example)
    schedule = _schedule(model, settings, steps)
    _uniq_phase(model, schedule, context, checkpoint)

    # 4. convert, re-estimate BatchNorm statistics, evaluate, export, report
    convert(model)
    if settings.bn_batches:
        _reestimate(model, context)
    quant_top1, quant_top5 = evaluate(
        model, val_loader, process, settings.amp, settings.max_eval_batches
    )
    in_sync = distributed.ranks_in_sync(model, process)
    summary = {}
    if process.is_main:
        summary = _finish(model, context, recipe, (info.in_channels, *info.image_size))
        summary.update(quant_top1=quant_top1, quant_top5=quant_top5, ranks_in_sync=in_sync)
        (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    distributed.barrier(process)
    return summary


@dataclass
class _Context:
    settings: TrainSettings
    process: Process
    out: Path
    train_loader: Any
    val_loader: Any
    steps: int
    state: RunState
    quant_config: QuantConfig  # the settings' config, with the bits plan applied if any


def _bits_plan(model: nn.Module, ctx: _Context, train_set, example: torch.Tensor) -> BitsPlan:
    """The run's bits plan: read from the run folder when resuming, else measured on rank 0
    over ``PLAN_SAMPLES`` training images spread evenly over the split, and broadcast."""
    path = ctx.out / BITS_PLAN
    if path.is_file():
        logger.info("bits plan read from %s", path)
        try:
            return BitsPlan.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{path} is not a bits plan ({type(error).__name__}: {error}); restore it, or "
                "move it away to plan the bits again"
            ) from None
    data = None
    if ctx.process.is_main:
        plan = settings_plan(model, ctx.settings, train_set, example)
        logger.info("bits plan, saved to %s:\n%s", path, plan.format_table())
        data = plan.to_dict()
        path.write_text(json.dumps(data, indent=2) + "\n")
    return BitsPlan.from_dict(distributed.broadcast_object(data, ctx.process))


def plan_only(settings: TrainSettings) -> BitsPlan:
    """The plan ``train`` would make with ``settings`` after its float phase, made now from the
    ``--init`` checkpoint (or the untrained model, with a warning), without training."""
    if settings.gbops_budget is None:
        raise ValueError("planning needs a budget: pass --gbops-budget GBOPS (per image)")
    process = distributed.start(settings.device)
    try:
        seed_everything(settings.seed)
        size = settings.image_size
        train_set, val_set, info = build_datasets(settings.dataset, settings.data, image_size=size)
        recipe = model_recipe(settings.model, info.num_classes, info.in_channels, size)
        model = build_model(**recipe).to(process.device)
        if settings.init:
            load_float_checkpoint(model, settings.init)
        else:
            logger.warning(
                "no --init checkpoint: the plan measures an untrained model; pass the float "
                "checkpoint the run will start from"
            )
        example = val_set[0][0][None].to(process.device)
        return settings_plan(model, settings, train_set, example)
    finally:
        distributed.stop(process)


def settings_plan(
    model: nn.Module, settings: TrainSettings, train_set, example: torch.Tensor
) -> BitsPlan:
    """``plan_bits`` for ``settings`` (budget, candidates, quantization) over ``PLAN_SAMPLES``
    images of ``train_set`` spread evenly over it, on ``example``'s device."""
    count = min(PLAN_SAMPLES, len(train_set))
    picks = torch.linspace(0, len(train_set) - 1, count).long().tolist()
    images = torch.stack([train_set[i][0] for i in picks]).to(example.device)
    return plan_bits(
        model,
        settings.quant_config(),
        example,
        images.split(settings.batch_size),
        settings.gbops_budget,
        settings.candidate_bits(),
    )


def _float_phase(model: nn.Module, ctx: _Context, checkpoint: dict | None) -> None:
    s = ctx.settings
    optimizer = build_optimizer(model, s.optimizer, s.lr, s.momentum, s.weight_decay)
    lr_schedule = build_lr_schedule(
        optimizer, s.lr_schedule, s.float_epochs * ctx.steps, round(s.warmup_epochs * ctx.steps)
    )
    if checkpoint is not None:
        _load_training_state(model, optimizer, lr_schedule, checkpoint)
    trained = _compiled(_wrap(model, ctx.process, find_unused=False), s.compile, graphs=1)
    for epoch in range(ctx.state.epoch, s.float_epochs):
        stats = _epoch(trained, ctx, optimizer, lr_schedule, epoch, "float", None)
        top1, top5 = evaluate(model, ctx.val_loader, ctx.process, s.amp, s.max_eval_batches)
        ctx.state.fp_top1, ctx.state.fp_top5 = top1, top5
        _end_epoch(model, ctx, optimizer, lr_schedule, None, "float", "float", stats, top1, top5)


def _uniq_phase(
    model: nn.Module, schedule: GradualSchedule, ctx: _Context, checkpoint: dict | None
) -> None:
    s = ctx.settings
    epochs = _uniq_epochs(schedule, ctx.steps)
    optimizer = build_optimizer(
        model, s.optimizer, s.uniq_learning_rate, s.momentum, s.weight_decay
    )
    lr_schedule = build_lr_schedule(
        optimizer, s.lr_schedule, epochs * ctx.steps, round(s.warmup_epochs * ctx.steps)
    )
    if checkpoint is not None:
        _load_training_state(model, optimizer, lr_schedule, checkpoint)
        schedule.load_state_dict(checkpoint["schedule"])
    wrapped = _wrap(model, ctx.process, find_unused=True)
    trained = _compiled(wrapped, s.compile, graphs=schedule.num_stages + 2)  # + the float one

    def after_step() -> bool:
        schedule.step()
        return schedule.finished

    first = max(ctx.state.epoch, s.float_epochs)
    for epoch in range(first, s.float_epochs + epochs):
        stage = _stage_label(schedule)
        stats = _epoch(trained, ctx, optimizer, lr_schedule, epoch, f"UNIQ {stage}", after_step)
        schedule.epoch()
        top1, top5 = evaluate(model, ctx.val_loader, ctx.process, s.amp, s.max_eval_batches)
        _end_epoch(model, ctx, optimizer, lr_schedule, schedule, "uniq", stage, stats, top1, top5)


def _reestimate(model: nn.Module, ctx: _Context) -> None:
    """BatchNorm statistics of the frozen weights over ``bn_batches`` training batches (at most
    an epoch's steps), drawn in a fixed order so that a resumed run computes the same."""
    s = ctx.settings
    set_epoch(ctx.train_loader, ctx.state.epoch)
    generator = getattr(ctx.train_loader, "generator", None)
    if generator is not None and not ctx.process.distributed:
        generator.manual_seed(s.seed + ctx.state.epoch)
    batches = min(s.bn_batches, ctx.steps)
    reestimate(model, ctx.train_loader, ctx.process, s.amp, batches)


def _epoch(model, ctx: _Context, optimizer, lr_schedule, epoch: int, what: str, after_step):
    s = ctx.settings
    set_epoch(ctx.train_loader, epoch)
    generator = getattr(ctx.train_loader, "generator", None)
    if generator is not None and not ctx.process.distributed:
        generator.manual_seed(s.seed + epoch)  # the same shuffle when an epoch is resumed
    return train_epoch(
        model,
        ctx.train_loader,
        optimizer,
        lr_schedule,
        ctx.process,
        max_steps=ctx.steps,
        label_smoothing=s.label_smoothing,
        amp=s.amp,
        channels_last=s.channels_last,
        after_step=after_step,
        description=f"epoch {epoch + 1} {what}",
        log_every=s.log_every,
    )


def _end_epoch(model, ctx, optimizer, lr_schedule, schedule, phase, stage, stats, top1, top5):
    """Log and record the epoch, then write the checkpoint (rank 0)."""
    state = ctx.state
    state.epoch += 1
    state.train_seconds += stats.seconds
    record = {
        "epoch": state.epoch,
        "phase": phase,
        "stage": stage,
        "train_loss": stats.loss,
        "train_top1": stats.top1,
        "val_top1": top1,
        "val_top5": top5,
        "lr": optimizer.param_groups[0]["lr"],
        "seconds": stats.seconds,
    }
    state.metrics.append(record)
    logger.info(
        "epoch %d (%s, stage %s): loss %.4f, val top-1 %.2f%%, %.1f s",
        state.epoch,
        phase,
        stage,
        stats.loss,
        top1,
        stats.seconds,
    )
    if not ctx.process.is_main:
        return
    with open(ctx.out / METRICS, "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in state.metrics)
    save_atomic(
        {
            "phase": phase,
            "run": vars(state),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_schedule": lr_schedule.state_dict(),
            "schedule": None if schedule is None else schedule.state_dict(),
            "rng": rng_state(),
        },
        ctx.out / CHECKPOINT,
    )


def _finish(model, ctx: _Context, recipe: dict, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Export, count BOPs, draw figures; returns the summary without the quantized accuracy."""
    from uniq_quant.export import save_quantized

    s, out = ctx.settings, ctx.out
    config = ctx.quant_config
    save_quantized(model, out / QUANT_MODEL, recipe=recipe, config=config, input_shape=input_shape)
    quantized = count_bops(model, input_shape)
    full = count_bops(model, input_shape, weight_bits=32, act_bits=32)
    _figures(model, ctx, quantized.gbops)
    return {
        "model": s.model,
        "dataset": s.dataset,
        "weight_bits": s.weight_bits,
        "act_bits": s.act_bits,
        "fp_top1": ctx.state.fp_top1,
        "fp_top5": ctx.state.fp_top5,
        "gbops": quantized.gbops,
        "gbops_fp32": full.gbops,
        "size_bytes": (out / QUANT_MODEL).stat().st_size,
        "size_bytes_fp32": (out / FLOAT_MODEL).stat().st_size,
        "train_seconds": ctx.state.train_seconds,
        "epochs": ctx.state.epoch,
        "world_size": ctx.process.world_size,
        "device": str(ctx.process.device),
        "run_dir": str(out),
        "gbops_budget": s.gbops_budget,
        "layer_bits": {
            name: layer.weight_quantizer.bits for name, layer in quantized_layers(model)
        },
    }


def _figures(model: nn.Module, ctx: _Context, gbops: float) -> None:
    try:
        from uniq_quant import plots
    except ImportError as error:
        logger.warning("figures skipped: %s", error)
        return
    out = ctx.out
    plots.plot_training_curves(ctx.state.metrics, out / "training_curves.png")
    name, layer = max(quantized_layers(model), key=lambda item: item[1].weight.numel())
    bits = layer.weight_quantizer.bits
    plots.plot_weight_histogram(layer.weight.detach().cpu(), bits, out / "weights.png", name=name)
    point = {
        "model": ctx.settings.model,
        "weight_bits": ctx.settings.weight_bits,
        "gbops_budget": ctx.settings.gbops_budget,
        "act_bits": ctx.settings.act_bits or 32,
        "quant_top1": ctx.state.metrics[-1]["val_top1"] if ctx.state.metrics else 0.0,
        "gbops": gbops,
    }
    plots.plot_accuracy_vs_gbops([point], out / "accuracy_vs_gbops.png")


def _schedule(model: nn.Module, settings: TrainSettings, steps: int) -> GradualSchedule:
    s = settings
    if s.stage_steps is not None:
        final = s.final_epochs * steps
        return GradualSchedule(model, s.num_stages, s.stage_steps, "step", final, s.emulation)
    return GradualSchedule(
        model, s.num_stages, s.stage_epochs, "epoch", s.final_epochs, s.emulation
    )


def _uniq_epochs(schedule: GradualSchedule, steps: int) -> int:
    if schedule.unit == "epoch":
        return schedule.total_length
    return math.ceil(schedule.total_length / steps)


def _stage_label(schedule: GradualSchedule) -> str:
    return "final" if schedule.stage >= schedule.num_stages else str(schedule.stage + 1)


def _wrap(model: nn.Module, process: Process, find_unused: bool) -> nn.Module:
    if not process.distributed:
        return model
    ids = [process.device.index] if process.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def _compiled(model: nn.Module, enabled: bool, graphs: int) -> nn.Module:
    """``torch.compile(model)`` when ``enabled``, allowed ``graphs`` recompilations at least.

    Every stage of a gradual schedule changes the layers' modes and so recompiles the graph;
    past ``torch._dynamo.config.recompile_limit`` torch would run the model eagerly.
    """
    if not enabled:
        return model
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, graphs)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 4 * graphs)
    return torch.compile(model)


def _load_training_state(model, optimizer, lr_schedule, checkpoint: dict) -> None:
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    lr_schedule.load_state_dict(checkpoint["lr_schedule"])
    set_rng_state(checkpoint["rng"])


def _restore_run_state(checkpoint: dict) -> RunState:
    return RunState(**checkpoint["run"])


def _open_folder(out: Path, settings: TrainSettings) -> dict | None:
    """Check the run folder; return the checkpoint to resume from, or None for a new run."""
    if not settings.resume:
        if out.exists() and any(out.iterdir()):
            raise RunFolderError(
                f"run folder {out} already exists and is not empty; nothing was changed. "
                "Pass --resume to continue it, or choose another --out"
            )
        return None
    if not (out / CHECKPOINT).is_file() or not (out / CONFIG).is_file():
        raise RunFolderError(
            f"--resume: {out} holds no {CHECKPOINT} and {CONFIG}; start the run without --resume"
        )
    saved = settings_from_dict(yaml.safe_load((out / CONFIG).read_text()))
    changed = [
        f"{key}: {value!r} -> {getattr(settings, key)!r}"
        for key, value in vars(saved).items()
        if key not in RESUMABLE_CHANGES and getattr(settings, key) != value
    ]
    if changed:
        raise RunFolderError(
            f"--resume with settings that differ from the run in {out}: {'; '.join(changed)}. "
            "Resume with the original settings, or start a new run with another --out"
        )
    return torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)
