"""UNIQ and the baselines built on this package's quantized layers.

Every method here starts from ``prepare(model, QuantConfig(weight_bits, act_bits))``: the same
layers, the same uniform input quantizers (their ranges tracked in training), every Conv and
Linear layer quantized. They differ only in how the weights are treated:

* UNIQ (gradual): GradualSchedule with one block per layer (or the job's ``blocks`` blocks of
  consecutive layers), counted in steps: each block trains with noise for an equal share of the
  steps, then is frozen; the last ``final_fraction`` of the steps train what is left
  (BatchNorm, biases) with every layer frozen.
* UNIQ one-shot: the same with one block (every layer noisy at once).
* UNIQ per-channel / empirical: gradual with a per-output-channel fit / the empirical fit.
* UNIQ learned levels: gradual, and each frozen layer keeps its codes but trains its k levels
  (``QuantConfig.learn_levels``) for the rest of the steps.
* UNIQ mixed bits: gradual with each layer's bits chosen by ``plan_bits`` so that the network
  costs the GBOPs of the column's uniform bits (its cell gives the mean bits per weight).
* k-quantile STE: every layer in quant mode from the first step, straight-through rounding,
  no noise (the WeightQuantizer's quant mode).
* k-quantile STE gradual: UNIQ gradual's schedule and quantizer with the noise of the current
  block replaced by straight-through rounding: it isolates what the noise itself contributes.
* uniform STE, k-means STE: the same with the weight quantizer's codebook method swapped for
  ``uniform_symmetric`` (DoReFa-style: 2^b evenly spaced levels on [-max|w|, max|w|]) or
  ``kmeans`` (Lloyd's algorithm, refit at every step).
* LSQ: a learned step per layer (``lsq``); LSQ mixed bits: the same at bits planned as for
  UNIQ mixed bits but from 2 bits up (LSQ's signed grid has no 1-bit form).
* post-training k-quantile / uniform: calibrate the activation ranges on a few training batches
  and convert; no fine-tuning.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial

from torch import nn

from methods.base import Job, Method, Prepared
from methods.lsq import MIN_BITS as LSQ_MIN_BITS
from methods.lsq import LsqWeightQuantizer
from uniq_quant import GradualSchedule, QuantConfig, WeightQuantizer, calibrate, convert, prepare
from uniq_quant.bops import count_bops
from uniq_quant.mixed_precision import gbops_range, plan_bits
from uniq_quant.prepare import quantized_layers

FINAL_FRACTION = 0.1  # share of the UNIQ steps with every layer frozen (BatchNorm settles)
MIXED_CANDIDATES = (1, 2, 3, 4, 6, 8)  # the widths UNIQ mixed chooses from


class CodebookWeightQuantizer(WeightQuantizer):
    """The package's weight quantizer with another codebook method of ``functional.quantize``.

    Quant mode, freezing and caching are the parent's; only ``method`` differs (noise mode is
    not used with it).
    """

    def __init__(self, bits: int, method: str) -> None:
        super().__init__(bits)
        self._codebook_method = method

    @property
    def method(self) -> str:
        return self._codebook_method


def prepared(model: nn.Module, job: Job, **config: object) -> nn.Module:
    """``model`` prepared at the job's bits; ``config`` adds QuantConfig fields."""
    settings = QuantConfig(weight_bits=job.weight_bits, act_bits=job.act_bits, **config)
    return prepare(model, settings, job.example)


def ours_gbops(model: nn.Module, job: Job) -> float:
    """GBOPs per image counted from the model's own layers and quantizers."""
    return count_bops(model, job.input_shape).gbops


