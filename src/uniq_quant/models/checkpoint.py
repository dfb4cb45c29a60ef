"""Loading float checkpoints written by torchvision, by plain training scripts or under DDP.

A checkpoint is a file that ``torch.load(..., weights_only=True)`` reads (no code runs on load)
or a mapping already in memory. Accepted layouts:
* a state_dict: parameter and buffer names to tensors (torchvision's format);
* a dict with the state_dict under ``"model"`` or ``"state_dict"`` (training scripts that also
  save the optimizer and epoch), nested any number of times;
* keys prefixed by ``"module."`` (saved from a DistributedDataParallel wrapper) or by
  ``"_orig_mod."`` (saved from a ``torch.compile`` wrapper).

Shapes are checked before anything is copied, so a mismatch leaves the model untouched and the
error names the key, both shapes and the likely fix (a different ``num_classes`` or
``in_channels``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
from torch import nn

logger = logging.getLogger(__name__)

_NESTING_KEYS = ("model", "state_dict")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_LISTED_KEYS = 5  # keys named in an error message before "..."


def unwrap_state_dict(checkpoint: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """Return the state_dict inside ``checkpoint`` with wrapper prefixes removed.

    Args:
        checkpoint: a state_dict, or a dict holding one under ``"model"`` or ``"state_dict"``.

    Returns:
        Parameter and buffer names to tensors, without ``"module."`` or ``"_orig_mod."``.

    Raises:
        TypeError: ``checkpoint`` or the value under a nesting key is not a mapping, or it maps
            a name to something other than a tensor.
    """
    state = checkpoint
    while isinstance(state, Mapping) and (key := _nesting_key(state)) is not None:
        state = state[key]
    if not isinstance(state, Mapping):
        raise TypeError(f"a checkpoint must be a mapping of names to tensors, got {type(state)}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(
            f"checkpoint entries {_listed(bad)} are not tensors; pass the state_dict itself or "
            f"a dict holding it under one of {_NESTING_KEYS}"
        )
    return _strip_prefixes(dict(state))


def load_float_checkpoint(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, object],
    strict: bool = True,
) -> nn.Module:
    """Load float weights into ``model`` (in place) and return it.

    Works on a float model and on one prepared for quantization: the quantized layers keep the
    float layers' keys, and their quantizers treat their own absent buffers as not missing.

    Args:
        model: the model to load into.
        path_or_state_dict: a checkpoint file, read on the CPU with ``weights_only=True``, or a
            checkpoint already loaded (see the module docstring for the accepted layouts).
        strict: raise if the checkpoint lacks some of the model's keys or has extra ones;
            otherwise log them as a warning.

    Returns:
        ``model``.

    Raises:
        ValueError: a tensor's shape differs from the model's, or (strict) keys are missing or
            unexpected. Nothing is loaded in either case.
        TypeError: the checkpoint is not a state_dict in an accepted layout.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        checkpoint = torch.load(path_or_state_dict, map_location="cpu", weights_only=True)
    else:
        checkpoint = path_or_state_dict
    state = unwrap_state_dict(checkpoint)

    # 1. Compare shapes first so that a mismatch leaves the model unchanged.
    expected = model.state_dict()
    for key, tensor in state.items():
        if key in expected and tensor.shape != expected[key].shape:
            raise ValueError(_shape_error(model, key, tensor.shape, expected[key].shape))

    # 2. Copy. Only the modules know which absent keys they tolerate (a prepared model's
    # quantizers), so when the key sets differ keep a copy to restore on a strict failure.
    backup = None
    if strict and state.keys() != expected.keys():
        backup = {k: v.clone() for k, v in expected.items()}
    result = model.load_state_dict(state, strict=False)

    # 3. Report the keys that did not match.
    if result.missing_keys or result.unexpected_keys:
        message = (
            f"checkpoint does not match {type(model).__name__}: "
            f"missing keys {_listed(result.missing_keys)}, "
            f"unexpected keys {_listed(result.unexpected_keys)}"
        )
        if strict:
            assert backup is not None, "mismatched keys imply different key sets"
            model.load_state_dict(backup, strict=False)
            raise ValueError(
                f"{message}; build the architecture it was saved from, or pass "
                "strict=False to load the matching keys only"
            )
        logger.warning(message)
    return model


def _nesting_key(state: Mapping[str, object]) -> str | None:
    """The key under which ``state`` nests its state_dict, or None if it is one."""
    return next((k for k in _NESTING_KEYS if isinstance(state.get(k), Mapping)), None)


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a wrapper prefix shared by every key, repeatedly (DDP around torch.compile)."""
    while state and (
        prefix := next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
    ):
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def _shape_error(model: nn.Module, key: str, found: torch.Size, wanted: torch.Size) -> str:
    """An error message for tensor ``key`` of shape ``found`` where the model has ``wanted``."""
    message = (
        f"checkpoint tensor {key!r} has shape {tuple(found)} but the model's has shape "
        f"{tuple(wanted)}"
    )
    module = model.get_submodule(key.rpartition(".")[0])
    same_rest = found[1:] == wanted[1:]
    if module is _last_weight_layer(model) and same_rest:
        prefix = key.rpartition(".")[0]
        keys = [f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)]
        return (
            f"{message}: the classifier differs (num_classes {found[0]} in the checkpoint, "
            f"{wanted[0]} in the model); build the model with num_classes={found[0]}, or drop "
            f"{_listed(keys)} from the checkpoint to train a new classifier"
        )
    if isinstance(module, nn.Conv2d) and len(found) == 4 and found[0] == wanted[0]:
        return (
            f"{message}: the input channels differ ({found[1]} in the checkpoint, {wanted[1]} "
            f"in the model); build the model with in_channels={found[1]}"
        )
    return f"{message}; build the architecture the checkpoint was saved from"


def _last_weight_layer(model: nn.Module) -> nn.Module | None:
    """The last module, in module order, that owns a ``weight`` parameter of 2 or more dims."""
    layers = [
        m
        for m in model.modules()
        if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() >= 2
    ]
    return layers[-1] if layers else None


def _listed(keys: list[str]) -> str:
    """``keys`` as a short readable list: the first few, then how many more."""
    if not keys:
        return "[]"
    shown = ", ".join(repr(k) for k in keys[:_LISTED_KEYS])
    more = len(keys) - _LISTED_KEYS
    return f"[{shown}{f', ... ({more} more)' if more > 0 else ''}]"
