"""torch.compile: prepared models trace to one graph in every mode and train compiled."""

from __future__ import annotations

import pytest
import torch

import uniq_quant as uq
from uniq_quant.models import build_model
from uniq_quant.prepare import quantized_layers

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture()
def noisy_model() -> torch.nn.Module:
    torch.manual_seed(0)
    example = torch.randn(4, 1, 28, 28)
    model = uq.prepare(build_model("small_cnn", 10, 1), uq.QuantConfig(4, act_bits=8), example)
    for _, layer in quantized_layers(model):
        layer.mode = "noise"
    model.train()(example)  # observe the activation ranges once
    return model


def _graph_breaks(model: torch.nn.Module, x: torch.Tensor) -> list[str]:
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(x)
    return [str(reason.reason).splitlines()[0] for reason in explained.break_reasons]


def test_every_mode_traces_without_a_graph_break(noisy_model: torch.nn.Module) -> None:
    x = torch.randn(4, 1, 28, 28)
    assert _graph_breaks(noisy_model.train(), x) == []
    assert _graph_breaks(noisy_model.eval(), x) == []
    assert _graph_breaks(uq.convert(noisy_model), x) == []


def test_compiled_noise_training_steps_and_converts_like_eager(
    noisy_model: torch.nn.Module,
) -> None:
    """Forward and backward run compiled; the converted model's compiled outputs agree with its
    eager ones to within one activation step (a fused division may round a tie the other way)."""
    torch._dynamo.reset()
    x = torch.randn(4, 1, 28, 28)
    compiled = torch.compile(noisy_model, backend="aot_eager")
    compiled(x).square().mean().backward()
    grads = [p.grad for p in noisy_model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)

    uq.convert(noisy_model)
    eager = noisy_model(x)
    assert torch.allclose(torch.compile(noisy_model, backend="aot_eager")(x), eager, atol=1e-2)


def test_compiled_noise_draws_are_independent_of_each_other() -> None:
    """The random draw is one seeded operator in the graph: two calls are never merged."""
    from uniq_quant.functional.noise import symmetric_uniform

    def difference(like: torch.Tensor) -> torch.Tensor:
        return symmetric_uniform((4096,), 1.0, like) - symmetric_uniform((4096,), 1.0, like)

    torch._dynamo.reset()
    gap = torch.compile(difference, backend="aot_eager")(torch.empty(0))
    assert gap.abs().max() > 0.5


def test_compiled_activation_quantizer_matches_eager_values_and_gradient() -> None:
    """Compiled, the straight-through gradient is written c + sg(q(c) - c); it equals eager's
    everywhere but on the range's two bounds themselves."""
    quantizer = uq.ActivationQuantizer(bits=4, mode="quant").train()
    quantizer(torch.randn(8, 16, 6, 6))
    quantizer.freeze()
    x = torch.randn(8, 16, 6, 6) * 2  # no value on the range's bounds, where the two may differ

    def run(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = x.clone().requires_grad_()
        out = module(inputs)
        (out * torch.arange(out.numel()).reshape(out.shape)).sum().backward()
        return out.detach(), inputs.grad

    torch._dynamo.reset()
    eager, eager_grad = run(quantizer)
    compiled, compiled_grad = run(torch.compile(quantizer, backend="aot_eager"))
    assert torch.allclose(compiled, eager, rtol=0, atol=1e-6)
    assert torch.equal(compiled_grad, eager_grad)


def test_lazily_loaded_model_traces_to_one_graph_and_matches_eager(tmp_path) -> None:
    """The per-byte look-up of a lazy layer (a bit view of its level table) traces without a
    graph break, and the compiled model computes the eager one's outputs exactly."""
    torch.manual_seed(0)
    x = torch.randn(4, 1, 28, 28)
    model = uq.prepare(build_model("small_cnn", 10, 1), uq.QuantConfig(4, act_bits=8), x)
    model.train()(x)
    path = tmp_path / "model.safetensors"
    uq.save_quantized(uq.convert(model), path, input_shape=(1, 28, 28))
    lazy = uq.load_quantized(path, build_model("small_cnn", 10, 1), lazy=True)
    assert _graph_breaks(lazy, x) == []
    torch._dynamo.reset()
    with torch.no_grad():
        assert torch.equal(torch.compile(lazy, backend="aot_eager")(x), lazy(x))


def test_compiled_learned_levels_train_like_eager() -> None:
    """A frozen layer's learned levels (codes looked up, the shift's gradient scaled) trace to
    one graph, and compiled outputs and level gradients equal eager's (float activations: no
    rounding tie can flip)."""
    torch.manual_seed(0)
    x = torch.randn(4, 1, 28, 28)
    config = uq.QuantConfig(2, act_bits=None, learn_levels=True)
    model = uq.prepare(build_model("small_cnn", 10, 1), config, x)
    for _, layer in quantized_layers(model):
        layer.freeze()
    with torch.no_grad():
        for _, layer in quantized_layers(model):
            layer.weight_quantizer.level_shift.normal_(std=0.01)
    assert _graph_breaks(model.train(), x) == []

    def run(module: torch.nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        out = module(x)
        (out * torch.arange(out.numel()).reshape(out.shape)).sum().backward()
        shifts = [layer.weight_quantizer.level_shift for _, layer in quantized_layers(model)]
        return out.detach(), [shift.grad.clone() for shift in shifts]

    eager, eager_grads = run(model)
    torch._dynamo.reset()
    compiled, compiled_grads = run(torch.compile(model, backend="aot_eager"))
    assert torch.allclose(compiled, eager, rtol=0, atol=1e-5)
    assert all(g.abs().sum() > 0 for g in eager_grads)
    for c, e in zip(compiled_grads, eager_grads, strict=True):
        assert torch.allclose(c, e, rtol=1e-5, atol=1e-5)


def test_compiled_rounding_stage_trains_like_eager() -> None:
    """The current block of a rounding schedule (quant mode, not frozen: the codes recomputed
    at every call) traces to one graph with the eager weight gradients."""
    torch.manual_seed(0)
    x = torch.randn(4, 1, 28, 28)
    model = uq.prepare(build_model("small_cnn", 10, 1), uq.QuantConfig(2, act_bits=None), x)
    schedule = uq.GradualSchedule(model, num_stages=2, unit="step", emulation="rounding")
    current = [layer for name, layer in quantized_layers(model) if name in schedule.stage_names(0)]
    assert current and all(not layer.weight_quantizer.frozen for layer in current)
    assert _graph_breaks(model.train(), x) == []

    def run(module: torch.nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        out = module(x)
        (out * torch.arange(out.numel()).reshape(out.shape)).sum().backward()
        return out.detach(), [layer.weight.grad.clone() for layer in current]

    eager, eager_grads = run(model)
    torch._dynamo.reset()
    compiled, compiled_grads = run(torch.compile(model, backend="aot_eager"))
    assert torch.allclose(compiled, eager, rtol=0, atol=1e-5)
    assert all(g.abs().sum() > 0 for g in eager_grads)
    for c, e in zip(compiled_grads, eager_grads, strict=True):
        assert torch.allclose(c, e, rtol=1e-5, atol=1e-4)
