"""Weight and activation quantizer modules: modes, caching, ranges and gradients."""

import pytest
import torch

from uniq_quant.functional import dequantize, quantize
from uniq_quant.quantizers import ActivationQuantizer, WeightQuantizer
from uniq_quant.quantizers.activation import _ClampToGrid, _hardtanh_to_grid


def test_weight_quantizer_float_mode_is_identity() -> None:
    """Float mode returns the very tensor it was given."""
    w = torch.randn(8, 4)
    assert WeightQuantizer(4)(w) is w


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("fit", ["gaussian", "empirical"])
def test_quant_mode_equals_dequantize_of_quantize(per_channel: bool, fit: str) -> None:
    """Quant mode computes exactly dequantize(quantize(w)), frozen or not."""
    w = torch.randn(16, 3, 3, 3)
    quantizer = WeightQuantizer(3, per_channel, fit, mode="quant")
    method = "kquantile" if fit == "gaussian" else "empirical"
    expected = dequantize(*quantize(w, 3, method, per_channel))
    assert torch.equal(quantizer(w), expected)
    quantizer.freeze(w)
    assert torch.equal(quantizer(w), expected)


def test_noise_mode_trains_noisy_and_evaluates_deterministically() -> None:
    """In training noise mode draws fresh noise; in eval it quantizes, the same every call."""
    w = torch.randn(32, 32)
    quantizer = WeightQuantizer(4, mode="noise")
    assert not torch.equal(quantizer(w), quantizer(w))
    quantizer.eval()
    assert torch.equal(quantizer(w), quantizer(w))
    assert torch.equal(quantizer(w), dequantize(*quantize(w, 4)))


