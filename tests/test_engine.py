"""The training engine: optimizer parameter groups and the learning-rate schedule."""

import math

import pytest
from torch import nn

from uniq_quant.train.engine import build_lr_schedule, build_optimizer


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_no_weight_decay_on_batchnorm_and_biases(name: str) -> None:
    """Weights of 2+ dimensions decay; BatchNorm weights and all biases do not."""
    model = _model()
    optimizer = build_optimizer(model, name, lr=0.1, momentum=0.9, weight_decay=0.01)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, BatchNorm weight and bias, linear bias


def _learning_rates(kind: str, total_steps: int, warmup_steps: int) -> tuple[list, float]:
    """The learning rate at every step of a schedule with base rate 1, and the one after it."""
    optimizer = build_optimizer(_model(), "sgd", lr=1.0, momentum=0.0, weight_decay=0.0)
    schedule = build_lr_schedule(optimizer, kind, total_steps, warmup_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return lrs, optimizer.param_groups[0]["lr"]


def test_warmup_then_cosine_to_zero() -> None:
    """The multiplier rises linearly over the warm-up, then follows a cosine to zero."""
    lrs, last = _learning_rates("cosine", total_steps=12, warmup_steps=2)
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[7] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert last == pytest.approx(0.0)


def test_step_decay_divides_by_ten_at_half_and_three_quarters() -> None:
    """The step schedule is 1, then 0.1 from half-way, then 0.01 from three quarters."""
    lrs, _ = _learning_rates("step", total_steps=8, warmup_steps=0)
    assert lrs == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])


def test_settings_reject_bad_values() -> None:
    """TrainSettings name the flag and what it accepts."""
    from uniq_quant.train import settings_from_dict

    with pytest.raises(ValueError, match="--optimizer must be one of 'sgd', 'adamw'"):
        settings_from_dict({"optimizer": "lion"})
    with pytest.raises(ValueError, match="--batch-size must be an integer >= 1"):
        settings_from_dict({"batch_size": 0})
    with pytest.raises(ValueError, match="unknown setting 'epochs'"):
        settings_from_dict({"epochs": 3})
    with pytest.raises(ValueError, match="--stage-epochs must be an integer"):
        settings_from_dict({"stage_epochs": "two"})
