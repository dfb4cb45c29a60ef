"""BOPs: the paper's per-layer formula, the bits each layer counts, and the ``bops`` command.

Per output position a layer costs m n k^2 (b_a b_w + b_a + b_w + log2(n k^2)); the hand-computed
cases pick n k^2 a power of two so that every expected value is an exact integer.
"""

import json
import logging

import pytest
import torch
import torchvision
from torch import nn

from uniq_quant.bops import BopsReport, bops_per_position, count_bops
from uniq_quant.cli import main
from uniq_quant.nn import QuantConv2d, QuantLinear


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


def _quantize_all(model: nn.Module, weight_bits: int, act_bits: int) -> nn.Module:
    """Swap every Conv2d / Linear of ``model`` for its quantized twin, in place."""
    twins = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}
    for name, module in list(model.named_modules()):
        if type(module) in twins:
            parent_name, _, child = name.rpartition(".")
            quantized = twins[type(module)].from_float(
                module, weight_bits=weight_bits, act_bits=act_bits
            )
            setattr(model.get_submodule(parent_name), child, quantized)
    return model


def test_formula_matches_the_paper() -> None:
    """bops_per_position is m n k^2 (b_a b_w + b_a + b_w + log2(n k^2))."""
    # n=4, m=8, k^2=4: 128 MACs of (2*2 + 2 + 2 + log2(16) = 12) bit operations
    assert bops_per_position(4, 8, 4, weight_bits=2, act_bits=2) == 128 * 12
    # log2(n k^2) need not be an integer: n=3, k^2=9 gives log2(27)
    expected = 64 * 27 * (8 * 4 + 8 + 4 + 4.754887502163468)
    assert bops_per_position(3, 64, 9, 4, 8) == pytest.approx(expected, rel=1e-12)


def test_small_conv_exact() -> None:
    """A lone 2x2 conv: MACs and BOPs by hand; the first layer's input counts at 8 bits."""
    model = nn.Sequential(nn.Conv2d(4, 8, kernel_size=2))
    report = count_bops(model, (4, 5, 5), weight_bits=3, act_bits=5)
    (row,) = report.rows
    # output 4x4 = 16 positions; MACs = m n k^2 * 16 = 8 * 4 * 4 * 16 = 2048
    assert (row.name, row.type, row.positions, row.macs) == ("0", "Conv2d", 16, 2048)
    # first layer: act bits = first_input_bits = 8 (act_bits=5 is for later layers);
    # per MAC 8*3 + 8 + 3 + log2(4 * 4) = 24 + 11 + 4 = 39
    assert (row.weight_bits, row.act_bits) == (3, 8)
    assert row.bops == 2048 * 39 == 79872
    assert report.total_bops == 79872 and report.total_macs == 2048
    assert report.gbops == 79872 / 1e9


def test_depthwise_conv_exact() -> None:
    """A depthwise conv has n = in_channels / groups = 1 input channel per filter."""
    model = nn.Sequential(nn.Conv2d(2, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 4, groups=8))
    report = count_bops(model, (2, 6, 6))
    pointwise, depthwise = report.rows
    # pointwise, first layer, float: 36 positions, MACs 8 * 2 * 1 * 36 = 576,
    # per MAC 32*8 + 32 + 8 + log2(2) = 297
    assert (pointwise.positions, pointwise.macs, pointwise.act_bits) == (36, 576, 8)
    assert pointwise.bops == 576 * 297 == 171072
    # depthwise 4x4 on 6x6: 3x3 = 9 positions, MACs 8 * 1 * 16 * 9 = 1152,
    # per MAC 32*32 + 32 + 32 + log2(1 * 16) = 1092
    assert (depthwise.positions, depthwise.macs, depthwise.act_bits) == (9, 1152, 32)
    assert depthwise.bops == 1152 * 1092 == 1257984
    assert report.total_bops == 171072 + 1257984


def test_linear_layer_exact_per_leading_position() -> None:
    """A linear layer is a 1x1 conv with one output position per sample and leading index."""
    layer = QuantLinear(16, 10, weight_bits=2, act_bits=4)
    # one sample: 1 position, MACs 10 * 16 = 160; the layer quantizes its own input to 4 bits,
    # per MAC 4*2 + 4 + 2 + log2(16) = 18
    single = count_bops(layer, (16,)).rows[0]
    assert (single.positions, single.macs, single.act_bits, single.bops) == (1, 160, 4, 2880)
    # a sequence of 3 tokens: 3 positions, MACs 480, BOPs 480 * 18 = 8640
    tokens = count_bops(layer, (3, 16)).rows[0]
    assert (tokens.positions, tokens.macs, tokens.bops) == (3, 480, 8640)


