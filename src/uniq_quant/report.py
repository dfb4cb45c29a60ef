"""A per-layer table of a prepared model: what is quantized, how, and at which stage."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from uniq_quant.prepare import quantized_layers

_COLUMNS = ("name", "type", "weight_shape", "bits", "act_bits", "mode", "stage", "distinct")


@dataclass(frozen=True)
class LayerRow:
    """One quantized layer: ``distinct`` counts the values of its effective (eval) weight."""

    name: str
    type: str
    weight_shape: tuple[int, ...]
    bits: int
    act_bits: int | None
    mode: str
    stage: int | None
    distinct: int


@torch.no_grad()
def layer_report(model: nn.Module) -> list[LayerRow]:
    """One row per quantized layer of ``model``, in data-flow order."""
    rows = []
    for name, layer in quantized_layers(model):
        quantizer = layer.weight_quantizer
        training = quantizer.training
        quantizer.eval()  # the deployed weight: noise mode quantizes in eval
        weight = quantizer(layer.weight)
        quantizer.train(training)
        act = layer.input_quantizer
        rows.append(
            LayerRow(
                name=name,
                type=type(layer).__name__,
                weight_shape=tuple(weight.shape),  # lazily loaded layers have no weight
                bits=quantizer.bits,
                act_bits=None if act is None else act.bits,
                mode=layer.mode,
                stage=layer.stage,
                distinct=int(weight.unique().numel()),
            )
        )
    return rows


def format_report(rows: list[LayerRow]) -> str:
    """``rows`` as an aligned plain-text table with a header line."""
    cells = [list(_COLUMNS)]
    for row in rows:
        values = [getattr(row, column) for column in _COLUMNS]
        values[2] = "x".join(map(str, row.weight_shape))
        cells.append(["-" if v is None else str(v) for v in values])
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells)
    return "\n".join(line.rstrip() for line in lines)
