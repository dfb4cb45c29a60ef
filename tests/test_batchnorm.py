"""reestimate_batchnorm: the running statistics of the frozen weights, nothing else touched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import uniq_quant as uq
from uniq_quant.models import build_model
from uniq_quant.prepare import quantized_layers


def _noisy_trained_model() -> tuple[nn.Module, list[torch.Tensor]]:
    """A small CNN prepared at W2A8 whose BatchNorm statistics come from noisy weights, then
    converted; and training batches."""
    torch.manual_seed(0)
    batches = [torch.randn(16, 1, 28, 28) for _ in range(4)]
    model = uq.prepare(build_model("small_cnn", 10, 1), uq.QuantConfig(2, act_bits=8), batches[0])
    for _, layer in quantized_layers(model):
        layer.mode = "noise"
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    return uq.convert(model), batches


def test_statistics_are_the_average_of_the_batch_statistics() -> None:
    model, batches = _noisy_trained_model()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    inputs = []
    handle = bn.register_forward_hook(lambda module, args, out: inputs.append(args[0].detach()))
    with torch.no_grad():
        for batch in batches:
            model.eval()(batch)
    handle.remove()
    mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs]).mean(0)
    var = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in inputs]).mean(0)
    assert not torch.allclose(bn.running_mean, mean, atol=1e-3)  # stale: noisy weights

    assert uq.reestimate_batchnorm(model, batches) == 4
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 4


def test_only_batchnorm_statistics_change_and_modes_are_restored() -> None:
    model, batches = _noisy_trained_model()
    model.train()
    dropout = nn.Dropout(0.5)
    model.classifier.append(dropout)
    dropout.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    momenta = [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)]

    uq.reestimate_batchnorm(model, batches)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(("running_mean", "running_var", "tracked")) for k in changed)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == momenta


def test_empty_batches_raise_and_keep_the_statistics() -> None:
    model, _ = _noisy_trained_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="at least one batch"):
        uq.reestimate_batchnorm(model, [])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_failing_forward_pass_restores_the_statistics() -> None:
    model, batches = _noisy_trained_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError):
        uq.reestimate_batchnorm(model, [batches[0], torch.randn(16, 3, 28, 28)])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_a_model_without_batchnorm_is_left_alone() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    assert uq.reestimate_batchnorm(model, [torch.randn(2, 4)]) == 0


def test_reestimation_recovers_a_one_shot_noise_model() -> None:
    """Evaluated with the re-estimated statistics, the converted model computes what it computes
    with the statistics of its own batch (train-mode BatchNorm): its deployed behaviour."""
    model, batches = _noisy_trained_model()
    batch = torch.cat(batches)

    def gap() -> float:
        with torch.no_grad():
            model.eval()
            deployed = model(batch)
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.train()
                    m.momentum = 0.0  # use the batch statistics, keep the running ones
            own = model(batch)
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.momentum = 0.1
        return float((deployed - own).abs().max())

    stale = gap()
    uq.reestimate_batchnorm(model, batches)
    fresh = gap()
    assert fresh < stale / 5


def test_a_layer_the_batches_do_not_reach_keeps_its_statistics() -> None:
    class WithSpareHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
            self.spare = nn.BatchNorm2d(4)  # only in training, like an auxiliary head

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.body(x)
            return self.spare(y) if self.training else y

    torch.manual_seed(0)
    model = WithSpareHead()
    model.train()(torch.randn(8, 1, 6, 6) * 3 + 1)
    spare = {k: v.clone() for k, v in model.spare.state_dict().items()}
    body = model.body[1].running_mean.clone()
    assert uq.reestimate_batchnorm(model, [torch.randn(8, 1, 6, 6)]) == 1
    assert all(torch.equal(v, model.spare.state_dict()[k]) for k, v in spare.items())
    assert not torch.equal(model.body[1].running_mean, body)
