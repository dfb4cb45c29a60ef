"""The weight quantizer: a module that turns a layer's float weight into its effective weight.

Modes (``MODES``):
* ``float``: the weight unchanged.
* ``noise``: in training, UNIQ's noise injection w~ = F^-1(clamp(F(w) + e)) with e one bin wide
  in the uniformized domain and a straight-through gradient (``functional.noise``). In eval it
  quantizes, so evaluating a model mid-training measures what deployment will compute.
* ``quant``: k-quantile quantization with a straight-through gradient; after ``freeze(w)`` the
  codes and levels are computed once and cached in buffers, and so is the decoded weight
  (a non-persistent buffer): a frozen forward does no quantization work at all (with learned
  levels, a training forward looks the codes up again: the levels change at every step).

Unfrozen quantization is cached too, keyed by the weight tensor's identity and its in-place
version counter: evaluating a model mid-training quantizes each weight once, not once per batch,
and any update of the weight (an optimizer step) invalidates the cache.

Cached codes and levels belong to the weight they were computed from: loading a state_dict
without them (a float checkpoint) drops the cache; loading one with them restores it.

Learned levels (``learn_levels=True``, beyond the paper): a frozen quantizer keeps its codes but
decodes them with ``levels + level_shift``, where ``level_shift`` is a Parameter of the levels'
shape, zero at the start, trained by the optimizer like any other. Its gradient is the sum of
d loss / d w over the weights of each code, times sqrt(k / N) (N weights per fit group): as LSQ
scales the gradient of its step (Esser et al. 2020), so that SGD moves a level shared by
thousands of weights by a step of the size it gives one weight, not thousands of times more
(Adam, invariant to the scale, is unaffected). The codes, and so the bins of equal
probability mass, stay as the k-quantile quantizer chose them; only the k values move. The
shift exists from construction on, so an optimizer built before training holds it; it gets a
gradient only while the quantizer is frozen, and it is zeroed whenever the codes are dropped
(``unfreeze``, any mode but ``quant``). Freezing the same weight again keeps it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from uniq_quant._validation import check_bits, check_choice
from uniq_quant.functional import FITS, dequantize, quantize, straight_through
from uniq_quant.functional.noise import noisy_weights
from uniq_quant.functional.quantize import scale_gradient

MODES = ("float", "noise", "quant")
_CACHE = ("codes", "levels")


class WeightQuantizer(nn.Module):
    """UNIQ weight quantizer with float / noise / quant modes.

    Args:
        bits: bits per weight, 1..8.
        per_channel: fit one distribution per output channel (dim 0) instead of one per tensor.
        fit: ``gaussian`` (the paper's k-quantile) or ``empirical`` (the tensor's own quantiles).
        mode: initial mode, one of ``MODES``.
        learn_levels: train the levels of the frozen quantizer (``level_shift``).
        channels: output channels of the weight (dim 0), for the shape of a per-channel shift.
    """

    def __init__(
        self,
        bits: int = 4,
        per_channel: bool = False,
        fit: str = "gaussian",
        mode: str = "float",
        learn_levels: bool = False,
        channels: int = 1,
    ) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.per_channel = bool(per_channel)
        self.fit = check_choice(fit, FITS, "distribution fit")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        shape = (channels, 2**self.bits) if self.per_channel else (2**self.bits,)
        shift = nn.Parameter(torch.zeros(shape)) if learn_levels else None
        self.register_parameter("level_shift", shift)
        self.register_buffer("codes", None)
        self.register_buffer("levels", None)
        self.register_buffer("decoded", None, persistent=False)
        self._cache: tuple[tuple, torch.Tensor] | None = None
        self.mode = mode

    @property
    def mode(self) -> str:
        """``float``, ``noise`` or ``quant``; any mode but ``quant`` drops the frozen cache."""
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self._mode = check_choice(mode, MODES, "weight quantizer mode")
        self._cache = None
        if mode != "quant":
            self.unfreeze()

    @property
    def method(self) -> str:
        """The quantization method of ``functional.quantize`` this quantizer uses."""
        return "kquantile" if self.fit == "gaussian" else "empirical"

    @property
    def frozen(self) -> bool:
        """True once ``freeze`` cached the codes and levels."""
        return self.codes is not None

    @property
    def learn_levels(self) -> bool:
        """True when a frozen quantizer trains its levels (``level_shift``)."""
        return self.level_shift is not None

    @property
    def effective_levels(self) -> torch.Tensor | None:
        """The levels the frozen weight is decoded with: ``levels``, plus ``level_shift`` when
        levels are learned; (k,) or (C_out, k); None while not frozen."""
        if self.levels is None or self.level_shift is None:
            return self.levels
        return self._shifted_levels(self.level_shift)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Effective weight, shaped like ``w``."""
        if self.mode == "float":
            return w
        if self.mode == "noise" and self.training:
            return noisy_weights(w, self.bits, self.fit, self.per_channel)
        if self.frozen:
            if self.learn_levels:  # a look-up per call: the levels change at every step
                return self._learned_weight()
            if self.decoded is None:
                self.decoded = dequantize(self.codes, self.levels)
            return self.decoded
        return straight_through(w, self._quantized(w))

    @torch.no_grad()
    def freeze(self, w: torch.Tensor) -> None:
        """Quantize ``w`` once, cache its codes and levels, and switch to ``quant`` mode.

        A learned level shift is kept: it refers to the levels of this weight, which freezing
        the same weight again reproduces exactly (so ``convert`` after training keeps it).
        """
        self.mode = "quant"
        self.codes, self.levels = quantize(w.detach(), self.bits, self.method, self.per_channel)
        self.decoded = dequantize(self.codes, self.levels)

    def unfreeze(self) -> None:
        """Drop the cached codes and levels (the next quant forward recomputes them) and zero
        the learned level shift, which belonged to them."""
        self.codes = None
        self.levels = None
        self.decoded = None
        if self.level_shift is not None:
            with torch.no_grad():
                self.level_shift.zero_()

    def _learned_weight(self) -> torch.Tensor:
        """levels[codes] + level_shift[codes], the shift's gradient scaled by sqrt(k / N).

        Without a gradient to compute (evaluation, a converted model) the decoded weight is
        cached until the shift changes, so inference does no look-up per call.
        """
        if torch.is_grad_enabled() and self.level_shift.requires_grad:
            group = self.codes[0].numel() if self.per_channel else self.codes.numel()
            shift = scale_gradient(self.level_shift, math.sqrt(2**self.bits / group))
            return dequantize(self.codes, self._shifted_levels(shift))
        with torch.no_grad():
            return self._cached(
                self.level_shift, lambda: dequantize(self.codes, self.effective_levels)
            )

    def _shifted_levels(self, shift: torch.Tensor) -> torch.Tensor:
        return self.levels + shift.to(self.levels.dtype)

    @torch.no_grad()
    def _quantized(self, w: torch.Tensor) -> torch.Tensor:
        """dequantize(quantize(w)), recomputed only when ``w`` changed since the last call."""
        return self._cached(
            w, lambda: dequantize(*quantize(w.detach(), self.bits, self.method, self.per_channel))
        )

    def _cached(self, source: torch.Tensor, compute) -> torch.Tensor:
        """``compute()``, recomputed only when ``source`` (its identity, storage or in-place
        version) changed since the last call; ``_cache`` is dropped with every mode change.

        Under ``torch.compile`` it is recomputed at every call: the cache key is Python state
        that would recompile the graph for each layer.
        """
        if torch.compiler.is_compiling():
            return compute()
        s = source
        key = (id(s), s.data_ptr(), s._version, tuple(s.shape), s.dtype, s.device)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, compute())
        return self._cache[1]

    def extra_repr(self) -> str:
        granularity = "channel" if self.per_channel else "tensor"
        frozen = ", frozen" if self.frozen else ""
        learned = ", learn_levels" if self.learn_levels else ""
        return (
            f"bits={self.bits}, mode={self.mode}, fit={self.fit}, "
            f"per_{granularity}{frozen}{learned}"
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, *rest):
        for name in _CACHE:
            cached = state_dict.get(prefix + name)
            setattr(self, name, None if cached is None else torch.empty_like(cached))
        self.decoded = None
        self._cache = None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, *rest)

        # a state without a level shift (a float checkpoint, a run without learned levels)
        # means levels as the quantizer computes them: a zero shift, nothing missing
        key = prefix + "level_shift"
        if self.level_shift is not None and key not in state_dict:
            if key in missing:
                missing.remove(key)
            with torch.no_grad():
                self.level_shift.zero_()
