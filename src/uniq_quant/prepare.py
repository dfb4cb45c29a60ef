"""prepare / convert: put UNIQ quantizers into any nn.Module and freeze them for inference.

``prepare(model, config, example_input)``
  1. runs ``example_input`` once (eval mode, no gradient, nothing in the model changes) to learn
     the order in which data flows through the quantizable layers: DESIGN semantic 6, stage
     order is data-flow order, not registration order;
  2. resolves each layer's bits from the config (first / last layer, name overrides);
  3. swaps each quantized layer for its ``uniq_quant.nn`` twin, sharing the float Parameters,
     with an input quantizer unless the layer reads the network input;
  4. leaves every quantized layer in float mode.
``calibrate(model, batches)`` sets the activation ranges without training (post-training use).
``convert(model)`` freezes every quantized layer in quant mode: from then on the model computes
exactly what the exported file computes.

Only layers whose type is exactly nn.Conv1d, nn.Conv2d or nn.Linear are quantized, and only
those the example input reaches: a layer whose weight another module reads directly (the output
projection of nn.MultiheadAttention) is not one of them and stays in float.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from uniq_quant.config import FLOAT, QuantConfig, unmatched_overrides
from uniq_quant.nn import QUANTIZED_TWINS, QuantLayerMixin
from uniq_quant.quantizers import ActivationQuantizer

logger = logging.getLogger(__name__)

_TYPE_NAMES = {nn.Conv1d: "conv1d", nn.Conv2d: "conv2d", nn.Linear: "linear"}


def prepare(model: nn.Module, config: QuantConfig, example_input: object) -> nn.Module:
    """Swap quantized layers into ``model`` in place and return it, all in float mode.

    Args:
        model: any nn.Module holding Conv1d, Conv2d or Linear layers.
        config: what to quantize and how.
        example_input: one input the model accepts (a tensor, or a tuple of positional args);
            a batch of one is enough.

    Returns:
        ``model``, whose float-mode outputs equal the original model's exactly.

    Raises:
        TypeError: ``model`` or ``config`` has the wrong type.
        RuntimeError: ``model`` was already prepared.
        ValueError: no layer to quantize, or an override pattern that matches no layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"prepare() needs an nn.Module, got {type(model).__name__}")
    if not isinstance(config, QuantConfig):
        raise TypeError(f"prepare() needs a QuantConfig, got {type(config).__name__}")
    if any(isinstance(m, QuantLayerMixin) for m in model.modules()):
        raise RuntimeError("the model is already prepared; prepare() a fresh float model")

    # 1. data-flow order, and which layers read the network input
    names, order, reads_input = flow_order(model, config, example_input)
    skipped = [names[m] for m in names if m not in order]
    if skipped:
        logger.warning("not quantized (the example input never calls them): %s", skipped)
    if not order:
        raise ValueError(
            f"the model has no {'/'.join(config.layer_types)} layer that the example input "
            "reaches; check layer_types and the example input"
        )

    # 2. bits per layer
    flow_names = [names[m] for m in order]
    unmatched = unmatched_overrides(config, flow_names)
    if unmatched:
        raise ValueError(
            f"override pattern(s) {unmatched} match no quantizable layer; "
            f"layer names look like {flow_names[:4]}"
        )

    # 3. swap the quantized twins in
    twins: dict[nn.Module, nn.Module] = {}
    for position, module in enumerate(order):
        bits = config.layer_bits(names[module], position, len(order))
        if bits == FLOAT:
            continue
        twin = QUANTIZED_TWINS[type(module)].from_float(
            module,
            weight_bits=bits,
            act_bits=None if module in reads_input else config.act_bits,
            per_channel=config.per_channel,
            fit=config.fit,
            act_noise=config.act_noise,
            act_percentile=config.act_percentile,
            learn_levels=config.learn_levels,
        )
        twin.flow_index = position
        twins[module] = twin
    for parent in model.modules():
        for child_name, child in list(parent.named_children()):
            if child in twins:
                setattr(parent, child_name, twins[child])
    logger.info("prepared %d of %d layers for quantization", len(twins), len(order))
    return model


def convert(model: nn.Module) -> nn.Module:
    """Freeze every quantized layer in quant mode (codes cached, ranges fixed); returns model.

    Raises:
        RuntimeError: the model was not prepared, or an activation range was never calibrated.
    """
    layers = list(quantized_layers(model))
    if not layers:
        raise RuntimeError("convert() found no quantized layer: prepare() the model first")
    for name, layer in layers:
        quantizer = layer.input_quantizer
        if quantizer is not None and not bool(quantizer.calibrated):
            raise RuntimeError(
                f"layer {name!r} has no activation range yet: train (or run model.train() "
                "forward passes over a few batches) before convert()"
            )
    for _, layer in layers:
        layer.freeze()
        if layer.input_quantizer is not None:
            layer.input_quantizer.freeze()
    return model


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[object]) -> nn.Module:
    """Track the activation ranges over ``batches`` and change nothing else; returns model.

    The model runs in eval mode (BatchNorm statistics stay as they are) with only its
    activation quantizers observing, as post-training quantization needs.

    Args:
        model: a prepared model.
        batches: model inputs: tensors, or tuples of positional arguments.
    """
    quantizers = [m for m in model.modules() if isinstance(m, ActivationQuantizer)]
    if not quantizers:
        raise RuntimeError("calibrate() found no activation quantizer: prepare() the model first")
    with modes_restored(model):
        model.eval()
        for quantizer in quantizers:
            quantizer.train()
        for batch in batches:
            model(*(batch if isinstance(batch, tuple) else (batch,)))
    return model


def quantized_layers(model: nn.Module) -> Iterator[tuple[str, QuantLayerMixin]]:
    """(name, layer) of every quantized layer of ``model``, in data-flow order."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLayerMixin)]
    yield from sorted(found, key=lambda item: item[1].flow_index)


def flow_order(
    model: nn.Module, config: QuantConfig, example_input: object
) -> tuple[dict[nn.Module, str], list[nn.Module], set[nn.Module]]:
    """The layers ``config`` selects: their names, the data-flow order, and the input readers.

    Returns (module -> name for every layer of the selected types, the modules ``example_input``
    reaches in first-call order, the modules that read the network input).
    """
    wanted = tuple(t for t, name in _TYPE_NAMES.items() if name in config.layer_types)
    names = {m: n for n, m in model.named_modules() if type(m) in wanted}
    order, reads_input = _trace(model, list(names), example_input)
    return names, order, reads_input


@torch.no_grad()
def _trace(
    model: nn.Module, candidates: list[nn.Module], example_input: object
) -> tuple[list[nn.Module], set[nn.Module]]:
    """Run ``example_input`` once; return candidates in first-call order and the input readers."""
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    inputs = {id(a) for a in args if isinstance(a, torch.Tensor)}
    order: list[nn.Module] = []
    reads_input: set[nn.Module] = set()

    def record(module: nn.Module, layer_args: tuple) -> None:
        if module not in order:
            order.append(module)
        if layer_args and id(layer_args[0]) in inputs:
            reads_input.add(module)

    handles = [m.register_forward_pre_hook(record) for m in candidates]
    try:
        with modes_restored(model):
            model.eval()
            model(*args)
    finally:
        for handle in handles:
            handle.remove()
    if order:
        reads_input.add(order[0])
    return order, reads_input


@contextlib.contextmanager
def modes_restored(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's train / eval flag on exit."""
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        for module, training in modes.items():
            module.train(training)
