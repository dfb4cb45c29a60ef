"""Checks of user input; each error names the value, the allowed set and the fix."""

from __future__ import annotations

import numbers
from collections.abc import Collection

import torch

WEIGHT_BITS = range(1, 9)
ACT_BITS = range(2, 9)


def check_bits(bits: object, allowed: range = WEIGHT_BITS, what: str = "weight bits") -> int:
    """Return ``bits`` as an int if it is an integer inside ``allowed``, else raise ValueError."""
    lo, hi = allowed.start, allowed.stop - 1
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or int(bits) not in allowed:
        raise ValueError(
            f"{what} must be an integer in {lo}..{hi}, got {bits!r}; pick a value from {lo} to {hi}"
        )
    return int(bits)


def check_choice(value: object, choices: Collection[str], what: str) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError listing them."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
    return value  # type: ignore[return-value]


def check_weights(w: object, what: str = "weights") -> torch.Tensor:
    """Return ``w`` if it is a non-empty floating tensor of finite values, else raise.

    Under ``torch.compile`` the values are not checked (only the type and size).

    Raises:
        TypeError: ``w`` is not a floating-point torch.Tensor.
        ValueError: ``w`` is empty or holds NaN or infinite values.
    """
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        kind = w.dtype if isinstance(w, torch.Tensor) else type(w).__name__
        raise TypeError(f"{what} must be a floating-point torch.Tensor, got {kind}")
    if w.numel() == 0:
        raise ValueError(f"{what} are empty (shape {tuple(w.shape)}); there is nothing to quantize")
    if torch.compiler.is_compiling():  # a value check would break the compiled graph
        return w
    if not bool(torch.isfinite(w).all()):
        bad = int((~torch.isfinite(w)).sum())
        raise ValueError(
            f"{what} hold {bad} NaN or infinite value(s) of {w.numel()}; "
            "fix the training run that produced them before quantizing"
        )
    return w
