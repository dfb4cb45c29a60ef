"""prepare / convert on any nn.Module: our own small models and torchvision families."""

import copy

import pytest
import torch
import torchvision
from torch import nn

from uniq_quant import (
    GradualSchedule,
    QuantConfig,
    QuantLinear,
    calibrate,
    convert,
    format_report,
    layer_report,
    prepare,
    quantized_layers,
)


class ReversedRegistration(nn.Module):
    """Registers its layers in the opposite order to the one data flows through them."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.middle = nn.Conv2d(4, 8, 3)
        self.stem = nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.middle(torch.relu(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


def test_order_is_data_flow_not_registration() -> None:
    """flow_index follows the forward pass: stem, middle, head."""
    model = prepare(ReversedRegistration(), QuantConfig(), torch.randn(1, 1, 8, 8))
    assert [name for name, _ in quantized_layers(model)] == ["stem", "middle", "head"]


def test_network_input_is_not_quantized_and_others_are() -> None:
    """The layer reading the network input has no input quantizer; the others have act_bits."""
    model = prepare(ReversedRegistration(), QuantConfig(act_bits=6), torch.randn(1, 1, 8, 8))
    assert model.stem.input_quantizer is None
    assert model.middle.input_quantizer.bits == 6 and model.head.input_quantizer.bits == 6
    assert all(layer.mode == "float" for _, layer in quantized_layers(model))


def test_bits_follow_first_last_and_overrides() -> None:
    """First/last layer bits and name overrides apply; 'float' leaves the torch layer in place."""
    config = QuantConfig(weight_bits=3, first_layer_bits=8, overrides={"head": "float"})
    model = prepare(ReversedRegistration(), config, torch.randn(1, 1, 8, 8))
    assert model.stem.weight_quantizer.bits == 8 and model.middle.weight_quantizer.bits == 3
    assert type(model.head) is nn.Linear


def test_act_bits_none_keeps_activations_float() -> None:
    """With act_bits=None no layer has an input quantizer."""
    model = prepare(ReversedRegistration(), QuantConfig(act_bits=None), torch.randn(1, 1, 8, 8))
    assert all(layer.input_quantizer is None for _, layer in quantized_layers(model))


def test_prepare_changes_no_state_and_keeps_parameters() -> None:
    """Tracing runs in eval without gradient: BatchNorm statistics and modes are untouched."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 1, 6, 6))
    model.train()
    before = copy.deepcopy(model.state_dict())
    weight = model[0].weight
    prepare(model, QuantConfig(), torch.randn(1, 1, 6, 6))
    assert model.training and model[1].training
    assert model[0].weight is weight
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_prepare_errors() -> None:
    """Unmatched overrides, a second prepare and a model with nothing to quantize are errors."""
    with pytest.raises(ValueError, match=r"override pattern\(s\) \['layer9\.\*'\] match no"):
        prepare(
            ReversedRegistration(), QuantConfig(overrides={"layer9.*": 2}), torch.randn(1, 1, 8, 8)
        )
    model = prepare(ReversedRegistration(), QuantConfig(), torch.randn(1, 1, 8, 8))
    with pytest.raises(RuntimeError, match="already prepared"):
        prepare(model, QuantConfig(), torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="no conv1d/conv2d/linear layer"):
        prepare(nn.Sequential(nn.ReLU()), QuantConfig(), torch.randn(1, 3))
    with pytest.raises(TypeError, match="QuantConfig"):
        prepare(ReversedRegistration(), {"weight_bits": 4}, torch.randn(1, 1, 8, 8))


def test_convert_errors() -> None:
    """convert needs a prepared model whose activation ranges were calibrated."""
    with pytest.raises(RuntimeError, match="prepare\\(\\) the model first"):
        convert(ReversedRegistration())
    model = prepare(ReversedRegistration(), QuantConfig(), torch.randn(1, 1, 8, 8))
    with pytest.raises(RuntimeError, match="has no activation range yet"):
        convert(model)


def test_convert_freezes_everything_and_is_deterministic() -> None:
    """After convert every layer is quant, frozen, has no weight gradient; eval repeats exactly."""
    model = prepare(ReversedRegistration(), QuantConfig(weight_bits=2), torch.randn(1, 1, 8, 8))
    model(torch.randn(4, 1, 8, 8))
    convert(model)
    for _, layer in quantized_layers(model):
        assert layer.mode == "quant" and layer.weight_quantizer.frozen
        assert not layer.weight.requires_grad
        assert layer.input_quantizer is None or layer.input_quantizer.frozen
    model.eval()
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(model(x), model(x))
    rows = layer_report(model)
    assert [r.distinct <= 4 for r in rows] == [True] * 3
    assert "QuantConv2d" in format_report(rows)


def test_vit_attention_projection_stays_float() -> None:
    """nn.MultiheadAttention reads out_proj.weight directly, so out_proj is left alone."""
    model = _small_vit()
    prepare(model, QuantConfig(), torch.randn(1, 3, 32, 32))
    kinds = {type(m) for m in model.modules()}
    assert QuantLinear in kinds
    attention = model.encoder.layers[0].self_attention
    assert not isinstance(attention.out_proj, QuantLinear)


def _small_vit() -> nn.Module:
    return torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=10,
    )


TORCHVISION_FAMILIES = [
    "resnet18",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "densenet121",
    "convnext_tiny",
    "regnet_x_400mf",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "mnasnet0_5",
    "vit",
]


@pytest.mark.parametrize("name", TORCHVISION_FAMILIES)
def test_torchvision_family_prepare_train_convert(name: str) -> None:
    """Float mode equals the original exactly; a noisy step and convert give finite outputs."""
    if name == "vit":
        original, size = _small_vit(), 32
    else:
        original, size = torchvision.models.get_model(name, weights=None, num_classes=10), 64
    model = copy.deepcopy(original)
    x = torch.randn(2, 3, size, size)
    prepare(model, QuantConfig(weight_bits=4, act_bits=8), x[:1])
    original.eval()
    model.eval()
    assert torch.equal(model(x), original(x))

    # one noisy training step with everything in noise mode
    model.train()
    schedule = GradualSchedule(model, num_stages=1)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([1, 2]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and schedule.stage == 0

    convert(model)
    model.eval()
    out = model(x)
    assert torch.isfinite(out).all() and out.shape == (2, 10)


def test_calibrate_sets_ranges_and_leaves_batchnorm_alone() -> None:
    """calibrate tracks activation ranges in eval mode: BatchNorm statistics do not move."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
    prepare(model, QuantConfig(), torch.randn(1, 1, 8, 8))
    mean = model[1].running_mean.clone()
    calibrate(model, [torch.randn(4, 1, 8, 8) for _ in range(3)])
    assert torch.equal(model[1].running_mean, mean) and model.training
    assert bool(model[3].input_quantizer.calibrated)
    convert(model)
