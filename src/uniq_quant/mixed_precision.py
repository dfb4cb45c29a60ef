"""Mixed precision: one weight width per layer, chosen to fit a BOPs budget.

Fewer bits make a layer cheaper and perturb the network more, by different amounts per layer.
``plan_bits`` measures, for every layer l it plans and every candidate width b, the divergence

    s_l(b) = mean over samples of KL( softmax f(x) || softmax f_{l,b}(x) )        (``"kl"``)

or the relative output error ||f(x) - f_{l,b}(x)||^2 / ||f(x)||^2 (``"mse"``), where f is the
float network and f_{l,b} the same network with layer l's weights alone quantized at b bits by
the config's quantizer (k-quantile or empirical, per tensor or per channel), activations in
float. It then picks one width per layer,

    minimize  sum_l s_l(b_l)   subject to   fixed + sum_l BOPs_l(b_l) <= budget,

taking the divergences as additive, the usual approximation of sensitivity-based searches.
BOPs_l(b) is ``count_bops``'s price of layer l at b-bit weights and its configured input bits;
``fixed`` is the cost of the layers the plan does not choose for (those whose bits the config
sets with first / last layer bits or overrides, and those kept in float).

``choose_bits`` solves that multiple-choice knapsack by dynamic programming over the budget
cut into ``resolution`` units, each layer's extra cost over its cheapest width rounded up to
whole units; since rounding up adds under one unit per layer, the best plans of up to
``resolution`` + L units are checked against the true costs, best first. The plan never exceeds
the budget and is at least as good as the optimum of the rounded-up costs; the finer
``resolution``, the closer it comes to the exact optimum.

Example:
    >>> plan = plan_bits(model, QuantConfig(act_bits=8), example, batches, budget_gbops=0.05)
    >>> prepare(model, plan.apply(QuantConfig(act_bits=8)), example)
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from uniq_quant._validation import check_bits, check_choice
from uniq_quant.bops import count_bops
from uniq_quant.config import QuantConfig
from uniq_quant.functional import dequantize, quantize
from uniq_quant.prepare import flow_order, prepare, quantized_layers

logger = logging.getLogger(__name__)

METRICS = ("kl", "mse")
DEFAULT_CANDIDATES = (2, 3, 4, 6, 8)
_GIGA = 1e9


@dataclass(frozen=True)
class LayerChoice:
    """The width chosen for one layer.

    Attributes:
        name: the layer's qualified name.
        bits: its weight bits.
        gbops: its GBOPs per input sample at those bits.
        divergence: its measured divergence at those bits (``s_l(b)``).
    """

    name: str
    bits: int
    gbops: float
    divergence: float


@dataclass(frozen=True)
class BitsPlan:
    """Weight bits per layer under a GBOPs budget.

    Attributes:
        layers: the planned layers in data-flow order.
        fixed_gbops: GBOPs per sample of the layers the plan leaves as the config sets them.
        budget_gbops: the budget the plan was made for.
        candidates: the widths it chose from.
        metric: ``kl`` or ``mse``.
    """

    layers: tuple[LayerChoice, ...]
    fixed_gbops: float
    budget_gbops: float
    candidates: tuple[int, ...]
    metric: str

    @property
    def bits(self) -> dict[str, int]:
        """Layer name -> weight bits of every planned layer."""
        return {layer.name: layer.bits for layer in self.layers}

    @property
    def gbops(self) -> float:
        """GBOPs per input sample of the whole planned network."""
        return self.fixed_gbops + sum(layer.gbops for layer in self.layers)

    @property
    def divergence(self) -> float:
        """The predicted divergence: the sum of the chosen layers' divergences."""
        return sum(layer.divergence for layer in self.layers)

    def apply(self, config: QuantConfig) -> QuantConfig:
        """``config`` with the planned bits added as overrides that match each name exactly."""
        exact = {_exact_pattern(name): bits for name, bits in self.bits.items()}
        return dataclasses.replace(config, overrides={**config.overrides, **exact})

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready values; ``from_dict`` rebuilds the plan."""
        data = dataclasses.asdict(self)
        data["candidates"] = list(self.candidates)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BitsPlan:
        layers = tuple(LayerChoice(**row) for row in data["layers"])
        values = {**data, "layers": layers, "candidates": tuple(data["candidates"])}
        return cls(**values)

    def format_table(self) -> str:
        """One line per planned layer, then the totals against the budget."""
        width = max([len("layer"), *(len(layer.name) for layer in self.layers)])
        header = f"{'layer':<{width}}  {'W':>2}  {'GBOPs':>9}  {self.metric + ' divergence':>15}"
        lines = [header, "-" * len(header)]
        for layer in self.layers:
            lines.append(
                f"{layer.name:<{width}}  {layer.bits:>2}  {layer.gbops:>9.4f}  "
                f"{layer.divergence:>15.3e}"
            )
        mean_bits = sum(layer.bits for layer in self.layers) / max(1, len(self.layers))
        lines.append("-" * len(header))
        lines.append(
            f"{self.gbops:.4f} GBOPs of a {self.budget_gbops:.4f} budget "
            f"({self.fixed_gbops:.4f} in layers not planned); {len(self.layers)} layers, "
            f"mean {mean_bits:.2f} bits, predicted {self.metric} divergence {self.divergence:.3e}"
        )
        return "\n".join(lines)


def _exact_pattern(name: str) -> str:
    """An fnmatch pattern that matches ``name`` alone (``*``, ``?`` and ``[`` bracketed)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def weight_bits_label(summary: Mapping[str, Any]) -> str:
    """A run summary's weight bits for labels: ``weight_bits``, or ``mix`` for a budget plan."""
    return "mix" if summary.get("gbops_budget") is not None else str(summary["weight_bits"])


def choose_bits(
    costs: Sequence[Mapping[int, float]],
    divergences: Sequence[Mapping[int, float]],
    budget: float,
    resolution: int = 10_000,
) -> list[int]:
    """One width per layer minimizing the summed divergence with the summed cost <= ``budget``.

    Args:
        costs: per layer, width -> cost (BOPs, or any additive unit).
        divergences: per layer, width -> divergence, the same widths as ``costs``.
        budget: the largest total cost allowed, in the unit of ``costs``.
        resolution: number of units the budget above the cheapest plan is cut into (the
            search costs layers x widths x resolution); finer is closer to the exact optimum.

    Returns:
        The chosen width of every layer, in order, whose true summed cost is <= ``budget``.
        Among choices of equal divergence the cheaper one wins.

    Raises:
        ValueError: mismatched inputs, or ``budget`` below the cheapest plan (the message
            gives that plan's cost).
    """
    if len(costs) != len(divergences) or not costs:
        raise ValueError(
            f"costs and divergences must hold one mapping per layer each, got {len(costs)} "
            f"and {len(divergences)}"
        )
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be an integer >= 1, got {resolution!r}")
    options = []
    for index, (cost, divergence) in enumerate(zip(costs, divergences, strict=True)):
        widths = sorted(cost)
        if not widths or sorted(divergence) != widths:
            raise ValueError(
                f"layer {index}: costs and divergences must have the same non-empty widths, "
                f"got {widths} and {sorted(divergence)}"
            )
        options.append([(w, float(cost[w]), float(divergence[w])) for w in widths])

    # 1. the cheapest plan, and the room left above it
    cheapest = sum(min(c for _, c, _ in layer) for layer in options)
    room = float(budget) - cheapest
    if not math.isfinite(budget) or room < -1e-9 * max(1.0, abs(cheapest)):
        raise ValueError(
            f"the budget {budget!r} is below the cheapest plan ({cheapest!r}, every layer at "
            "its fewest bits): raise the budget or offer fewer bits"
        )
    unit = max(room, 0.0) / resolution

    # 2. best[u] = least divergence of the layers so far with extra cost <= u units; rounding
    # each layer up adds less than a unit, so up to one unit per layer may still fit in truth
    capacity = resolution + len(options)
    best = np.zeros(capacity + 1)
    picks = []
    for layer in options:
        low = min(c for _, c, _ in layer)
        new = np.full(capacity + 1, np.inf)
        new_cost = np.full(capacity + 1, np.inf)
        pick = np.full(capacity + 1, -1, dtype=np.int64)
        for choice, (_, cost, divergence) in enumerate(layer):
            steps = _units(cost - low, unit)
            if steps is None or steps > capacity:
                continue
            shifted = np.full(capacity + 1, np.inf)
            shifted[steps:] = best[: capacity + 1 - steps] + divergence
            better = (shifted < new) | ((shifted == new) & (cost < new_cost))
            new[better], new_cost[better], pick[better] = shifted[better], cost, choice
        best = new
        picks.append(pick)

    # 3. from the most units down (divergence only rises), the first plan whose true cost fits
    for end_units in range(capacity, -1, -1):
        chosen, extra, u = [], 0.0, end_units
        for layer, pick in zip(reversed(options), reversed(picks), strict=True):
            width, cost, _ = layer[int(pick[u])]
            low = min(c for _, c, _ in layer)
            chosen.append(width)
            extra += cost - low
            u -= _units(cost - low, unit)
        if extra <= room + 1e-12 * max(1.0, abs(budget)):
            return chosen[::-1]
    raise AssertionError("unreachable: the cheapest plan always fits")  # pragma: no cover


def _units(extra: float, unit: float) -> int | None:
    """``extra`` cost in whole budget units, rounded up; None when no room fits it."""
    if extra <= 0:
        return 0
    return math.ceil(extra / unit - 1e-9) if unit > 0 else None


@torch.no_grad()
def layer_divergences(
    model: nn.Module,
    names: Sequence[str],
    candidates: Sequence[int],
    batches: Sequence[tuple],
    method: str,
    per_channel: bool,
    metric: str = "kl",
) -> dict[str, dict[int, float]]:
    """s_l(b) of every layer in ``names`` at every width in ``candidates``.

    ``model`` runs in eval mode on every batch once as it is (the reference) and once per layer
    and width with that layer's ``weight`` replaced by its quantized values (through
    ``torch.func.functional_call``: no parameter changes). ``batches`` are tuples of positional
    model arguments; the output must be one tensor (class scores on its last dimension for
    ``"kl"``).
    """
    check_choice(metric, METRICS, "divergence metric")
    modules = dict(model.named_modules())
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        references = [_output(model(*batch), metric) for batch in batches]
        result: dict[str, dict[int, float]] = {}
        for index, name in enumerate(names):
            weight = modules[name].weight
            result[name] = {}
            for bits in candidates:
                replaced = {
                    f"{name}.weight": dequantize(*quantize(weight, bits, method, per_channel))
                }
                total = 0.0
                for batch, reference in zip(batches, references, strict=True):
                    output = _output(functional_call(model, replaced, batch), metric)
                    total += _divergence(reference, output, metric)
                result[name][bits] = total / len(batches)
            logger.info(
                "sensitivity %d/%d %s: %s",
                index + 1,
                len(names),
                name,
                ", ".join(f"{b} bits {v:.2e}" for b, v in result[name].items()),
            )
    finally:
        for module, training in modes.items():
            module.train(training)
    return result


def _output(output: object, metric: str) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"plan_bits needs a model that returns one tensor, got {type(output).__name__}; "
            "wrap the model so that it returns its class scores"
        )
    output = output.float().flatten(0, -2) if output.dim() > 1 else output.float()[None]
    return torch.log_softmax(output, dim=-1) if metric == "kl" else output