def test_reused_layer_counts_every_call() -> None:
    """A module called twice in one forward costs its output positions of both calls."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.fc(x))

    (row,) = count_bops(Twice(), (4,)).rows
    assert (row.positions, row.macs) == (2, 2 * 16)


def test_size_bits_counts_weights_at_their_bits_and_the_rest_in_float() -> None:
    """size_bits = weights * weight bits + 32 * (biases, BatchNorm and other parameters)."""
    model = nn.Sequential(nn.Conv2d(4, 8, 2), nn.BatchNorm2d(8))
    report = count_bops(model, (4, 5, 5), weight_bits=3)
    # weight 8*4*2*2 = 128 values at 3 bits; bias 8 + BatchNorm 16 parameters at 32 bits
    assert report.size_bits == 128 * 3 + (8 + 16) * 32 == 1152
    assert report.size_bytes == 144


def test_quantized_layers_count_their_configured_bits_in_any_mode() -> None:
    """Bits come from the quantizers, whatever the mode; the model's state is left unchanged."""
    model = nn.Sequential(
        QuantConv2d(3, 4, 3, weight_bits=2, act_bits=None),
        nn.BatchNorm2d(4),
        QuantConv2d(4, 4, 3, weight_bits=5, act_bits=6),
        QuantConv2d(4, 4, 1, weight_bits=3, act_bits=None),
    )
    model.train()
    model[0].mode = "noise"
    model[2].mode = "quant"  # an input quantizer with no range would refuse to evaluate
    model[2].input_quantizer.train(False)
    flags = [m.training for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}

    report = count_bops(model, (3, 8, 8), first_input_bits=8)
    bits = [(row.weight_bits, row.act_bits) for row in report.rows]
    # no input quantizer: 8 bits for the network input, 32 (float) elsewhere
    assert bits == [(2, 8), (5, 6), (3, 32)]

    assert [m.training for m in model.modules()] == flags
    assert (model[0].mode, model[2].mode, model[2].input_quantizer.mode) == (
        "noise",
        "quant",
        "quant",
    )
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bit_overrides_apply_to_every_layer_but_the_network_input() -> None:
    """weight_bits / act_bits override quantized and float layers; the first input stays 8-bit."""
    model = nn.Sequential(
        QuantConv2d(3, 4, 3, weight_bits=2, act_bits=6),
        nn.Conv2d(4, 4, 3),
    )
    report = count_bops(model, (3, 8, 8), weight_bits=4, act_bits=4)
    assert [(row.weight_bits, row.act_bits) for row in report.rows] == [(4, 8), (4, 4)]


def test_resnet18_has_1814_million_macs(resnet18) -> None:
    """torchvision resnet18 at 224x224 costs the well-known 1.814 G multiply-accumulates."""
    report = count_bops(resnet18, (3, 224, 224))
    assert abs(report.total_macs - 1.814e9) < 0.001e9
    assert len(report.rows) == 21  # 20 convolutions and the classifier
    assert report.rows[0].name == "conv1" and report.rows[-1].name == "fc"
    assert {(row.weight_bits, row.act_bits) for row in report.rows[1:]} == {(32, 32)}


