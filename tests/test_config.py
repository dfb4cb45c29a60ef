"""QuantConfig: validation on construction, per-layer bits, and a lossless dict round trip."""

import pytest

from uniq_quant import QuantConfig


def test_defaults_are_w4a8_gaussian_per_tensor() -> None:
    """The default is the paper's W4A8 k-quantile setting."""
    config = QuantConfig()
    assert (config.weight_bits, config.act_bits, config.fit) == (4, 8, "gaussian")
    assert not config.per_channel and config.layer_types == ("conv1d", "conv2d", "linear")


def test_layer_bits_resolution_order() -> None:
    """weight_bits, then first / last layer bits, then overrides (the last match wins)."""
    config = QuantConfig(
        weight_bits=3,
        first_layer_bits="float",
        last_layer_bits=8,
        overrides={"layer4.*": 2, "layer4.1.*": 5},
    )
    assert config.layer_bits("conv1", 0, 10) == "float"
    assert config.layer_bits("layer1.0.conv1", 1, 10) == 3
    assert config.layer_bits("fc", 9, 10) == 8
    assert config.layer_bits("layer4.0.conv1", 5, 10) == 2
    assert config.layer_bits("layer4.1.conv1", 6, 10) == 5


def test_dict_round_trip() -> None:
    """from_dict(to_dict()) rebuilds an equal config."""
    config = QuantConfig(weight_bits=2, act_bits=None, overrides={"fc": "float"}, fit="empirical")
    assert QuantConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight_bits": 12}, r"weight_bits must be an integer in 1\.\.8, got 12"),
        ({"act_bits": 1}, r"act_bits .* 2\.\.8, got 1"),
        ({"first_layer_bits": 0}, r"first_layer_bits must be an integer in 1\.\.8 or 'float'"),
        ({"last_layer_bits": "half"}, r"last_layer_bits .* got 'half'"),
        ({"fit": "cauchy"}, r"fit must be one of 'gaussian', 'empirical', got 'cauchy'"),
        ({"layer_types": ("lstm",)}, r"layer_types entries must be one of"),
        ({"layer_types": ()}, r"layer_types is empty"),
        ({"overrides": {"fc": 16}}, r"overrides\['fc'\] must be an integer in 1\.\.8"),
        ({"act_percentile": 0.0}, r"act_percentile must lie in \(0, 1\]"),
    ],
)
def test_bad_fields_name_the_field_and_the_allowed_values(kwargs: dict, message: str) -> None:
    """A wrong field raises a ValueError naming it and what is allowed."""
    with pytest.raises(ValueError, match=message):
        QuantConfig(**kwargs)


def test_unknown_dict_key_is_an_error() -> None:
    """from_dict rejects keys QuantConfig does not have, naming them."""
    with pytest.raises(ValueError, match=r"unknown QuantConfig field\(s\) \['bitwidth'\]"):
        QuantConfig.from_dict({"bitwidth": 4})


def test_overrides_must_be_a_mapping() -> None:
    """A list of overrides is a TypeError."""
    with pytest.raises(TypeError, match="overrides must map"):
        QuantConfig(overrides=["fc"])