def _divergence(reference: torch.Tensor, output: torch.Tensor, metric: str) -> float:
    """Mean KL(reference || output) over rows of log-probabilities, or the relative error."""
    if metric == "kl":
        kl = torch.nn.functional.kl_div(output, reference, log_target=True, reduction="sum")
        return float(kl) / reference.shape[0]
    return float((output - reference).square().sum() / reference.square().sum().clamp_min(1e-30))


def plan_bits(
    model: nn.Module,
    config: QuantConfig,
    example_input: torch.Tensor,
    batches: Iterable[object],
    budget_gbops: float,
    candidates: Sequence[int] = DEFAULT_CANDIDATES,
    metric: str = "kl",
    resolution: int = 10_000,
) -> BitsPlan:
    """Weight bits per layer that fit ``budget_gbops`` with the least measured divergence.

    Args:
        model: the float model (not prepared); it is not changed: the plan works on a deep
            copy, so planning holds the model's memory twice.
        config: the quantization settings the plan is for: layer types, activation bits,
            fit and granularity are used as they are; layers whose bits ``first_layer_bits``,
            ``last_layer_bits`` or ``overrides`` set keep those bits and are not planned.
        example_input: one input tensor (1, C, ...), as for ``prepare``; it also fixes the
            input shape the BOPs are counted at.
        batches: a few model inputs (tensors, or tuples of positional arguments) to measure
            the divergences on; a handful of training batches is enough.
        budget_gbops: the GBOPs per input sample the planned network may cost.
        candidates: the weight widths to choose from, each in 1..8.
        metric: ``kl`` (classifiers) or ``mse``; see the module docstring.
        resolution: cost units of the exact search (``choose_bits``).

    Returns:
        A BitsPlan; ``plan.apply(config)`` is the config to ``prepare`` the model with.

    Raises:
        ValueError: a budget below the cheapest plan (the message gives it), empty or invalid
            candidates or batches, or no layer left to plan.
    """
    _check_budget_value(budget_gbops)
    widths = _check_candidates(candidates)
    check_choice(metric, METRICS, "plan_bits metric")
    inputs = [b if isinstance(b, tuple) else (b,) for b in batches]
    if not inputs:
        raise ValueError("plan_bits needs at least one batch to measure the divergences on")

    # 1. the layers to plan and what each costs at each width; what the others cost
    setup = _Setup.build(model, config, example_input, widths)
    setup.require(budget_gbops)
    shadow, planned, fixed = setup.shadow, setup.planned, setup.fixed_bops

    # 2. how much each layer at each width moves the output, then the exact choice
    method = "kquantile" if config.fit == "gaussian" else "empirical"
    logger.info("measuring %d layers at %s bits on %d batches", len(planned), widths, len(inputs))
    divergence = layer_divergences(
        shadow, planned, widths, inputs, method, config.per_channel, metric
    )
    costs = [setup.costs[name] for name in planned]
    try:
        bits = choose_bits(
            costs, [divergence[n] for n in planned], budget_gbops * _GIGA - fixed, resolution
        )
    except ValueError:  # a budget within rounding of the cheapest plan
        raise ValueError(setup.below_cheapest(budget_gbops)) from None
    layers = tuple(
        LayerChoice(name, b, setup.costs[name][b] / _GIGA, divergence[name][b])
        for name, b in zip(planned, bits, strict=True)
    )
    plan = BitsPlan(layers, fixed / _GIGA, float(budget_gbops), widths, metric)
    logger.info(
        "bits plan: %.4f GBOPs of a %.4f budget, %s",
        plan.gbops,
        budget_gbops,
        ", ".join(f"{name} {bits}" for name, bits in plan.bits.items()),
    )
    return plan


