"""Mixed precision: the exact bit choice under a budget, and plans measured on a real network."""

import itertools
import json
import random

import pytest
import torch
from torch import nn

from uniq_quant import QuantConfig, prepare
from uniq_quant.bops import count_bops
from uniq_quant.mixed_precision import (
    BitsPlan,
    check_budget,
    choose_bits,
    gbops_range,
    layer_divergences,
    plan_bits,
    weight_bits_label,
)
from uniq_quant.nn import QuantLayerMixin


def _brute_force(costs, divergences, budget):
    """Least summed divergence over every combination that fits the budget."""
    best = None
    for combo in itertools.product(*(sorted(c) for c in costs)):
        cost = sum(c[w] for c, w in zip(costs, combo, strict=True))
        value = sum(d[w] for d, w in zip(divergences, combo, strict=True))
        if cost <= budget and (best is None or value < best):
            best = value
    return best


def _random_problem(rng: random.Random, layers: int, widths=(1, 2, 3, 4, 8)):
    costs, divergences = [], []
    for _ in range(layers):
        size = rng.uniform(1, 100)
        costs.append({w: size * (w + rng.uniform(0, 0.5)) for w in widths})
        divergences.append({w: rng.uniform(0.1, 1) * 2.0 ** (-w) for w in widths})
    return costs, divergences


@pytest.mark.parametrize("seed", range(12))
def test_choose_bits_matches_brute_force_and_never_exceeds_the_budget(seed):
    rng = random.Random(seed)
    costs, divergences = _random_problem(rng, layers=rng.randint(1, 5))
    lowest = sum(min(c.values()) for c in costs)
    highest = sum(max(c.values()) for c in costs)
    budget = rng.uniform(lowest, highest)

    bits = choose_bits(costs, divergences, budget, resolution=100_000)

    cost = sum(c[w] for c, w in zip(costs, bits, strict=True))
    value = sum(d[w] for d, w in zip(divergences, bits, strict=True))
    assert cost <= budget
    assert value == pytest.approx(_brute_force(costs, divergences, budget), rel=1e-9)


@pytest.mark.parametrize("resolution", [2000, 10_000])
def test_choose_bits_finds_a_plan_that_spends_the_budget_exactly(resolution):
    # cost and divergence both scale with a layer's size, divergence convex in the bits: the
    # uniform 3-bit plan is the optimum and costs the budget to the last digit
    sizes = [3.7, 11.1, 0.9, 25.3]
    costs = [{b: s * b for b in (2, 3, 4)} for s in sizes]
    divergences = [{b: s * 4.0 ** (-b) for b in (2, 3, 4)} for s in sizes]
    budget = sum(c[3] for c in costs)

    assert choose_bits(costs, divergences, budget, resolution) == [3, 3, 3, 3]


def test_choose_bits_prefers_the_cheaper_width_on_equal_divergence():
    costs = [{2: 1.0, 4: 2.0}]
    divergences = [{2: 0.5, 4: 0.5}]

    assert choose_bits(costs, divergences, budget=10.0) == [2]


def test_choose_bits_takes_the_most_bits_when_the_budget_allows_everything():
    costs = [{b: float(b) for b in (1, 2, 8)}] * 3
    divergences = [{b: 1.0 / b for b in (1, 2, 8)}] * 3

    assert choose_bits(costs, divergences, budget=1e9) == [8, 8, 8]


def test_choose_bits_rejects_a_budget_below_the_cheapest_plan():
    costs = [{2: 5.0, 4: 9.0}, {2: 1.0, 4: 3.0}]
    divergences = [{2: 1.0, 4: 0.1}, {2: 1.0, 4: 0.1}]

    with pytest.raises(ValueError, match=r"below the cheapest plan \(6\.0"):
        choose_bits(costs, divergences, budget=5.9)


