"""QuantConfig: what ``prepare`` quantizes, at how many bits, and how.

Per-layer weight bits are resolved in this order, each step overriding the one before:
1. ``weight_bits`` for every quantized layer;
2. ``first_layer_bits`` / ``last_layer_bits`` for the first / last layer in data-flow order;
3. ``overrides``: fnmatch patterns on module names (``"layer4.*"``, ``"fc"``) mapped to bits or
   to ``"float"`` (keep that layer in full precision); the last matching pattern wins.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from uniq_quant._validation import ACT_BITS, check_bits, check_choice
from uniq_quant.functional import FITS

FLOAT = "float"  # the bits value that keeps a layer in full precision
LAYER_TYPES = ("conv1d", "conv2d", "linear")

Bits = int | str  # 1..8, or FLOAT


@dataclass(frozen=True)
class QuantConfig:
    """Settings of UNIQ quantization, validated on construction.

    Attributes:
        weight_bits: bits per weight of every quantized layer, 1..8.
        act_bits: bits of every quantized layer's input except the network input, 2..8, or
            None to keep activations in float.
        first_layer_bits: bits of the first layer in data-flow order (None: ``weight_bits``;
            ``"float"``: not quantized).
        last_layer_bits: the same for the last layer.
        per_channel: one distribution fit per output channel instead of per tensor.
        fit: ``gaussian`` (the paper's k-quantile) or ``empirical`` (the tensor's own quantiles).
        act_noise: inject uniform noise into activations of noisy layers instead of rounding.
        learn_levels: frozen layers keep their codes and train their k levels (beyond the
            paper; the paper's frozen layers are fixed).
        act_percentile: quantile of |x| tracked as each activation's clipping range.
        layer_types: which layer types to quantize, from ``LAYER_TYPES``.
        overrides: module-name pattern -> bits or ``"float"``; a pattern must match a layer.
    """

    weight_bits: int = 4
    act_bits: int | None = 8
    first_layer_bits: Bits | None = None
    last_layer_bits: Bits | None = None
    per_channel: bool = False
    fit: str = "gaussian"
    act_noise: bool = False
    learn_levels: bool = False
    act_percentile: float = 0.999
    layer_types: tuple[str, ...] = LAYER_TYPES
    overrides: Mapping[str, Bits] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_bits(self.weight_bits, what="QuantConfig.weight_bits")
        for name in ("per_channel", "act_noise", "learn_levels"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(
                    f"QuantConfig.{name} must be True or False, got {getattr(self, name)!r}"
                )
        if self.act_bits is not None:
            check_bits(self.act_bits, ACT_BITS, "QuantConfig.act_bits (or None for float)")
        for name in ("first_layer_bits", "last_layer_bits"):
            value = getattr(self, name)
            if value is not None:
                _check_layer_bits(value, f"QuantConfig.{name}")
        check_choice(self.fit, FITS, "QuantConfig.fit")
        if not 0 < self.act_percentile <= 1:
            raise ValueError(
                f"QuantConfig.act_percentile must lie in (0, 1], got {self.act_percentile!r}"
            )
        types = tuple(self.layer_types)
        if not types:
            raise ValueError(f"QuantConfig.layer_types is empty; choose from {LAYER_TYPES}")
        for kind in types:
            check_choice(kind, LAYER_TYPES, "QuantConfig.layer_types entries")
        object.__setattr__(self, "layer_types", types)
        if not isinstance(self.overrides, Mapping):
            raise TypeError(
                f"QuantConfig.overrides must map name patterns to bits, got {self.overrides!r}"
            )
        for pattern, bits in self.overrides.items():
            _check_layer_bits(bits, f"QuantConfig.overrides[{pattern!r}]")
        object.__setattr__(self, "overrides", dict(self.overrides))

    def layer_bits(self, name: str, position: int, count: int) -> Bits:
        """Weight bits (or ``"float"``) of layer ``name``, ``position``-th of ``count`` in flow."""
        bits: Bits = self.weight_bits
        if position == 0 and self.first_layer_bits is not None:
            bits = self.first_layer_bits
        if position == count - 1 and self.last_layer_bits is not None:
            bits = self.last_layer_bits
        for pattern, value in self.overrides.items():
            if fnmatch.fnmatchcase(name, pattern):
                bits = value
        return bits

    def sets_bits(self, name: str, position: int, count: int) -> bool:
        """True when ``first_layer_bits``, ``last_layer_bits`` or an override decides the bits of
        layer ``name`` (``position``-th of ``count``), rather than ``weight_bits``."""
        return (
            (position == 0 and self.first_layer_bits is not None)
            or (position == count - 1 and self.last_layer_bits is not None)
            or any(fnmatch.fnmatchcase(name, pattern) for pattern in self.overrides)
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON- and YAML-serializable settings; ``from_dict`` rebuilds the config."""
        data = asdict(self)
        data["layer_types"] = list(self.layer_types)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantConfig:
        """Rebuild from ``to_dict`` output; an unknown key is an error that names it."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown QuantConfig field(s) {unknown}; known: {sorted(known)}")
        values = dict(data)
        if "layer_types" in values:
            values["layer_types"] = tuple(values["layer_types"])
        return cls(**values)


def unmatched_overrides(config: QuantConfig, names: list[str]) -> list[str]:
    """The override patterns of ``config`` that match none of ``names``."""
    return [p for p in config.overrides if not fnmatch.filter(names, p)]


def _check_layer_bits(value: object, what: str) -> None:
    if value == FLOAT:
        return
    try:
        check_bits(value, what=what)
    except ValueError:
        raise ValueError(f"{what} must be an integer in 1..8 or 'float', got {value!r}") from None
