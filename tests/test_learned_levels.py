"""Learned levels: frozen layers keep their codes and train their k levels."""

import copy

import pytest
import torch
from torch import nn

import uniq_quant as uq
from uniq_quant.functional import dequantize, quantize
from uniq_quant.prepare import quantized_layers
from uniq_quant.quantizers import WeightQuantizer
from uniq_quant.train.engine import build_optimizer


def _frozen(bits: int = 2, per_channel: bool = False, channels: int = 6) -> WeightQuantizer:
    torch.manual_seed(0)
    quantizer = WeightQuantizer(bits, per_channel, learn_levels=True, channels=channels)
    quantizer.freeze(torch.randn(channels, 5))
    return quantizer


def _float_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )


def _model(learn_levels: bool = True, per_channel: bool = False) -> nn.Module:
    config = uq.QuantConfig(
        weight_bits=2, act_bits=8, learn_levels=learn_levels, per_channel=per_channel
    )
    return uq.prepare(_float_model(), config, torch.randn(1, 1, 8, 8))


def _train(model: nn.Module, steps: int, schedule: uq.GradualSchedule | None = None) -> None:
    torch.manual_seed(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()


@pytest.mark.parametrize("per_channel", [False, True])
def test_shift_is_zero_at_first_so_learned_levels_start_as_the_paper(per_channel: bool) -> None:
    """A fresh frozen quantizer with learned levels computes exactly the k-quantile weights."""
    w = torch.randn(6, 5)
    quantizer = WeightQuantizer(2, per_channel, learn_levels=True, channels=6)
    quantizer.freeze(w)
    shape = (6, 4) if per_channel else (4,)
    assert quantizer.level_shift.shape == shape
    assert torch.equal(quantizer(w), dequantize(*quantize(w, 2, per_channel=per_channel)))


@pytest.mark.parametrize("per_channel", [False, True])
def test_gradient_of_a_level_is_the_sum_over_its_weights(per_channel: bool) -> None:
    """d loss / d shift_i = sqrt(k / N) * the sum of d loss / d w over the weights of code i."""
    quantizer = _frozen(per_channel=per_channel)
    upstream = torch.randn(6, 5)
    (quantizer(torch.zeros(6, 5)) * upstream).sum().backward()

    codes = quantizer.codes.long()
    expected = torch.zeros_like(quantizer.level_shift)
    if per_channel:
        expected.scatter_add_(1, codes, upstream)
    else:
        expected.scatter_add_(0, codes.flatten(), upstream.flatten())
    group = 5 if per_channel else 30  # weights per fit group
    expected *= (4 / group) ** 0.5
    torch.testing.assert_close(quantizer.level_shift.grad, expected, rtol=0, atol=1e-6)


def test_trained_levels_move_but_codes_and_value_count_do_not() -> None:
    """Training a frozen layer changes its levels, never its codes; at most k values remain."""
    model = _model()
    schedule = uq.GradualSchedule(model, num_stages=1, stage_length=1, unit="step")
    _train(model, 1, schedule)  # the one noisy step, then every layer is frozen
    layers = [layer for _, layer in quantized_layers(model)]
    codes = [layer.weight_quantizer.codes.clone() for layer in layers]
    levels = [layer.weight_quantizer.levels.clone() for layer in layers]

    _train(model, 5)
    for layer, before_codes, before_levels in zip(layers, codes, levels, strict=True):
        quantizer = layer.weight_quantizer
        assert torch.equal(quantizer.codes, before_codes)
        assert torch.equal(quantizer.levels, before_levels)  # the k-quantile levels stay
        assert quantizer.level_shift.abs().max() > 0
        assert quantizer(layer.weight).unique().numel() <= 4


@pytest.mark.parametrize("per_channel", [False, True])
def test_converted_model_and_its_file_agree_bit_for_bit(tmp_path, per_channel: bool) -> None:
    """The packed file stores the learned levels: eager and lazy loads equal the model exactly."""
    model = _model(per_channel=per_channel)
    schedule = uq.GradualSchedule(model, num_stages=1, stage_length=1, unit="step")
    _train(model, 4, schedule)
    uq.convert(model)
    learned = [layer.weight_quantizer.effective_levels for _, layer in _layers(model)]
    assert all(
        not torch.equal(levels, layer.weight_quantizer.levels)
        for levels, (_, layer) in zip(learned, _layers(model), strict=True)
    )

    model.eval()
    x = torch.randn(5, 1, 8, 8)
    path = uq.save_quantized(model, tmp_path / "m.safetensors", input_shape=(1, 8, 8))
    for lazy in (False, True):
        loaded = uq.load_quantized(path, _float_model(), lazy=lazy)
        assert torch.equal(loaded(x), model(x))


def test_convert_keeps_the_learned_levels() -> None:
    """convert() refreezes each layer from its unchanged weight and keeps its learned shift."""
    model = _model()
    schedule = uq.GradualSchedule(model, num_stages=1, stage_length=1, unit="step")
    _train(model, 3, schedule)
    model.eval()
    x = torch.randn(4, 1, 8, 8)
    before = model(x)
    uq.convert(model)
    assert torch.equal(model(x), before)


def test_leaving_quant_mode_zeroes_the_shift() -> None:
    """The shift belongs to the cached codes: dropping them (another mode) zeroes it."""
    quantizer = _frozen()
    with torch.no_grad():
        quantizer.level_shift.fill_(0.5)
    quantizer.mode = "noise"
    assert not quantizer.frozen and torch.equal(quantizer.level_shift, torch.zeros(4))


def test_state_dict_round_trip_and_float_checkpoint() -> None:
    """The shift travels in state_dict; a state without one (float) loads as a zero shift."""
    model = _model()
    schedule = uq.GradualSchedule(model, num_stages=1, stage_length=1, unit="step")
    _train(model, 3, schedule)
    other = _model()
    other.load_state_dict(model.state_dict())
    for (_, mine), (_, theirs) in zip(_layers(model), _layers(other), strict=True):
        assert torch.equal(mine.weight_quantizer.level_shift, theirs.weight_quantizer.level_shift)

    float_state = {k: v for k, v in model.state_dict().items() if "weight_quantizer" not in k}
    result = other.load_state_dict(float_state, strict=False)
    assert not [k for k in result.missing_keys if k.endswith("level_shift")]
    assert all(not layer.weight_quantizer.level_shift.any() for _, layer in _layers(other))

    plain = _model(learn_levels=False)
    with pytest.raises(RuntimeError, match="level_shift"):
        plain.load_state_dict(model.state_dict())


def test_optimizer_holds_the_shift_without_weight_decay() -> None:
    """The shift is a parameter from prepare() on, and build_optimizer never decays it."""
    model = _model(per_channel=True)
    optimizer = build_optimizer(model, "adamw", 1e-3, 0.9, 0.1)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    shifts = [layer.weight_quantizer.level_shift for _, layer in _layers(model)]
    assert shifts and all(s.dim() == 2 for s in shifts)
    assert not decayed & {id(s) for s in shifts}


def test_config_rejects_a_non_boolean_switch() -> None:
    """learn_levels (like per_channel and act_noise) must be a bool, named in the error."""
    with pytest.raises(TypeError, match="learn_levels must be True or False, got 'yes'"):
        uq.QuantConfig(learn_levels="yes")


def _layers(model: nn.Module) -> list:
    return list(quantized_layers(model))


def test_resume_from_state_dicts_continues_exactly() -> None:
    """Model, optimizer and schedule states restored in the order ``train`` uses (schedule built,
    then states loaded) continue as the uninterrupted run: learned levels survive the resume."""

    def batches(start: int, stop: int):
        for step in range(start, stop):
            generator = torch.Generator().manual_seed(step)
            yield torch.randn(16, 1, 8, 8, generator=generator), torch.arange(16) % 3

    def run(model, optimizer, schedule, start: int, stop: int) -> None:
        model.train()
        for x, y in batches(start, stop):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            schedule.step()

    def fresh():
        model = _model()
        schedule = uq.GradualSchedule(model, num_stages=2, stage_length=2, unit="step")
        return model, torch.optim.AdamW(model.parameters(), lr=1e-2), schedule

    torch.manual_seed(2)
    model, optimizer, schedule = fresh()
    run(model, optimizer, schedule, 0, 6)  # both layers frozen after 4 steps
    saved = copy.deepcopy([model.state_dict(), optimizer.state_dict(), schedule.state_dict()])
    run(model, optimizer, schedule, 6, 9)

    other, other_optimizer, other_schedule = fresh()
    other.load_state_dict(saved[0])
    other_optimizer.load_state_dict(saved[1])
    other_schedule.load_state_dict(saved[2])
    run(other, other_optimizer, other_schedule, 6, 9)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(model.eval()(x), other.eval()(x))
    assert all(layer.weight_quantizer.level_shift.any() for _, layer in _layers(other))


def test_evaluation_decodes_once_until_the_shift_changes(monkeypatch) -> None:
    """Without gradient the learned weight is looked up once and reused; an update of the shift
    (an optimizer step) makes the next call look it up again, with the new levels."""
    from uniq_quant.quantizers import weight as weight_module

    quantizer = _frozen()
    calls = []
    real = weight_module.dequantize
    monkeypatch.setattr(weight_module, "dequantize", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        first = quantizer(torch.zeros(6, 5))
        assert torch.equal(quantizer(torch.zeros(6, 5)), first) and len(calls) == 1
        quantizer.level_shift.add_(0.25)
        assert torch.equal(quantizer(torch.zeros(6, 5)), first + 0.25) and len(calls) == 2
