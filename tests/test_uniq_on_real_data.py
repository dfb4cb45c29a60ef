"""UNIQ on real data: scikit-learn's 8x8 digits, a small CNN, float then gradual UNIQ.

Claims: at 4-bit weights and 8-bit activations UNIQ loses at most 0.5 points of validation
accuracy against the float model; at 2-bit weights it beats post-training k-quantile
quantization of the same float model. The validation split holds 359 images, so one image is
0.28 points.
"""

import copy
import logging

import pytest
import torch
from torch import nn

from uniq_quant import GradualSchedule, QuantConfig, calibrate, convert, prepare
from uniq_quant.data import build_datasets

logger = logging.getLogger(__name__)
BATCH = 64


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, ...]:
    train, val, _ = build_datasets("digits")
    tensors = []
    for dataset in (train, val):
        images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
        tensors += [torch.stack(images), torch.tensor(labels)]
    return tuple(tensors)


@pytest.fixture(scope="module")
def float_model(digits) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    _fit(model, digits, epochs=12, lr=0.05)
    return model


def _fit(model, digits, epochs: int, lr: float, schedule: GradualSchedule | None = None) -> None:
    x, y = digits[0], digits[1]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), BATCH):
            batch = order[start : start + BATCH]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
        cosine.step()
        if schedule is not None:
            schedule.epoch()


@torch.no_grad()
def _accuracy(model, digits) -> float:
    model.eval()
    return (model(digits[2]).argmax(1) == digits[3]).float().mean().item() * 100


def _uniq(float_model, digits, bits: int) -> float:
    torch.manual_seed(1)
    model = prepare(copy.deepcopy(float_model), QuantConfig(bits, 8), digits[0][:1])
    schedule = GradualSchedule(model, stage_length=2, final_length=2)
    _fit(model, digits, schedule.total_length, lr=0.01, schedule=schedule)
    return _accuracy(convert(model), digits)


def _post_training(float_model, digits, bits: int) -> float:
    model = prepare(copy.deepcopy(float_model), QuantConfig(bits, 8), digits[0][:1])
    calibrate(model, digits[0].split(256))
    return _accuracy(convert(model), digits)


def test_uniq_w4a8_within_half_a_point_of_float(float_model, digits, capsys) -> None:
    """Gradual UNIQ at W4A8 loses at most 0.5 points of validation accuracy."""
    float_top1 = _accuracy(float_model, digits)
    uniq_top1 = _uniq(float_model, digits, 4)
    with capsys.disabled():
        print(f"\ndigits: float {float_top1:.2f}%, UNIQ W4A8 {uniq_top1:.2f}%")
    assert float_top1 > 95
    assert uniq_top1 >= float_top1 - 0.5


def test_uniq_w2a8_beats_post_training_kquantile(float_model, digits, capsys) -> None:
    """At 2-bit weights UNIQ fine-tuning beats post-training k-quantile quantization."""
    uniq_top1 = _uniq(float_model, digits, 2)
    ptq_top1 = _post_training(float_model, digits, 2)
    with capsys.disabled():
        print(f"\ndigits: UNIQ W2A8 {uniq_top1:.2f}%, post-training k-quantile {ptq_top1:.2f}%")
    assert uniq_top1 > ptq_top1
