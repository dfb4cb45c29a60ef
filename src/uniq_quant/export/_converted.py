"""The check every export shares: the model must be converted."""

from __future__ import annotations

from torch import nn

from uniq_quant.nn import QuantLayerMixin
from uniq_quant.prepare import quantized_layers


def converted_layers(model: nn.Module) -> list[tuple[str, QuantLayerMixin]]:
    """The quantized layers of ``model``, or RuntimeError if it is not converted."""
    layers = list(quantized_layers(model))
    if not layers:
        raise RuntimeError(
            "the model has no quantized layer: prepare(), calibrate() and convert() the model "
            "before saving or exporting it"
        )
    for name, layer in layers:
        act = layer.input_quantizer
        if layer.mode != "quant" or not layer.weight_quantizer.frozen:
            raise RuntimeError(
                f"layer {name!r} is in {layer.mode!r} mode and not frozen: convert() the model "
                "before saving or exporting it"
            )
        if act is not None and not (act.frozen and bool(act.calibrated)):
            raise RuntimeError(
                f"the input range of layer {name!r} is not frozen: convert() the model before "
                "saving or exporting it"
            )
    return layers
