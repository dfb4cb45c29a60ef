"""The interface every benchmarked method implements, and the BOPs helpers they share."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from uniq_quant.bops import bops_per_position, count_bops

GIGA = 1e9


@dataclass(frozen=True)
class Job:
    """What to quantize to, and what a method may use besides the model.

    Attributes:
        weight_bits: target bits per weight.
        act_bits: bits of every quantized layer's input, or None for float activations.
        example: one input, (1, C, H, W), for tracing.
        calibration: training batches for post-training calibration.
        steps: fine-tuning steps the caller will run (0 for post-training methods).
        options: method-specific settings (``final_fraction``, ``diffq_penalty``, ...).
    """

    weight_bits: int
    act_bits: int | None
    example: torch.Tensor
    calibration: Sequence[torch.Tensor] = ()
    steps: int = 0
    options: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.example.shape[1:])


@dataclass
class Prepared:
    """A model ready to fine-tune, and the hooks the training loop calls.

    Attributes:
        model: the module to train (and, for post-training methods, to evaluate).
        trains: False for post-training methods: the caller only evaluates ``finish()``.
        attach: called with the optimizer once it is built, before the first step.
        penalty: extra loss term added at every step.
        after_step: called after every optimizer step.
        finish: returns the model to evaluate once training is over.
        gbops: GBOPs per image of the finished model.
        bits: mean weight bits actually reached (methods that choose their own bits).
    """

    model: nn.Module
    gbops: Callable[[], float]
    trains: bool = True
    attach: Callable[[torch.optim.Optimizer], None] | None = None
    penalty: Callable[[], torch.Tensor] | None = None
    after_step: Callable[[], object] | None = None
    finish: Callable[[], nn.Module] | None = None
    bits: Callable[[], float] | None = None

    def finished(self) -> nn.Module:
        return self.model if self.finish is None else self.finish()


@dataclass(frozen=True)
class Method:
    """One benchmarked method.

    Attributes:
        name: the command-line name.
        label: the name in tables and figures.
        family: ``UNIQ``, ``baseline`` (built here on this package's layers) or ``peer``.
        uniform: True when the method's weight levels are evenly spaced.
        build: (float model, job) -> Prepared; the model may be modified in place.
        requires: the module a peer needs, checked before it runs.
    """

    name: str
    label: str
    family: str
    uniform: bool
    build: Callable[[nn.Module, Job], Prepared]
    requires: str | None = None


def available(method: Method) -> str | None:
    """None when ``method`` can run here, else why not (the import error, verbatim)."""
    if method.requires is None:
        return None
    try:
        importlib.import_module(method.requires)
    except Exception as error:  # any failure to import makes the peer unavailable
        return f"import {method.requires} failed: {type(error).__name__}: {error}"
    return None


def gbops_at(model: nn.Module, job: Job) -> float:
    """GBOPs per image of ``model`` with every layer counted at the job's bits."""
    return count_bops(model, job.input_shape, job.weight_bits, job.act_bits).gbops


def gbops_per_layer_bits(model: nn.Module, job: Job, bits: Mapping[str, float]) -> float:
    """GBOPs per image with each layer's weight bits taken from ``bits`` (layer name -> bits).

    Layers missing from ``bits`` count at the job's weight bits; fractional bits (a mean over
    groups of weights) enter the paper's formula as they are.
    """
    report = count_bops(model, job.input_shape, job.weight_bits, job.act_bits)
    modules = dict(model.named_modules())
    total = 0.0
    for row in report.rows:
        layer = modules[row.name]
        if isinstance(layer, nn.Linear):
            n, m, area = layer.in_features, layer.out_features, 1
        else:
            n, m = layer.in_channels // layer.groups, layer.out_channels
            area = row.macs // (n * m * row.positions)
        w_bits = bits.get(row.name, row.weight_bits)
        total += bops_per_position(n, m, area, w_bits, row.act_bits) * row.positions
    return total / GIGA
