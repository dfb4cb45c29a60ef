"""GradualSchedule: UNIQ's block-by-block quantize-and-freeze schedule (paper, section 3.2).

The quantized layers, in data-flow order, are split into ``num_stages`` contiguous blocks
B_0..B_{N-1} (by default one block per layer, as the paper). In stage i:
* blocks before i are quantized and frozen: codes cached, no weight gradient, so no optimizer
  update (torch optimizers skip parameters whose ``grad`` is None, momentum and weight decay
  included);
* block i trains with noise injection (noise mode), or, with ``emulation="rounding"`` (beyond
  the paper), with the k-quantile quantizer itself and a straight-through gradient (quant mode,
  not frozen: the codes are recomputed after every update);
* blocks after i are in float mode and train as usual.
Each layer's input quantizer follows its layer's mode. After the last stage every layer is
frozen; an optional final phase of ``final_length`` trains what is still trainable (BatchNorm,
biases, activation ranges, and the levels of layers that learn them). ``num_stages=1``
quantizes everything at once (the ablation).

A stage lasts ``stage_length`` units, counted by ``epoch()`` or ``step()`` calls depending on
``unit``. The position is state: ``state_dict`` / ``load_state_dict`` resume a run exactly.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from uniq_quant._validation import check_choice
from uniq_quant.nn import QuantLayerMixin
from uniq_quant.prepare import quantized_layers

logger = logging.getLogger(__name__)

UNITS = ("epoch", "step")
EMULATIONS = ("noise", "rounding")  # how the current block emulates its quantizer
_STAGE_MODES = {"noise": "noise", "rounding": "quant"}


class GradualSchedule:
    """Block-by-block noise-then-freeze schedule over a prepared model.

    Args:
        model: a model returned by ``prepare``.
        num_stages: number of blocks, 1..number of quantized layers (None: one per layer).
        stage_length: epochs or steps per stage, >= 1.
        unit: ``"epoch"`` (advance on ``epoch()``) or ``"step"`` (advance on ``step()``).
        final_length: epochs or steps of the final all-quantized phase, >= 0.
        emulation: ``"noise"`` (UNIQ) or ``"rounding"`` (straight-through k-quantile rounding)
            for the current block.

    Example:
        >>> schedule = GradualSchedule(model, num_stages=4, stage_length=2)
        >>> for epoch in range(schedule.total_length):
        ...     train_one_epoch(model)
        ...     schedule.epoch()
    """

    def __init__(
        self,
        model: nn.Module,
        num_stages: int | None = None,
        stage_length: int = 1,
        unit: str = "epoch",
        final_length: int = 0,
        emulation: str = "noise",
    ) -> None:
        named = list(quantized_layers(model))
        if not named:
            raise RuntimeError("GradualSchedule found no quantized layer: prepare() the model")
        count = len(named)
        num_stages = count if num_stages is None else num_stages
        if isinstance(num_stages, bool) or not isinstance(num_stages, int):
            raise ValueError(f"num_stages must be an integer in 1..{count}, got {num_stages!r}")
        if not 1 <= num_stages <= count:
            raise ValueError(
                f"num_stages must be in 1..{count} (the number of quantized layers), "
                f"got {num_stages}"
            )
        _check_length(stage_length, "stage_length", minimum=1)
        _check_length(final_length, "final_length", minimum=0)
        self.unit = check_choice(unit, UNITS, "schedule unit")
        self.emulation = check_choice(emulation, EMULATIONS, "schedule emulation")
        self.stage_length = stage_length
        self.final_length = final_length
        self.blocks = _split(named, num_stages)
        self.counter = 0
        self._apply()

    @property
    def num_stages(self) -> int:
        """Number of blocks (noisy stages)."""
        return len(self.blocks)

    @property
    def total_length(self) -> int:
        """Epochs or steps from the first stage to the end of the final phase."""
        return self.num_stages * self.stage_length + self.final_length

    @property
    def stage(self) -> int:
        """Current stage: 0..num_stages-1 while blocks train, num_stages once all are frozen."""
        return min(self.counter // self.stage_length, self.num_stages)

    @property
    def finished(self) -> bool:
        """True once ``total_length`` units have passed."""
        return self.counter >= self.total_length

    def epoch(self) -> bool:
        """Count one finished epoch (if the unit is epochs); True when the stage changed."""
        return self._advance() if self.unit == "epoch" else False

    def step(self) -> bool:
        """Count one optimizer step (if the unit is steps); True when the stage changed."""
        return self._advance() if self.unit == "step" else False

    def stage_names(self, stage: int) -> list[str]:
        """Names of the layers in block ``stage``."""
        return [name for name, _ in self.blocks[stage]]

    def state_dict(self) -> dict[str, Any]:
        """The position and shape of the schedule."""
        return {
            "counter": self.counter,
            "blocks": [self.stage_names(i) for i in range(self.num_stages)],
            "stage_length": self.stage_length,
            "unit": self.unit,
            "final_length": self.final_length,
            "emulation": self.emulation,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``'s position; the schedule's shape must match this one's."""
        mine = self.state_dict()
        state = {"emulation": "noise", **state}  # saved before rounding existed
        for key in ("blocks", "stage_length", "unit", "final_length", "emulation"):
            if state.get(key) != mine[key]:
                raise ValueError(
                    f"the saved schedule has {key}={state.get(key)!r} but this one has "
                    f"{mine[key]!r}; resume with the settings the run was started with"
                )
        self.counter = int(state["counter"])
        self._apply()

    def _advance(self) -> bool:
        before = self.stage
        self.counter += 1
        if self.stage == before:
            return False
        self._apply()
        if self.stage < self.num_stages:
            logger.info("quantization stage %d of %d", self.stage + 1, self.num_stages)
        else:
            logger.info("every layer is quantized and frozen")
        return True

    def _apply(self) -> None:
        """Set every layer's mode, cache and gradient for the current stage."""
        stage = self.stage
        for index, block in enumerate(self.blocks):
            for _, layer in block:
                layer.stage = index
                if index < stage:
                    _freeze(layer)
                    continue
                layer.mode = _STAGE_MODES[self.emulation] if index == stage else "float"
                layer.weight_quantizer.unfreeze()  # rounding: quant mode, never a stale cache
                layer.weight.requires_grad_(True)


def _freeze(layer: QuantLayerMixin) -> None:
    """Freeze ``layer`` unless it already is (a loaded cache alone does not count)."""
    if layer.mode != "quant" or not layer.weight_quantizer.frozen or layer.weight.requires_grad:
        layer.freeze()
    layer.weight.grad = None


def _split(named: list, num_stages: int) -> list[list]:
    """Split ``named`` into ``num_stages`` contiguous blocks whose sizes differ by at most 1."""
    size, extra = divmod(len(named), num_stages)
    blocks, start = [], 0
    for i in range(num_stages):
        end = start + size + (1 if i < extra else 0)
        blocks.append(named[start:end])
        start = end
    return blocks


def _check_length(value: object, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