@pytest.mark.parametrize(
    ("costs", "divergences", "resolution", "match"),
    [
        ([{2: 1.0}], [], 10, "one mapping per layer"),
        ([{2: 1.0}], [{3: 1.0}], 10, "same non-empty widths"),
        ([{}], [{}], 10, "same non-empty widths"),
        ([{2: 1.0}], [{2: 1.0}], 0, "resolution must be an integer >= 1"),
    ],
)
def test_choose_bits_rejects_malformed_input(costs, divergences, resolution, match):
    with pytest.raises(ValueError, match=match):
        choose_bits(costs, divergences, 10.0, resolution)


def _network() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


@pytest.fixture
def setting():
    model = _network()
    example = torch.randn(1, 1, 8, 8)
    batches = [torch.randn(16, 1, 8, 8) for _ in range(2)]
    return model, example, batches


def _uniform_gbops(config: QuantConfig, bits: int, example: torch.Tensor) -> float:
    model = prepare(_network(), QuantConfig(weight_bits=bits, act_bits=config.act_bits), example)
    return count_bops(model, tuple(example.shape[1:])).gbops


def test_a_plan_fits_its_budget_and_the_prepared_model_costs_what_it_says(setting):
    model, example, batches = setting
    config = QuantConfig(act_bits=8)
    budget = _uniform_gbops(config, 3, example)

    plan = plan_bits(model, config, example, batches, budget, candidates=(2, 3, 4, 8))
    prepared = prepare(model, plan.apply(config), example)

    assert plan.gbops <= budget
    assert count_bops(prepared, (1, 8, 8)).gbops == pytest.approx(plan.gbops, rel=1e-12)
    assert [layer.name for layer in plan.layers] == ["0", "2", "4", "8"]
    built = {name: m.weight_quantizer.bits for name, m in prepared.named_modules() if _q(m)}
    assert built == plan.bits


def _q(module: nn.Module) -> bool:
    return isinstance(module, QuantLayerMixin)


def test_planning_leaves_the_float_model_as_it_was(setting):
    model, example, batches = setting
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()

    plan_bits(model, QuantConfig(), example, batches, budget_gbops=1.0)

    assert model.training
    assert not any(_q(m) for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_a_generous_budget_gives_every_layer_the_most_bits(setting):
    model, example, batches = setting

    plan = plan_bits(model, QuantConfig(), example, batches, budget_gbops=10.0)

    assert set(plan.bits.values()) == {8}


def test_layers_the_config_sets_are_not_planned_and_count_as_fixed_cost(setting):
    model, example, batches = setting
    config = QuantConfig(act_bits=8, first_layer_bits=8, overrides={"8": "float"})
    budget = 0.9 * plan_bits(model, config, example, batches, 10.0).gbops

    plan = plan_bits(model, config, example, batches, budget, candidates=(2, 4, 8))
    prepared = prepare(model, plan.apply(config), example)

    assert list(plan.bits) == ["2", "4"]
    assert plan.fixed_gbops > 0
    assert count_bops(prepared, (1, 8, 8)).gbops == pytest.approx(plan.gbops, rel=1e-12)
    assert prepared[0].weight_quantizer.bits == 8
    assert not _q(prepared[8])


def test_fewer_bits_move_the_output_more(setting):
    model, example, batches = setting
    shadow = prepare(model, QuantConfig(act_bits=None), example)
    inputs = [(b,) for b in batches]

    for metric in ("kl", "mse"):
        divergence = layer_divergences(shadow, ["2"], (1, 2, 8), inputs, "kquantile", False, metric)
        assert divergence["2"][1] > divergence["2"][2] > divergence["2"][8] > 0


def test_a_plan_survives_a_round_trip_through_json(setting):
    model, example, batches = setting
    plan = plan_bits(model, QuantConfig(), example, batches, budget_gbops=0.01, metric="mse")

    again = BitsPlan.from_dict(json.loads(json.dumps(plan.to_dict())))

    assert again == plan
    table = plan.format_table()
    assert "mse divergence" in table and "budget" in table and "\n8 " in table


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"budget_gbops": 1e-9}, ValueError, r"below the cheapest plan, 0\.\d+ GBOPs"),
        ({"budget_gbops": 0}, ValueError, "budget_gbops must be a positive number"),
        ({"budget_gbops": float("nan")}, ValueError, "budget_gbops must be a positive number"),
        ({"budget_gbops": 1.0, "candidates": (0, 2)}, ValueError, "candidates must be"),
        ({"budget_gbops": 1.0, "candidates": ()}, ValueError, "at least one candidate"),
        ({"budget_gbops": 1.0, "metric": "l1"}, ValueError, "metric must be one of"),
        ({"budget_gbops": 1.0, "batches": []}, ValueError, "at least one batch"),
        ({"budget_gbops": 1.0, "example_input": (torch.randn(1, 1, 8, 8),)}, TypeError, "tensor"),
    ],
)
def test_plan_bits_rejects_bad_input_and_says_what_to_change(setting, kwargs, error, match):
    model, example, batches = setting
    arguments = {"example_input": example, "batches": batches, **kwargs}

    with pytest.raises(error, match=match):
        plan_bits(model, QuantConfig(), **arguments)


