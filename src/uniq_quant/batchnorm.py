"""Re-estimate the BatchNorm statistics of a model whose weights changed after training.

BatchNorm layers normalize with running estimates of their input's mean and variance, tracked
during training. Under UNIQ those are the statistics of noisy weights (noise mode) or of weights
that kept moving; once the weights are frozen at their levels the network computes something
else. Unless some training with every layer frozen follows (a final phase), the stale estimates
cost accuracy: at 2 bits, one-shot UNIQ runs of ResNet-20 on Fashion-MNIST lost 19 points to
them on average over three seeds (benchmarks/batchnorm.py).

``reestimate_batchnorm`` replaces each running mean and variance by the plain average over the
given batches of the batch mean and of the unbiased batch variance (torch's cumulative average,
``momentum=None``), with every module but the BatchNorm layers in eval mode: activation ranges,
dropout and quantizers are left as they are. Nothing is learned; only the running statistics
(and ``num_batches_tracked``) change, and only of the layers the batches reach: a layer that
only training runs (an auxiliary head) keeps its statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from uniq_quant.prepare import modes_restored

logger = logging.getLogger(__name__)

_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that track running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable[object]) -> int:
    """Recompute every BatchNorm running mean and variance over ``batches``; returns their count.

    Args:
        model: any module (a converted UNIQ model, typically); its train / eval flags are
            restored on return.
        batches: model inputs: tensors, or tuples of positional arguments; at least one.

    Returns:
        The number of batches averaged (0 when ``model`` has no BatchNorm layer: nothing to do).

    Raises:
        ValueError: ``batches`` is empty. The statistics are restored as they were when a
        forward pass fails, so an interrupted re-estimation loses nothing.
    """
    layers = batchnorm_layers(model)
    if not layers:
        logger.info("no BatchNorm layer with running statistics: nothing to re-estimate")
        return 0
    saved = [({name: getattr(m, name).clone() for name in _STATISTICS}, m.momentum) for m in layers]
    count = 0
    with modes_restored(model):
        try:
            model.eval()
            for layer in layers:
                layer.reset_running_stats()
                layer.momentum = None  # cumulative average: every batch counts the same
                layer.train()
            for batch in batches:
                model(*(batch if isinstance(batch, tuple) else (batch,)))
                count += 1
            if count == 0:
                raise ValueError(
                    "reestimate_batchnorm needs at least one batch of inputs; pass training batches"
                )
        except BaseException:
            _restore(layers, saved, [True] * len(layers))
            raise
        finally:
            for layer, (_, momentum) in zip(layers, saved, strict=True):
                layer.momentum = momentum

    # a layer no batch reached (a branch only training runs, say) keeps what it had
    unreached = [int(layer.num_batches_tracked) == 0 for layer in layers]
    _restore(layers, saved, unreached)
    if any(unreached):
        logger.info(
            "%d BatchNorm layers were not reached and keep their statistics", sum(unreached)
        )
    logger.info(
        "re-estimated %d BatchNorm layers over %d batches", len(layers) - sum(unreached), count
    )
    return count


def _restore(layers: list, saved: list, which: list[bool]) -> None:
    """Copy the ``saved`` statistics back into the ``layers`` that ``which`` selects."""
    for layer, (statistics, _), chosen in zip(layers, saved, which, strict=True):
        if chosen:
            for name, value in statistics.items():
                getattr(layer, name).copy_(value)
