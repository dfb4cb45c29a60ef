"""Quantization-aware training with other libraries: Brevitas, torch.ao and DiffQ.

Each peer quantizes every Conv and Linear layer of the float model with its own machinery and
its usual defaults; only the bits are set:

* Brevitas: each Conv2d / Linear becomes ``QuantConv2d`` / ``QuantLinear`` with
  ``weight_bit_width=b`` (default weight quantizer: per-tensor, symmetric, narrow range, scale
  from max |w|) and each ReLU a ``QuantReLU(bit_width=a)`` (learned scale); with float
  activations the ReLUs stay.
* torch.ao: FX-mode ``prepare_qat_fx`` (Conv-BN-ReLU fused, BatchNorm folded into the weight)
  with a qconfig whose weight FakeQuantize has quant_min / quant_max of a signed b-bit integer
  (per tensor, symmetric, moving-average min-max), activations 8-bit affine; with float
  activations the activation FakeQuantize modules are disabled.
* DiffQ: ``DiffQuantizer`` (pseudo-quantization noise with a learned number of bits per group
  of ``group_size`` weights, uniform levels between min and max) over the weights of every
  Conv / Linear layer, bits bracketed in [b - 1, b + 1] starting at b, trained with its model
  size penalty; the bits it reaches are reported. Activations, when quantized, use this
  package's input quantizers (DiffQ has none), as the in-house baselines do.

GBOPs are counted on the float architecture at the target bits (DiffQ: at the bits reached,
layer by layer).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from methods.base import Job, Method, Prepared, gbops_at, gbops_per_layer_bits
from methods.ours import prepared
from uniq_quant.prepare import quantized_layers

DIFFQ_GROUP_SIZE = 8  # weights sharing one learned bits value; divides every layer's size
DIFFQ_BITS_LR = 1e-3  # DiffQ's recommended Adam learning rate for its bits parameters
DIFFQ_PENALTY = 0.01  # loss per average bit per weight; see diffq()
MB_BITS = 8 * 2**20  # bits in one of DiffQ's megabytes


def brevitas(model: nn.Module, job: Job) -> Prepared:
    """Brevitas QuantConv2d / QuantLinear / QuantReLU in place of the torch layers."""
    gbops = gbops_at(copy.deepcopy(model), job)
    model = _brevitas_swap(model, job.weight_bits, job.act_bits)
    return Prepared(model, gbops=lambda: gbops)


def _brevitas_swap(module: nn.Module, weight_bits: int, act_bits: int | None) -> nn.Module:
    import brevitas.nn as qnn

    for name, child in list(module.named_children()):
        if type(child) is nn.Conv2d:
            new = qnn.QuantConv2d(
                child.in_channels,
                child.out_channels,
                child.kernel_size,
                stride=child.stride,
                padding=child.padding,
                dilation=child.dilation,
                groups=child.groups,
                bias=child.bias is not None,
                weight_bit_width=weight_bits,
            )
        elif type(child) is nn.Linear:
            new = qnn.QuantLinear(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                weight_bit_width=weight_bits,
            )
        elif type(child) is nn.ReLU and act_bits is not None:
            new = qnn.QuantReLU(bit_width=act_bits)
        else:
            _brevitas_swap(child, weight_bits, act_bits)
            continue
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            new.load_state_dict(child.state_dict())
        setattr(module, name, new)
    return module


def torch_ao(model: nn.Module, job: Job) -> Prepared:
    """torch.ao FX quantization-aware training with b-bit weight fake quantization."""
    from torch.ao import quantization as tq
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    gbops = gbops_at(copy.deepcopy(model), job)
    b, a = job.weight_bits, job.act_bits or 8
    weight = tq.FakeQuantize.with_args(
        observer=tq.MovingAverageMinMaxObserver,
        quant_min=-(2 ** (b - 1)),
        quant_max=2 ** (b - 1) - 1,
        dtype=torch.qint8,
        qscheme=torch.per_tensor_symmetric,
    )
    activation = tq.FakeQuantize.with_args(
        observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=2**a - 1, dtype=torch.quint8
    )
    mapping = tq.QConfigMapping().set_global(tq.QConfig(activation=activation, weight=weight))
    qat = prepare_qat_fx(model.train(), mapping, (job.example,))
    if job.act_bits is None:
        for name, module in qat.named_modules():
            if isinstance(module, tq.FakeQuantize) and not name.endswith("weight_fake_quant"):
                module.disable_fake_quant()
                module.disable_observer()

    def finish() -> nn.Module:
        qat.apply(tq.disable_observer)  # FakeQuantize observes in eval mode too
        return qat

    return Prepared(qat, gbops=lambda: gbops, finish=finish)


def diffq(model: nn.Module, job: Job) -> Prepared:
    """DiffQ over the Conv / Linear weights, bits in [b - 1, b + 1], with its size penalty.

    The penalty is DiffQ's: lambda * model_size() in megabytes, with lambda set so that one
    more bit on every quantized weight costs ``diffq_penalty`` in loss (lambda = penalty *
    8 * 2^20 / quantized weights), which makes one setting fit models of any size.
    """
    from diffq import DiffQuantizer

    model = prepared(model, job)
    layers = dict(quantized_layers(model))
    for layer in layers.values():
        layer.mode = "float"  # DiffQ quantizes the weights; keep the input quantizers only
        if layer.input_quantizer is not None:
            layer.input_quantizer.mode = "quant"
    weights = sum(layer.weight.numel() for layer in layers.values())
    scale = float(job.options.get("diffq_penalty", DIFFQ_PENALTY)) * MB_BITS / weights
    state: dict[str, DiffQuantizer] = {}

    def attach(optimizer: torch.optim.Optimizer) -> None:
        b = job.weight_bits
        not_weights = [n for n, p in model.named_parameters() if p.dim() < 2]
        quantizer = DiffQuantizer(
            model,
            min_size=0.0,
            group_size=DIFFQ_GROUP_SIZE,
            min_bits=max(1, b - 1),
            max_bits=b + 1,
            init_bits=b,
            exclude=not_weights,
        )
        quantizer.setup_optimizer(optimizer, lr=DIFFQ_BITS_LR)
        state["quantizer"] = quantizer

    def layer_bits() -> dict[str, float]:
        quantizer = state["quantizer"]
        names = {module: name for name, module in model.named_modules()}
        bits = {}
        for qparam in quantizer._qparams:  # DiffQ exposes no public per-parameter bits
            bits_of_groups = quantizer.extra_bits + quantizer._get_bits(qparam.logit.detach())
            rounded = bits_of_groups.round()
            bits[names[qparam.module]] = float(rounded.clamp(1, 15).mean())
        return bits

    def mean_bits() -> float:
        bits = layer_bits()
        total = sum(bits[name] * layer.weight.numel() for name, layer in layers.items())
        return total / weights

    return Prepared(
        model,
        gbops=lambda: gbops_per_layer_bits(model, job, layer_bits()),
        attach=attach,
        penalty=lambda: scale * state["quantizer"].model_size(),
        bits=mean_bits,
    )


PEER_METHODS = (
    Method("brevitas", "Brevitas QAT", "peer", True, brevitas, requires="brevitas"),
    Method("torchao", "torch.ao QAT", "peer", True, torch_ao, requires="torch.ao.quantization"),
    Method("diffq", "DiffQ", "peer", True, diffq, requires="diffq"),
)