def test_plan_bits_refuses_when_the_config_leaves_nothing_to_plan(setting):
    model, example, batches = setting
    config = QuantConfig(overrides={"*": 4})

    with pytest.raises(ValueError, match="nothing left to plan"):
        plan_bits(model, config, example, batches, budget_gbops=1.0)


def test_the_gbops_range_spans_the_uniform_plans_and_bounds_every_budget(setting):
    model, example, batches = setting
    config = QuantConfig(act_bits=8)

    lowest, highest = gbops_range(model, config, example, candidates=(2, 3, 8))

    assert lowest == pytest.approx(_uniform_gbops(config, 2, example), rel=1e-12)
    assert highest == pytest.approx(_uniform_gbops(config, 8, example), rel=1e-12)
    check_budget(model, config, example, lowest, candidates=(2, 3, 8))
    with pytest.raises(ValueError, match="below the cheapest plan"):
        check_budget(model, config, example, 0.99 * lowest, candidates=(2, 3, 8))
    assert plan_bits(model, config, example, batches, lowest, (2, 3, 8)).bits == dict.fromkeys(
        ["0", "2", "4", "8"], 2
    )


def test_measuring_divergences_restores_every_train_and_eval_flag(setting):
    model, example, batches = setting
    shadow = prepare(model, QuantConfig(act_bits=None), example)
    shadow.train()
    shadow[2].eval()

    layer_divergences(shadow, ["0"], (2,), [(batches[0],)], "kquantile", False)

    assert shadow.training and shadow[0].training and not shadow[2].training


def test_a_plan_applies_to_layer_names_that_look_like_patterns(setting):
    _, example, batches = setting
    model = nn.Sequential()
    model.add_module("conv[a]", nn.Conv2d(1, 4, 3))
    model.add_module("conv*", nn.Conv2d(4, 4, 3))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc?", nn.Linear(4 * 4 * 4, 10))

    plan = plan_bits(model, QuantConfig(), example, batches, budget_gbops=1.0, candidates=(2, 8))
    prepared = prepare(model, plan.apply(QuantConfig()), example)

    built = {name: m.weight_quantizer.bits for name, m in prepared.named_modules() if _q(m)}
    assert built == plan.bits == {"conv[a]": 8, "conv*": 8, "fc?": 8}


def test_a_budget_run_is_labelled_mix_and_a_uniform_run_by_its_bits():
    assert weight_bits_label({"weight_bits": 4, "gbops_budget": 0.05}) == "mix"
    assert weight_bits_label({"weight_bits": 4, "gbops_budget": None}) == "4"
    assert weight_bits_label({"weight_bits": 2}) == "2"