def test_float_first_layer_costs_about_2_5x_an_all_5_bit_resnet18() -> None:
    """Paper's remark: ResNet-18 at 5/5 bits with conv1 in float costs ~2.5x the all-5-bit net."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    conv1 = model.conv1
    _quantize_all(model, weight_bits=5, act_bits=5)
    all_5_bit = count_bops(model, (3, 224, 224), first_input_bits=5)

    model.conv1 = conv1  # a plain float conv again: 32-bit weights, and 32-bit input
    float_conv1 = count_bops(model, (3, 224, 224), first_input_bits=32)
    assert (float_conv1.rows[0].weight_bits, float_conv1.rows[0].act_bits) == (32, 32)
    assert {(r.weight_bits, r.act_bits) for r in float_conv1.rows[1:]} == {(5, 5)}

    ratio = float_conv1.total_bops / all_5_bit.total_bops
    print(f"float conv1 / all 5-bit ResNet-18 BOPs: {ratio:.2f}")
    assert 2.0 <= ratio <= 3.0


@pytest.mark.parametrize("bits", [0, 33, -1, 4.5, True, "8"])
@pytest.mark.parametrize("argument", ["weight_bits", "act_bits", "first_input_bits"])
def test_bad_bits_are_rejected(argument, bits) -> None:
    """Bits outside the integers 1..32 raise a ValueError naming the value and the range."""
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"1\.\.32, got"):
        count_bops(model, (2,), **{argument: bits})


@pytest.mark.parametrize("shape", [224, (), (3, 0, 8), (3, -2), (3.0, 8), ("3", 8), (True, 2)])
def test_bad_input_shape_is_rejected(shape) -> None:
    """input_shape must be a tuple of positive ints; the error shows the expected form."""
    with pytest.raises(ValueError, match=r"e\.g\. \(3, 224, 224\)"):
        count_bops(nn.Sequential(nn.Linear(2, 2)), shape)


def test_not_a_module_is_rejected() -> None:
    """A model that is not an nn.Module raises TypeError."""
    with pytest.raises(TypeError, match=r"nn\.Module"):
        count_bops(lambda x: x, (2,))


def test_layer_never_called_is_reported(caplog) -> None:
    """A Linear that does not run in forward is left out of the rows, with a warning."""

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.spare = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    with caplog.at_level(logging.WARNING, logger="uniq_quant.bops"):
        report = count_bops(Unused(), (2,))
    assert [row.name for row in report.rows] == ["used"]
    assert "spare" in caplog.text


def test_report_renders_a_table_and_json() -> None:
    """format_table lists every layer and the totals; to_dict survives a JSON round trip."""
    model = nn.Sequential(nn.Conv2d(2, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 4, groups=8))
    report = count_bops(model, (2, 6, 6))
    assert isinstance(report, BopsReport)
    table = report.format_table()
    assert table.count("Conv2d") == 2 and "GBOPs" in table
    data = json.loads(json.dumps(report.to_dict()))
    assert data["total_bops"] == report.total_bops == 1429056
    assert data["total_macs"] == 1728 and data["input_shape"] == [2, 6, 6]
    assert [row["name"] for row in data["rows"]] == ["0", "2"]


def test_cli_prints_the_table_in_gbops(capsys) -> None:
    """``uniq-quant bops`` exits 0 and prints one line per layer and the GBOPs total."""
    argv = ["bops", "--model", "tv:resnet18", "--weight-bits", "4", "--act-bits", "8"]
    assert main([*argv, "--input-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "GBOPs" in out and "layer4.1.conv2" in out and "W4 A8" in out


def test_cli_json_is_valid(capsys) -> None:
    """--json prints a JSON report; --in-channels and --num-classes shape the model."""
    argv = ["bops", "--model", "tv:resnet18", "--input-size", "32", "--json"]
    assert main([*argv, "--in-channels", "1", "--num-classes", "10"]) == 0
    data = json.loads(capsys.readouterr().out)
    conv1, fc = data["rows"][0], data["rows"][-1]
    # conv1 7x7 stride 2 on 32x32 -> 16x16 positions, one input channel
    assert conv1["macs"] == 64 * 1 * 49 * 16 * 16 and conv1["act_bits"] == 8
    assert fc["macs"] == 512 * 10
    assert data["weight_bits"] == 32 and data["gbops"] > 0


@pytest.mark.parametrize("spec", ["tv:resnet1800", "resnet18", "tv:"])
def test_cli_unknown_model_exits_2(spec, caplog) -> None:
    """An unknown model name exits 2 and says how to list the names."""
    assert main(["bops", "--model", spec]) == 2
    assert "list_models" in caplog.text


def test_cli_bad_bits_exit_2(capsys) -> None:
    """Bits outside 1..32 are an argparse error (exit 2) naming the range."""
    with pytest.raises(SystemExit) as exit_info:
        main(["bops", "--model", "tv:resnet18", "--weight-bits", "40"])
    assert exit_info.value.code == 2
    assert "1..32" in capsys.readouterr().err
