"""The weight quantizer: a module that turns a layer's float weight into its effective weight.

Modes (``MODES``):
* ``float``: the weight unchanged.
* ``noise``: in training, UNIQ's noise injection w~ = F^-1(clamp(F(w) + e)) with e one bin wide
  in the uniformized domain and a straight-through gradient (``functional.noise``). In eval it
  quantizes, so evaluating a model mid-training measures what deployment will compute.
* ``quant``: k-quantile quantization with a straight-through gradient; after ``freeze(w)`` the
  codes and levels are computed once and cached in buffers, and so is the decoded weight
  (a non-persistent buffer): a frozen forward does no quantization work at all.

Unfrozen quantization is cached too, keyed by the weight tensor's identity and its in-place
version counter: evaluating a model mid-training quantizes each weight once, not once per batch,
and any update of the weight (an optimizer step) invalidates the cache.

Cached codes and levels belong to the weight they were computed from: loading a state_dict
without them (a float checkpoint) drops the cache; loading one with them restores it.
"""

from __future__ import annotations

import torch
from torch import nn

from uniq_quant._validation import check_bits, check_choice
from uniq_quant.functional import FITS, dequantize, quantize, straight_through
from uniq_quant.functional.noise import noisy_weights

MODES = ("float", "noise", "quant")
_CACHE = ("codes", "levels")


class WeightQuantizer(nn.Module):
    """UNIQ weight quantizer with float / noise / quant modes.

    Args:
        bits: bits per weight, 1..8.
        per_channel: fit one distribution per output channel (dim 0) instead of one per tensor.
        fit: ``gaussian`` (the paper's k-quantile) or ``empirical`` (the tensor's own quantiles).
        mode: initial mode, one of ``MODES``.
    """

    def __init__(
        self, bits: int = 4, per_channel: bool = False, fit: str = "gaussian", mode: str = "float"
    ) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.per_channel = bool(per_channel)
        self.fit = check_choice(fit, FITS, "distribution fit")
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

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Effective weight, shaped like ``w``."""
        if self.mode == "float":
            return w
        if self.mode == "noise" and self.training:
            return noisy_weights(w, self.bits, self.fit, self.per_channel)
        if self.frozen:
            if self.decoded is None:
                self.decoded = dequantize(self.codes, self.levels)
            return self.decoded
        return straight_through(w, self._quantized(w))

    @torch.no_grad()
    def freeze(self, w: torch.Tensor) -> None:
        """Quantize ``w`` once, cache its codes and levels, and switch to ``quant`` mode."""
        self.mode = "quant"
        self.codes, self.levels = quantize(w.detach(), self.bits, self.method, self.per_channel)
        self.decoded = dequantize(self.codes, self.levels)

    def unfreeze(self) -> None:
        """Drop the cached codes and levels (the next quant forward recomputes them)."""
        self.codes = None
        self.levels = None
        self.decoded = None

    @torch.no_grad()
    def _quantized(self, w: torch.Tensor) -> torch.Tensor:
        """dequantize(quantize(w)), recomputed only when ``w`` changed since the last call.

        Under ``torch.compile`` it is recomputed at every call: the cache key is Python state
        that would recompile the graph for each layer.
        """
        if torch.compiler.is_compiling():
            return dequantize(*quantize(w.detach(), self.bits, self.method, self.per_channel))
        key = (id(w), w.data_ptr(), w._version, tuple(w.shape), w.dtype, w.device)
        if self._cache is None or self._cache[0] != key:
            codes, levels = quantize(w.detach(), self.bits, self.method, self.per_channel)
            self._cache = (key, dequantize(codes, levels))
        return self._cache[1]

    def extra_repr(self) -> str:
        granularity = "channel" if self.per_channel else "tensor"
        frozen = ", frozen" if self.frozen else ""
        return f"bits={self.bits}, mode={self.mode}, fit={self.fit}, per_{granularity}{frozen}"

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in _CACHE:
            cached = state_dict.get(prefix + name)
            setattr(self, name, None if cached is None else torch.empty_like(cached))
        self.decoded = None
        self._cache = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