def test_noise_mode_gradient_is_identity() -> None:
    """The gradient through a noise-mode quantizer reaches the weight unchanged."""
    w = torch.randn(8, 8, requires_grad=True)
    WeightQuantizer(2, mode="noise")(w).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_frozen_quantizer_computes_codes_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """After freeze, forward only looks codes up: quantize is never called again."""
    from uniq_quant.quantizers import weight as weight_module

    w = torch.randn(8, 8)
    quantizer = WeightQuantizer(3)
    quantizer.freeze(w)
    calls = []
    monkeypatch.setattr(weight_module, "quantize", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(weight_module, "dequantize", lambda *a, **k: calls.append(a))
    for _ in range(3):
        quantizer(w)
    assert calls == []
    assert quantizer.codes.dtype == torch.uint8 and quantizer.levels.shape == (8,)


def test_unfrozen_quantization_is_recomputed_only_when_the_weight_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eval forwards reuse one quantization until the weight is updated in place."""
    from uniq_quant.quantizers import weight as weight_module

    calls = []
    real = weight_module.quantize
    monkeypatch.setattr(weight_module, "quantize", lambda *a, **k: calls.append(1) or real(*a, **k))
    w = torch.nn.Parameter(torch.randn(8, 8))
    quantizer = WeightQuantizer(3, mode="noise").eval()
    first = quantizer(w)
    assert torch.equal(quantizer(w), first) and len(calls) == 1
    with torch.no_grad():
        w.mul_(2)
    assert torch.equal(quantizer(w), dequantize(*real(w, 3))) and len(calls) == 2


def test_freeze_cache_travels_in_state_dict_and_leaving_quant_drops_it() -> None:
    """Cached codes load into a fresh quantizer; switching to float drops the cache."""
    w = torch.randn(6, 5)
    source = WeightQuantizer(2, per_channel=True)
    source.freeze(w)
    target = WeightQuantizer(2, per_channel=True, mode="quant")
    target.load_state_dict(source.state_dict())
    assert target.frozen and torch.equal(target(w), source(w))
    target.mode = "float"
    assert not target.frozen and "codes" not in target.state_dict()


def test_weight_quantizer_rejects_bad_settings() -> None:
    """Bad bits, fits and modes raise ValueErrors that name the value."""
    with pytest.raises(ValueError, match="got 0"):
        WeightQuantizer(0)
    with pytest.raises(ValueError, match="'gaussian', 'empirical'"):
        WeightQuantizer(4, fit="student")
    with pytest.raises(ValueError, match="'float', 'noise', 'quant'"):
        WeightQuantizer(4).mode = "train"


def test_activation_range_is_unsigned_for_non_negative_input() -> None:
    """Non-negative inputs get [0, hi] with 2^b - 1 steps; eval reuses the training range."""
    quantizer = ActivationQuantizer(4, mode="quant")
    x = torch.rand(4, 1000) * 6
    quantizer(x)
    lo, hi, step = quantizer.range()
    assert lo.item() == 0 and not quantizer.signed
    # the 0.999-quantile of U(0, 6) is 5.994; 4000 samples pin it within about 0.01
    assert hi.item() == pytest.approx(5.994, abs=0.02)
    assert step.item() == pytest.approx(hi.item() / 15)

    quantizer.eval()
    out = quantizer(x)
    assert out.unique().numel() <= 16 and out.min() >= 0
    assert torch.equal(quantizer.range()[1], hi)


def test_activation_range_is_symmetric_once_negative_input_is_seen() -> None:
    """A negative input makes the range [-hi, hi] with 2^(b-1) - 1 steps each side."""
    quantizer = ActivationQuantizer(3, mode="quant")
    out = quantizer(torch.randn(10_000))
    lo, hi, step = quantizer.range()
    assert bool(quantizer.signed) and lo.item() == -hi.item()
    assert step.item() == pytest.approx(hi.item() / 3)
    assert out.unique().numel() <= 7


def test_activation_range_is_robust_to_outliers_and_moves_slowly() -> None:
    """One huge outlier does not set the range; a new batch moves it by `momentum` only."""
    quantizer = ActivationQuantizer(8)
    x = torch.rand(100_000)
    x[0] = 1e6
    quantizer(x)
    assert quantizer.clip.item() < 1.01
    first = quantizer.clip.item()
    quantizer(torch.rand(100_000) * 11)
    assert quantizer.clip.item() == pytest.approx(first + 0.1 * (10.989 - first), rel=0.01)


def test_activation_gradient_is_straight_through_inside_and_zero_outside() -> None:
    """The gradient is 1 inside [lo, hi] and 0 where the input was clipped."""
    quantizer = ActivationQuantizer(8, mode="quant", percentile=0.5)
    x = torch.linspace(0, 1, 1001, requires_grad=True)
    quantizer(x).sum().backward()
    lo, hi, _ = quantizer.range()
    inside, outside = (x > lo) & (x < hi), x > hi
    assert inside.sum() > 400 and outside.sum() > 400
    assert (x.grad[inside] == 1).all() and (x.grad[outside] == 0).all()


def test_activation_bounds_follow_every_change_of_the_range() -> None:
    """The cached CPU bounds are redone after an in-place update, a load or a new buffer."""
    quantizer = ActivationQuantizer(8, mode="quant")
    quantizer(torch.rand(1000))
    quantizer.freeze()
    quantizer.eval()
    x = torch.linspace(0, 4, 4001)

    def top() -> float:
        return quantizer(x).max().item()

    assert top() == pytest.approx(quantizer.clip.item())
    quantizer.clip.fill_(2.0)
    assert top() == 2.0
    quantizer.load_state_dict({**quantizer.state_dict(), "clip": torch.tensor(3.0)})
    assert top() == 3.0
    quantizer.clip = torch.tensor(0.5)
    assert top() == 0.5
    quantizer.signed.fill_(True)
    assert quantizer(-x).min().item() == -0.5
    quantizer.bits = 2
    assert quantizer(x).unique().tolist() == [0.0, 0.5]


def test_activation_noise_mode_adds_up_to_half_a_step() -> None:
    """Noise mode perturbs each clipped value by at most step/2, and is fresh each call."""
    quantizer = ActivationQuantizer(4, mode="noise")
    quantizer.freeze()
    quantizer.clip.fill_(1.0)
    quantizer.calibrated.fill_(True)
    x = torch.rand(10_000)
    out = quantizer(x)
    assert (out - x).abs().max() <= 0.5 / 15 + 1e-6
    assert not torch.equal(out, quantizer(x))


def test_activation_frozen_range_does_not_move_and_float_mode_still_tracks() -> None:
    """Frozen quantizers keep their range in training; float mode tracks it but passes x."""
    quantizer = ActivationQuantizer(8)
    x = torch.rand(100)
    assert quantizer(x) is x and bool(quantizer.calibrated)
    quantizer.freeze()
    before = quantizer.clip.clone()
    quantizer(x * 100)
    assert torch.equal(quantizer.clip, before)


def test_activation_eval_without_range_is_an_error() -> None:
    """Evaluating an uncalibrated quant-mode activation quantizer says what to do."""
    quantizer = ActivationQuantizer(8, mode="quant").eval()
    with pytest.raises(RuntimeError, match="no range yet"):
        quantizer(torch.rand(10))


@pytest.mark.parametrize("bits", [1, 9, 4.0])
def test_activation_bits_must_be_2_to_8(bits: object) -> None:
    """Activation bits outside 2..8 raise a ValueError naming the range."""
    with pytest.raises(ValueError, match=r"activation bits must be an integer in 2\.\.8"):
        ActivationQuantizer(bits)


def test_activation_settings_are_validated() -> None:
    """Percentile and momentum outside (0, 1] are rejected."""
    with pytest.raises(ValueError, match="percentile"):
        ActivationQuantizer(8, percentile=1.5)
    with pytest.raises(ValueError, match="momentum"):
        ActivationQuantizer(8, momentum=0)


@pytest.mark.parametrize("noise", [False, True])
def test_activation_number_and_tensor_bounds_give_the_same_values_and_gradient(noise) -> None:
    """CPU inputs use number bounds (autograd's hardtanh), other devices 0-dim tensors (a
    custom function): the two paths agree."""
    lo, hi, step = -2.0, 2.0, 2.0 / 127
    x = torch.cat([torch.randn(2000) * 3, torch.tensor([lo, hi, 0.0])]).requires_grad_()
    bounds = {"numbers": (lo, hi, step), "tensors": tuple(map(torch.tensor, (lo, hi, step)))}
    results = {}
    for name, (a, b, s) in bounds.items():
        torch.manual_seed(0)
        path = _hardtanh_to_grid if name == "numbers" else _ClampToGrid.apply
        out = path(x, a, b, s, noise)
        (grad,) = torch.autograd.grad(out.sum(), x)
        results[name] = out.detach(), grad

    inside = (x > lo) & (x < hi)
    assert torch.equal(results["numbers"][1], inside.float())
    assert torch.equal(results["tensors"][1], results["numbers"][1])
    if noise:  # the two paths draw differently; both stay within half a step of the clamp
        for out, _ in results.values():
            assert (out - x.detach().clamp(lo, hi)).abs().max() <= step / 2 + 1e-6
    else:
        assert torch.equal(results["tensors"][0], results["numbers"][0])
