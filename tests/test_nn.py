"""Quantized layers: drop-in torch layers whose float mode is exactly the torch layer."""

import pytest
import torch
from torch import nn

from uniq_quant.functional import dequantize, quantize
from uniq_quant.nn import QuantConv1d, QuantConv2d, QuantLinear

CASES = [
    (nn.Conv1d(4, 6, 3, padding=1), QuantConv1d, (2, 4, 10)),
    (nn.Conv2d(3, 8, 3, stride=2, padding=1), QuantConv2d, (2, 3, 9, 9)),
    (nn.Conv2d(8, 8, 3, groups=8, bias=False), QuantConv2d, (2, 8, 7, 7)),
    (nn.Conv2d(8, 4, 1, groups=2), QuantConv2d, (2, 8, 5, 5)),
    (nn.Linear(12, 5), QuantLinear, (3, 12)),
]


@pytest.mark.parametrize(("float_layer", "cls", "shape"), CASES)
def test_float_mode_reproduces_torch_exactly(float_layer, cls, shape) -> None:
    """From a float layer, float mode gives bit-identical outputs and gradients."""
    layer = cls.from_float(float_layer, weight_bits=4, act_bits=8)
    assert layer.weight is float_layer.weight
    x = torch.randn(shape)
    out, ref = layer(x), float_layer(x)
    assert torch.equal(out, ref)
    out.sum().backward()
    grad = layer.weight.grad.clone()
    layer.weight.grad = None
    ref.sum().backward()
    assert torch.equal(grad, layer.weight.grad)


@pytest.mark.parametrize(("float_layer", "cls", "shape"), CASES)
def test_float_checkpoint_loads_with_unchanged_keys(float_layer, cls, shape) -> None:
    """A float state_dict loads strictly: no missing and no unexpected keys."""
    layer = cls.from_float(float_layer, weight_bits=3, act_bits=8)
    fresh = cls.from_float(type(float_layer)(**_args(float_layer)), weight_bits=3, act_bits=8)
    result = fresh.load_state_dict(float_layer.state_dict(), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(fresh.weight, layer.weight)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize(("float_layer", "cls", "shape"), CASES)
def test_quant_mode_uses_quantized_weight(float_layer, cls, shape, per_channel) -> None:
    """Quant mode computes the torch layer with dequantize(quantize(weight))."""
    layer = cls.from_float(float_layer, weight_bits=2, per_channel=per_channel)
    layer.mode = "quant"
    q = dequantize(*quantize(layer.weight, 2, per_channel=per_channel))
    reference = type(float_layer)(**_args(float_layer))
    reference.load_state_dict({**float_layer.state_dict(), "weight": q})
    x = torch.randn(shape)
    assert torch.equal(layer(x), reference(x))


def test_noise_mode_changes_output_and_eval_is_deterministic() -> None:
    """Training noise mode differs per call; eval gives the same output every call."""
    layer = QuantConv2d(3, 8, 3, weight_bits=3, act_bits=8)
    x = torch.randn(2, 3, 8, 8)
    layer(x)  # calibrates the input range
    layer.mode = "noise"
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    assert torch.equal(layer(x), layer(x))


def test_weight_is_never_written() -> None:
    """Forward in any mode leaves the float weight parameter bit-for-bit unchanged."""
    layer = QuantLinear(16, 4, weight_bits=2, act_bits=4)
    before = layer.weight.detach().clone()
    for mode in ("float", "noise", "quant"):
        layer.mode = mode
        layer(torch.randn(5, 16)).sum().backward()
    layer.freeze()
    layer(torch.randn(5, 16))
    assert torch.equal(layer.weight, before)


def test_freeze_caches_codes_and_stops_the_weight_gradient() -> None:
    """freeze() quantizes once, turns off the weight gradient and keeps the bias trainable."""
    layer = QuantConv2d(4, 4, 3, weight_bits=3)
    layer.freeze()
    assert layer.weight_quantizer.frozen and not layer.weight.requires_grad
    assert layer.bias.requires_grad and layer.mode == "quant"


def test_layer_mode_sets_both_quantizers() -> None:
    """noise sets the input quantizer to quant, or to noise with act_noise; float sets float."""
    layer = QuantLinear(4, 4, act_bits=8)
    layer.mode = "noise"
    assert layer.weight_quantizer.mode == "noise" and layer.input_quantizer.mode == "quant"
    noisy = QuantLinear(4, 4, act_bits=8, act_noise=True)
    noisy.mode = "noise"
    assert noisy.input_quantizer.mode == "noise"
    noisy.mode = "float"
    assert noisy.input_quantizer.mode == "float" and noisy.weight_quantizer.mode == "float"


def test_repr_shows_settings() -> None:
    """repr names bits, mode and the quantizers' settings."""
    text = repr(QuantConv2d(3, 8, 3, weight_bits=5, act_bits=6, per_channel=True))
    for part in ("weight_bits=5", "act_bits=6", "mode=float", "per_channel", "bits=6"):
        assert part in text


def test_from_float_rejects_other_layers() -> None:
    """from_float on a layer of the wrong type names both."""
    with pytest.raises(TypeError, match="expects a Conv2d"):
        QuantConv2d.from_float(nn.Linear(3, 3))


def _args(layer: nn.Module) -> dict:
    if isinstance(layer, nn.Linear):
        return {"in_features": layer.in_features, "out_features": layer.out_features}
    return {
        "in_channels": layer.in_channels,
        "out_channels": layer.out_channels,
        "kernel_size": layer.kernel_size,
        "stride": layer.stride,
        "padding": layer.padding,
        "groups": layer.groups,
        "bias": layer.bias is not None,
    }
