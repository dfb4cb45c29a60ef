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
