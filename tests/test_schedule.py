"""GradualSchedule: blocks in data-flow order, noise-then-freeze stages, exact resume."""

import pytest
import torch
from torch import nn

from uniq_quant import GradualSchedule, QuantConfig, prepare, quantized_layers


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    return prepare(model, QuantConfig(weight_bits=3, act_bits=8), torch.randn(1, 1, 6, 6))


def _modes(model: nn.Module) -> list[str]:
    return [layer.mode for _, layer in quantized_layers(model)]


def test_default_is_one_block_per_layer_in_flow_order() -> None:
    """Without num_stages every layer is its own block, in data-flow order."""
    schedule = GradualSchedule(_model())
    assert schedule.num_stages == 4
    assert [schedule.stage_names(i) for i in range(4)] == [["0"], ["3"], ["5"], ["9"]]


def test_blocks_are_contiguous_and_balanced() -> None:
    """Four layers in three stages give blocks of sizes 2, 1, 1, in order."""
    schedule = GradualSchedule(_model(), num_stages=3)
    assert [schedule.stage_names(i) for i in range(3)] == [["0", "3"], ["5"], ["9"]]


def test_stage_modes_earlier_frozen_current_noise_later_float() -> None:
    """Stage i: earlier blocks quant and frozen, block i noise, later blocks float."""
    model = _model()
    schedule = GradualSchedule(model, stage_length=2)
    assert _modes(model) == ["noise", "float", "float", "float"]
    assert not schedule.epoch()
    assert schedule.epoch()
    assert _modes(model) == ["quant", "noise", "float", "float"]
    layers = [layer for _, layer in quantized_layers(model)]
    assert layers[0].weight_quantizer.frozen and not layers[0].weight.requires_grad
    assert layers[1].weight.requires_grad and layers[3].weight.requires_grad
    # activation quantizers follow their layer's stage
    assert layers[1].input_quantizer.mode == "quant"
    assert layers[2].input_quantizer.mode == "float"


def test_final_phase_quantizes_everything_then_finishes() -> None:
    """After the last stage every layer is frozen; the final phase then runs to the end."""
    model = _model()
    schedule = GradualSchedule(model, num_stages=2, final_length=2)
    assert schedule.total_length == 4
    for _ in range(2):
        schedule.epoch()
    assert schedule.stage == 2 and _modes(model) == ["quant"] * 4
    assert all(layer.weight_quantizer.frozen for _, layer in quantized_layers(model))
    schedule.epoch()
    assert not schedule.finished
    schedule.epoch()
    assert schedule.finished


def test_one_stage_is_everything_at_once() -> None:
    """num_stages=1 puts every layer in noise mode at once (the ablation)."""
    model = _model()
    GradualSchedule(model, num_stages=1)
    assert _modes(model) == ["noise"] * 4


def test_step_unit_ignores_epochs() -> None:
    """A step-based schedule advances on step() only."""
    model = _model()
    schedule = GradualSchedule(model, unit="step", stage_length=3)
    schedule.epoch()
    assert schedule.stage == 0
    for _ in range(3):
        schedule.step()
    assert schedule.stage == 1


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_frozen_weights_stay_bit_identical_under_momentum_and_decay(optimizer_name: str) -> None:
    """Frozen blocks' weights never change, whatever the optimizer's momentum and decay."""
    model = _model()
    schedule = GradualSchedule(model, unit="step", stage_length=3)
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    frozen_at = {}
    for _ in range(schedule.total_length):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        schedule.step()
        for name, layer in quantized_layers(model):
            if layer.weight_quantizer.frozen and name not in frozen_at:
                frozen_at[name] = layer.weight.detach().clone()
            if name in frozen_at:
                assert torch.equal(layer.weight, frozen_at[name]), name
    assert len(frozen_at) == 4


def _train(model, schedule, optimizer, steps: int) -> None:
    for _ in range(steps):
        x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        schedule.step()


def test_resume_mid_stage_matches_an_uninterrupted_run(tmp_path) -> None:
    """Stopping half-way through a stage and resuming gives bit-identical final weights."""

    def fresh():
        model = _model()
        schedule = GradualSchedule(model, unit="step", stage_length=4, final_length=2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        return model, schedule, optimizer

    torch.manual_seed(1)
    model, schedule, optimizer = fresh()
    _train(model, schedule, optimizer, schedule.total_length)
    expected = model.state_dict()

    # the same run, stopped after 6 steps (in the middle of stage 1) and saved
    torch.manual_seed(1)
    model, schedule, optimizer = fresh()
    _train(model, schedule, optimizer, 6)
    path = tmp_path / "checkpoint.pt"
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rng": torch.get_rng_state(),
        },
        path,
    )

    # a new process would rebuild everything, then load
    model, schedule, optimizer = fresh()
    state = torch.load(path, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng"])
    assert schedule.stage == 1 and _modes(model) == ["quant", "noise", "float", "float"]
    _train(model, schedule, optimizer, schedule.total_length - 6)

    resumed = model.state_dict()
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key


def test_load_state_dict_rejects_a_different_schedule() -> None:
    """Resuming with another stage length names the mismatch."""
    state = GradualSchedule(_model(), stage_length=2).state_dict()
    with pytest.raises(ValueError, match="stage_length=2 but this one has 1"):
        GradualSchedule(_model()).load_state_dict(state)


def test_bad_arguments() -> None:
    """num_stages, lengths and unit are validated with the allowed range."""
    with pytest.raises(ValueError, match=r"num_stages must be in 1\.\.4"):
        GradualSchedule(_model(), num_stages=5)
    with pytest.raises(ValueError, match="stage_length must be an integer >= 1"):
        GradualSchedule(_model(), stage_length=0)
    with pytest.raises(ValueError, match="'epoch', 'step'"):
        GradualSchedule(_model(), unit="batch")
    with pytest.raises(RuntimeError, match="prepare"):
        GradualSchedule(nn.Linear(2, 2))


def test_rounding_emulation_trains_the_current_block_on_its_quantized_weights() -> None:
    """With emulation="rounding" the current block is in quant mode, not frozen: its forward
    takes at most 2^b values that follow every weight update, its gradient is the identity."""
    model = _model()
    schedule = GradualSchedule(model, stage_length=1, emulation="rounding")
    assert _modes(model) == ["quant", "float", "float", "float"]
    layer = next(layer for _, layer in quantized_layers(model))
    assert not layer.weight_quantizer.frozen and layer.weight.requires_grad

    model.train()
    before = layer.quantized_weight().detach().clone()
    assert before.unique().numel() <= 2**3
    layer.quantized_weight().sum().backward()
    assert torch.equal(layer.weight.grad, torch.ones_like(layer.weight))
    with torch.no_grad():
        layer.weight.mul_(2)
    assert torch.equal(layer.quantized_weight(), 2 * before)  # recomputed, not a stale cache

    schedule.epoch()
    assert _modes(model) == ["quant", "quant", "float", "float"]
    assert layer.weight_quantizer.frozen and not layer.weight.requires_grad


def test_a_schedule_saved_before_rounding_existed_resumes_as_noise() -> None:
    """A state without ``emulation`` is a noise schedule; resuming it with rounding is refused."""
    state = GradualSchedule(_model()).state_dict()
    del state["emulation"]
    GradualSchedule(_model()).load_state_dict(state)
    with pytest.raises(ValueError, match="emulation='noise' but this one has 'rounding'"):
        GradualSchedule(_model(), emulation="rounding").load_state_dict(state)
    with pytest.raises(ValueError, match="'noise', 'rounding'"):
        GradualSchedule(_model(), emulation="round")