def gbops_range(
    model: nn.Module,
    config: QuantConfig,
    example_input: torch.Tensor,
    candidates: Sequence[int] = DEFAULT_CANDIDATES,
) -> tuple[float, float]:
    """GBOPs per sample of the cheapest and of the dearest plan ``plan_bits`` could make.

    Cheap (no divergence is measured): check a budget with it before training for one.
    """
    widths = _check_candidates(candidates)
    return _Setup.build(model, config, example_input, widths).gbops_range()


def check_budget(
    model: nn.Module,
    config: QuantConfig,
    example_input: torch.Tensor,
    budget_gbops: float,
    candidates: Sequence[int] = DEFAULT_CANDIDATES,
) -> None:
    """Raise the ValueError ``plan_bits`` would raise for a budget no plan fits, and nothing else.

    Also checks ``budget_gbops`` and ``candidates`` as ``plan_bits`` does.
    """
    _check_budget_value(budget_gbops)
    widths = _check_candidates(candidates)
    _Setup.build(model, config, example_input, widths).require(budget_gbops)


@dataclass(frozen=True)
class _Setup:
    """A prepared copy of the model, the layers to plan and their prices per width (BOPs)."""

    shadow: nn.Module
    planned: list[str]
    costs: dict[str, dict[int, float]]
    fixed_bops: float
    widths: tuple[int, ...]

    @classmethod
    def build(
        cls, model: nn.Module, config: QuantConfig, example: object, widths: tuple[int, ...]
    ) -> _Setup:
        if not isinstance(example, torch.Tensor):
            raise TypeError(
                f"plan_bits needs one example input tensor (BOPs are counted at its shape), got "
                f"{type(example).__name__}"
            )
        names, order, _ = flow_order(model, config, example)
        position = {names[m]: i for i, m in enumerate(order)}
        shadow = prepare(copy.deepcopy(model), config, example)
        planned = [
            name
            for name, _ in quantized_layers(shadow)
            if not config.sets_bits(name, position[name], len(order))
        ]
        if not planned:
            raise ValueError(
                "every quantized layer has its bits set by first_layer_bits, last_layer_bits or "
                "overrides: there is nothing left to plan"
            )
        shape = tuple(example.shape[1:])
        price = {b: _layer_bops(shadow, shape, b) for b in widths}
        own = _layer_bops(shadow, shape)
        costs = {name: {b: price[b][name] for b in widths} for name in planned}
        fixed = sum(bops for name, bops in own.items() if name not in costs)
        return cls(shadow, planned, costs, fixed, widths)

    def gbops_range(self) -> tuple[float, float]:
        lowest = self.fixed_bops + sum(min(c.values()) for c in self.costs.values())
        highest = self.fixed_bops + sum(max(c.values()) for c in self.costs.values())
        return lowest / _GIGA, highest / _GIGA

    def require(self, budget_gbops: float) -> None:
        """Raise a ValueError that gives the cheapest plan when ``budget_gbops`` is below it."""
        if budget_gbops < self.gbops_range()[0] * (1 - 1e-12):
            raise ValueError(self.below_cheapest(budget_gbops))

    def below_cheapest(self, budget_gbops: float) -> str:
        return (
            f"a budget of {budget_gbops!r} GBOPs is below the cheapest plan, "
            f"{self.gbops_range()[0]:.4f} GBOPs with every planned layer at {self.widths[0]} "
            "bits: raise the budget, offer fewer bits in the candidates or lower the activation "
            "bits"
        )


def _check_budget_value(budget_gbops: object) -> None:
    number = isinstance(budget_gbops, int | float) and not isinstance(budget_gbops, bool)
    if not (number and math.isfinite(budget_gbops) and budget_gbops > 0):
        raise ValueError(f"budget_gbops must be a positive number, got {budget_gbops!r}")


def _check_candidates(candidates: Sequence[int]) -> tuple[int, ...]:
    widths = tuple(sorted({check_bits(b, what="plan_bits candidates") for b in candidates}))
    if not widths:
        raise ValueError("plan_bits needs at least one candidate width, e.g. (2, 3, 4, 6, 8)")
    return widths


def _layer_bops(model: nn.Module, shape: tuple[int, ...], bits: int | None = None) -> dict:
    """Layer name -> BOPs per sample, every counted layer at ``bits`` (None: its own bits)."""
    return {row.name: row.bops for row in count_bops(model, shape, weight_bits=bits).rows}