def uniq(
    model: nn.Module,
    job: Job,
    one_block: bool = False,
    per_channel: bool = False,
    fit: str = "",
    rounding: bool = False,
    layer_bits: Mapping[str, int] | None = None,
    learn_levels: bool = False,
) -> Prepared:
    """UNIQ fine-tuning under a step-counted GradualSchedule, converted at the end.

    ``rounding`` trains each block with straight-through rounding instead of noise (the
    schedule's ``emulation="rounding"``);
    ``layer_bits`` (layer name -> bits) overrides the job's weight bits layer by layer;
    ``learn_levels`` trains the levels of frozen layers.
    """
    model = prepared(
        model,
        job,
        per_channel=per_channel,
        fit=fit or "gaussian",
        overrides=layer_bits or {},
        learn_levels=learn_levels,
    )
    layers = len(list(quantized_layers(model)))
    blocks = job.options.get("blocks") or layers  # the paper's default: one block per layer
    stages = 1 if one_block else min(int(blocks), layers)

    # split the steps: equal noisy stages, then the rest with every layer frozen
    final = round(float(job.options.get("final_fraction", FINAL_FRACTION)) * job.steps)
    stage_length = max(1, (job.steps - final) // stages)
    final = max(0, job.steps - stage_length * stages)
    emulation = "rounding" if rounding else "noise"
    schedule = GradualSchedule(model, stages, stage_length, "step", final, emulation)
    return Prepared(
        model,
        gbops=lambda: ours_gbops(model, job),
        after_step=schedule.step,
        finish=lambda: convert(model),
    )


def uniq_mixed(model: nn.Module, job: Job) -> Prepared:
    """UNIQ gradual at the per-layer bits of ``planned_bits``; ``bits`` reports the mean bits
    per weight reached."""
    result = uniq(model, job, layer_bits=planned_bits(model, job))
    return dataclasses.replace(result, bits=lambda: mean_weight_bits(result.model))


def planned_bits(
    model: nn.Module, job: Job, candidates: tuple[int, ...] = MIXED_CANDIDATES
) -> dict[str, int]:
    """``plan_bits`` from ``candidates`` on the job's calibration batches, with the budget the
    GBOPs of every layer at ``job.weight_bits``: layer name -> bits."""
    config = QuantConfig(weight_bits=job.weight_bits, act_bits=job.act_bits)
    budget, _ = gbops_range(model, config, job.example, (job.weight_bits,))
    return plan_bits(model, config, job.example, job.calibration, budget, candidates).bits


def mean_weight_bits(model: nn.Module) -> float:
    """Bits per weight over every quantized layer, weighted by the layers' weight counts."""
    layers = [layer for _, layer in quantized_layers(model)]
    total = sum(layer.weight.numel() for layer in layers)
    return sum(layer.weight.numel() * layer.weight_quantizer.bits for layer in layers) / total


def straight_through(model: nn.Module, job: Job, codebook: str = "kquantile") -> Prepared:
    """Every layer quantized from the first step with ``codebook``, straight-through gradient."""
    model = prepared(model, job)
    for _, layer in quantized_layers(model):
        if codebook != "kquantile":
            layer.weight_quantizer = CodebookWeightQuantizer(job.weight_bits, codebook)
        layer.mode = "quant"
    return Prepared(model, gbops=lambda: ours_gbops(model, job), finish=lambda: convert(model))


def lsq(model: nn.Module, job: Job, mixed: bool = False) -> Prepared:
    """Every layer's weight quantizer replaced by LSQ's; input quantizers in quant mode.

    ``mixed``: at the per-layer bits of ``planned_bits`` from the candidates LSQ has a grid for
    (2 bits and up; UNIQ mixed bits may also choose 1).
    """
    widths = tuple(b for b in MIXED_CANDIDATES if b >= LSQ_MIN_BITS)
    model = prepared(model, job, overrides=planned_bits(model, job, widths) if mixed else {})
    for _, layer in quantized_layers(model):
        layer.weight_quantizer = LsqWeightQuantizer(layer.weight_quantizer.bits, layer.weight)
        layer.mode = "quant"
    return Prepared(
        model,
        gbops=lambda: ours_gbops(model, job),
        finish=lambda: model.eval(),
        bits=(lambda: mean_weight_bits(model)) if mixed else None,
    )


def post_training(model: nn.Module, job: Job, codebook: str = "kquantile") -> Prepared:
    """Quantize the float weights, calibrate activation ranges, convert; no fine-tuning."""
    model = prepared(model, job)
    if codebook != "kquantile":
        for _, layer in quantized_layers(model):
            layer.weight_quantizer = CodebookWeightQuantizer(job.weight_bits, codebook)
    if job.act_bits is not None:
        calibrate(model, list(job.calibration))
    convert(model)
    return Prepared(model, gbops=lambda: ours_gbops(model, job), trains=False)


OUR_METHODS = (
    Method("uniq", "UNIQ gradual", "UNIQ", False, uniq),
    Method("uniq-oneshot", "UNIQ one-shot", "UNIQ", False, partial(uniq, one_block=True)),
    Method("uniq-perchannel", "UNIQ per-channel", "UNIQ", False, partial(uniq, per_channel=True)),
    Method("uniq-empirical", "UNIQ empirical fit", "UNIQ", False, partial(uniq, fit="empirical")),
    Method(
        "uniq-learned",
        "UNIQ learned levels",
        "UNIQ",
        False,
        partial(uniq, learn_levels=True),
    ),
    Method("uniq-mixed", "UNIQ mixed bits", "UNIQ", False, uniq_mixed),
    Method("kquantile-ste", "k-quantile STE", "baseline", False, straight_through),
    Method(
        "kquantile-ste-gradual",
        "k-quantile STE gradual",
        "baseline",
        False,
        partial(uniq, rounding=True),
    ),
    Method(
        "uniform-ste",
        "uniform STE",
        "baseline",
        True,
        partial(straight_through, codebook="uniform_symmetric"),
    ),
    Method("lsq", "LSQ", "baseline", True, lsq),
    Method("lsq-mixed", "LSQ mixed bits", "baseline", True, partial(lsq, mixed=True)),
    Method(
        "kmeans-ste", "k-means STE", "baseline", False, partial(straight_through, codebook="kmeans")
    ),
    Method("ptq-kquantile", "PTQ k-quantile", "baseline", False, post_training),
    Method(
        "ptq-uniform",
        "PTQ uniform",
        "baseline",
        True,
        partial(post_training, codebook="uniform_symmetric"),
    ),
)
