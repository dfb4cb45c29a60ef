"""save_quantized / load_quantized: a converted model to one packed safetensors file and back.

``save_quantized`` stores each quantized layer's codes at exactly its bits per weight, its
levels, and everything else of the state_dict the model needs (see ``format`` for the layout),
in one safetensors file written atomically. ``load_quantized`` returns an eval model whose
outputs equal the saved model's bit for bit (DESIGN semantic 8).

How a file becomes a model again, without an example input:
  1. the architecture comes from the stored recipe (``build_model(**recipe)``: our models and
     torchvision's) or from the caller's own float model of the same architecture;
  2. each quantized layer named in the metadata is swapped for its quantized twin directly by
     name, with the stored bits, granularity and activation settings; prepare() and its traced
     example input are not needed, and the stored data-flow order is kept;
  3. every layer's type and hyperparameters and every remaining tensor's name and shape are
     checked against the file before anything is loaded: a file for a different model is a
     ValueError, never a silently wrong model;
  4. the codes, levels, ranges and float tensors are loaded and every layer is frozen as
     ``convert`` leaves it. Eagerly, ``layer.weight`` holds the dequantized weight and is the
     very tensor the frozen quantizer returns (one float copy, not two); with ``lazy=True`` it
     is None and the layer keeps its codes packed (``lazy``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from uniq_quant.config import QuantConfig
from uniq_quant.export._converted import converted_layers
from uniq_quant.export._files import PathLike, atomic_target
from uniq_quant.export.format import (
    CODES,
    FORMAT_NAME,
    FORMAT_VERSION,
    GRANULARITIES,
    KINDS,
    LEVELS,
    checksum,
    decode_metadata,
    encode_metadata,
    verify_checksum,
)
from uniq_quant.export.lazy import PackedWeightQuantizer
from uniq_quant.export.packing import pack_codes, packed_size, unpack_codes
from uniq_quant.functional import dequantize
from uniq_quant.nn import QUANTIZED_TWINS, QuantLayerMixin

logger = logging.getLogger(__name__)

_KINDS = dict(zip((nn.Conv1d, nn.Conv2d, nn.Linear), KINDS, strict=True))
_FLOAT_TYPES = {kind: cls for cls, kind in _KINDS.items()}
_CONV_HYPER = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation")
_LINEAR_HYPER = ("in_features", "out_features")
_LISTED = 5  # problems named in one error message before "..."


def save_quantized(
    model: nn.Module,
    path: PathLike,
    *,
    recipe: Mapping[str, Any] | None = None,
    config: QuantConfig | None = None,
    input_shape: Sequence[int] | None = None,
) -> Path:
    """Write a converted model to one packed safetensors file (atomically; overwrites ``path``).

    Args:
        model: a model after ``convert`` (or returned by ``load_quantized``).
        path: the file to write; its folder must exist.
        recipe: ``build_model`` arguments (``uniq_quant.models.model_recipe``) that rebuild the
            architecture, so ``load_quantized(path)`` needs no model; without it the loader
            must be given a float instance of the architecture.
        config: the QuantConfig the model was prepared with, stored for the record.
        input_shape: the model's input shape without the batch dim, e.g. (3, 224, 224), needed
            to convert the file to ONNX later.

    Returns:
        ``path`` as a Path. The file holds ceil(numel * bits / 8) bytes of codes per quantized
        weight, its levels, and the rest of the state_dict in its own dtypes.

    Raises:
        RuntimeError: the model is not converted.
        TypeError: ``config`` is not a QuantConfig.
        ValueError: ``recipe`` is not JSON-serializable or ``input_shape`` is not positive ints.
    """
    layers = converted_layers(model)
    if config is not None and not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig or None, got {type(config).__name__}")
    tensors, entries = _packed_tensors(model, layers)
    metadata = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "library": f"uniq-quant {_library_version()}",
        "recipe": _json_value(recipe, "recipe"),
        "config": None if config is None else config.to_dict(),
        "input_shape": _input_shape(input_shape),
        "layers": entries,
    }
    metadata["checksum"] = checksum(metadata, tensors)
    with atomic_target(path) as temporary:
        save_file(tensors, temporary, metadata=encode_metadata(metadata))
    logger.info("saved %d quantized layers to %s (%d bytes)", len(entries), path, _size(path))
    return Path(path)


def load_quantized(
    path: PathLike, model: nn.Module | None = None, *, lazy: bool = False
) -> nn.Module:
    """Rebuild the converted model saved in ``path``, in eval mode, on the CPU.

    Args:
        path: a file written by ``save_quantized``.
        model: an unprepared float instance of the saved architecture (changed in place); None
            rebuilds it from the stored recipe.
        lazy: keep each quantized weight as packed codes and expand it in every forward
            (``layer.weight`` is None); inference only, about bits / 40 of the eager memory
            (eagerly, each weight takes 5 bytes: its float value and its uint8 code).

    Returns:
        The converted model; its outputs equal those of the model that was saved, bit for bit.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is truncated, corrupt (checksum), of another format or version, has
            no recipe and no ``model`` was given, or does not match ``model``'s architecture.
    """
    source = os.fspath(path)
    metadata, tensors = _read(source)
    if model is None:
        model = _build_from_recipe(metadata.get("recipe"), source)
    elif not isinstance(model, nn.Module) or _is_prepared(model):
        raise ValueError(
            f"model must be an unprepared float nn.Module of the saved architecture, got "
            f"{type(model).__name__}{' (already prepared)' if isinstance(model, nn.Module) else ''}"
            "; build a fresh float model, or pass model=None to rebuild it from the recipe"
        )
    layers = metadata["layers"]
    _check_architecture(model, layers, source)
    weights = {entry["name"]: _layer_codes(entry, tensors, source) for entry in layers}
    undo = _install_layers(model, layers)
    try:
        _check_remaining_tensors(model, layers, tensors, source)
    except ValueError:
        for parent, child, module in undo:  # leave the caller's model as it was
            setattr(parent, child, module)
        raise
    _load_tensors(model, layers, weights, tensors, lazy)
    return model.eval()


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The metadata of a packed file (format and version checked, checksum not).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable packed file of a supported version.
    """
    source = os.fspath(path)
    _check_exists(source)
    try:
        with safe_open(source, framework="pt") as handle:
            raw = handle.metadata()
    except SafetensorError as error:
        raise _unreadable(source, error) from None
    return decode_metadata(raw, source)


# -- saving ------------------------------------------------------------------------------------


def _packed_tensors(
    model: nn.Module, layers: list[tuple[str, QuantLayerMixin]]
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """The file's tensors (codes packed, float weights left out) and its per-layer metadata."""
    names = [name for name, _ in layers]
    tensors = {
        key: value.detach().cpu().contiguous().clone()
        for key, value in model.state_dict().items()
        if not _is_weight_key(key, names)
    }
    entries = []
    for name, layer in layers:
        quantizer = layer.weight_quantizer
        tensors[_key(name, CODES)] = pack_codes(quantizer.codes.cpu(), quantizer.bits)
        levels = quantizer.effective_levels.detach()
        tensors[_key(name, LEVELS)] = levels.cpu().contiguous().clone()
        entries.append(_layer_entry(name, layer))
    return tensors, entries


def _layer_entry(name: str, layer: QuantLayerMixin) -> dict[str, Any]:
    """The metadata of one quantized layer (see ``format``)."""
    quantizer, act = layer.weight_quantizer, layer.input_quantizer
    shape = quantizer.shape if layer.weight is None else tuple(layer.weight.shape)
    return {
        "name": name,
        "kind": _kind(layer),
        "shape": list(shape),
        "bits": quantizer.bits,
        "granularity": GRANULARITIES[int(quantizer.per_channel)],
        "fit": quantizer.fit,
        "act_bits": None if act is None else act.bits,
        "act_percentile": None if act is None else act.percentile,
        "act_noise": layer.act_noise,
        "hyper": _hyper(layer),
    }


# -- loading -----------------------------------------------------------------------------------


def _read(source: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Metadata and tensors of a packed file, with format, version and checksum checked."""
    _check_exists(source)
    try:
        with safe_open(source, framework="pt") as handle:
            metadata = decode_metadata(handle.metadata(), source)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except SafetensorError as error:
        raise _unreadable(source, error) from None
    verify_checksum(metadata, tensors, source)
    return metadata, tensors


def _build_from_recipe(recipe: object, source: str) -> nn.Module:
    """``build_model(**recipe)``, or a ValueError saying to pass the model."""
    if not isinstance(recipe, dict):
        raise ValueError(
            f"{source} stores no build recipe: pass model=<an unprepared float instance of its "
            "architecture>, or save it with save_quantized(..., recipe=model_recipe(...))"
        )
    from uniq_quant.models import build_model  # the zoo (and torchvision) only when needed

    try:
        return build_model(**recipe)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{source} stores the recipe {recipe} that this uniq-quant cannot build ({error}); "
            "pass the float model as model="
        ) from None


def _check_architecture(model: nn.Module, layers: list[dict[str, Any]], source: str) -> None:
    """ValueError unless each stored layer is in ``model`` with its type and hyperparameters."""
    problems = []
    for entry in layers:
        name, kind = entry["name"], entry["kind"]
        try:
            module = model.get_submodule(name)
        except AttributeError:
            problems.append(f"no layer {name!r}")
            continue
        if type(module) is not _FLOAT_TYPES.get(kind):
            problems.append(f"{name!r} is a {type(module).__name__}, not a {kind}")
            continue
        hyper = _hyper(module)
        diffs = [
            f"{k} {hyper.get(k)} != {v}" for k, v in entry["hyper"].items() if hyper.get(k) != v
        ]
        if diffs:
            problems.append(f"{name!r} differs: {', '.join(diffs)} (model != file)")
    if problems:
        raise _mismatch(model, source, problems)


def _install_layers(
    model: nn.Module, layers: list[dict[str, Any]]
) -> list[tuple[nn.Module, str, nn.Module]]:
    """Swap the quantized twin of each stored layer into ``model`` by name, in float mode.

    Returns:
        (parent, child name, float module) of every swap, to undo them.
    """
    undo = []
    for flow_index, entry in enumerate(layers):
        parent_name, _, child = entry["name"].rpartition(".")
        parent = model.get_submodule(parent_name)
        module = getattr(parent, child)
        act = {} if entry["act_bits"] is None else {"act_percentile": entry["act_percentile"]}
        twin = QUANTIZED_TWINS[type(module)].from_float(
            module,
            weight_bits=entry["bits"],
            act_bits=entry["act_bits"],
            per_channel=entry["granularity"] == "per_channel",
            fit=entry["fit"],
            act_noise=entry["act_noise"],
            **act,
        )
        twin.flow_index = flow_index
        setattr(parent, child, twin)
        undo.append((parent, child, module))
    return undo


def _layer_codes(
    entry: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], source: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed codes, levels) of one layer, checked against its metadata."""
    name, bits, shape = entry["name"], entry["bits"], tuple(entry["shape"])
    packed, levels = tensors.get(_key(name, CODES)), tensors.get(_key(name, LEVELS))
    groups = shape[0] if entry["granularity"] == "per_channel" else None
    wanted = {
        "codes": ((packed_size(math.prod(shape), bits),), torch.uint8),
        "levels": ((2**bits,) if groups is None else (groups, 2**bits), None),
    }
    for what, tensor in (("codes", packed), ("levels", levels)):
        shape_wanted, dtype_wanted = wanted[what]
        found = None if tensor is None else (tuple(tensor.shape), tensor.dtype)
        if found is None or found[0] != shape_wanted or dtype_wanted not in (None, found[1]):
            raise ValueError(
                f"{source} is inconsistent: layer {name!r} needs {what} of shape {shape_wanted}, "
                f"found {found}; export the model again"
            )
    return packed, levels


def _check_remaining_tensors(
    model: nn.Module, layers: list[dict[str, Any]], tensors: Mapping[str, torch.Tensor], source: str
) -> None:
    """ValueError unless the file's other tensors match the model's state_dict, name and shape."""
    names = [entry["name"] for entry in layers]
    wanted = {k: v.shape for k, v in model.state_dict().items() if not _is_weight_key(k, names)}
    stored = {k: v.shape for k, v in tensors.items() if not _is_weight_key(k, names)}
    missing, extra = sorted(wanted.keys() - stored), sorted(stored.keys() - wanted)
    problems = [f"tensor {k!r} is missing from the file" for k in missing]
    problems += [f"the file's tensor {k!r} has no place in the model" for k in extra]
    problems += [
        f"{k!r} has shape {tuple(stored[k])} in the file but {tuple(wanted[k])} in the model"
        for k in sorted(wanted.keys() & stored)
        if stored[k] != wanted[k]
    ]
    if problems:
        raise _mismatch(model, source, problems)


def _load_tensors(
    model: nn.Module,
    layers: list[dict[str, Any]],
    weights: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    tensors: Mapping[str, torch.Tensor],
    lazy: bool,
) -> None:
    """Fill the installed layers and the rest of the model, and freeze them as convert() does."""
    names = [entry["name"] for entry in layers]
    state = {k: v for k, v in tensors.items() if not _is_weight_key(k, names)}
    for entry in layers:
        name = entry["name"]
        layer = model.get_submodule(name)
        packed, levels = weights[name]
        shape = tuple(entry["shape"])
        if lazy:
            layer.weight_quantizer = PackedWeightQuantizer(
                packed,
                levels,
                entry["bits"],
                shape,
                layer.weight_quantizer.per_channel,
                entry["fit"],
            )
            layer.weight = None
            continue
        codes = unpack_codes(packed, entry["bits"], math.prod(shape), shape)
        state[_key(name, "weight")] = dequantize(codes, levels)
        state[_key(name, CODES)] = codes
        state[_key(name, LEVELS)] = levels
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (lazy and _is_weight_key(k, names))]
    assert not missing and not result.unexpected_keys, "keys were checked before loading"
    for name in names:
        layer = model.get_submodule(name)
        layer.mode = "quant"
        if layer.weight is not None:
            layer.weight.requires_grad_(False)
            layer.weight_quantizer.decoded = layer.weight.detach()  # = dequantize(codes, levels)
        if layer.input_quantizer is not None:
            layer.input_quantizer.freeze()


# -- helpers -----------------------------------------------------------------------------------


def _key(module_name: str, leaf: str) -> str:
    return f"{module_name}.{leaf}" if module_name else leaf


def _is_weight_key(key: str, names: Sequence[str]) -> bool:
    """True for a quantized layer's float weight or anything of its weight quantizer."""
    return any(
        key == _key(n, "weight") or key.startswith(_key(n, "weight_quantizer.")) for n in names
    )


def _kind(layer: nn.Module) -> str:
    return next(kind for cls, kind in _KINDS.items() if isinstance(layer, cls))


def _hyper(module: nn.Module) -> dict[str, Any]:
    """The constructor arguments of a Conv or Linear layer, as JSON values."""
    if isinstance(module, nn.Linear):
        hyper = {k: getattr(module, k) for k in _LINEAR_HYPER}
    else:
        hyper = {k: getattr(module, k) for k in _CONV_HYPER}
        hyper.update(groups=module.groups, padding_mode=module.padding_mode)
    hyper["bias"] = module.bias is not None
    return json.loads(json.dumps(hyper))


def _is_prepared(model: nn.Module) -> bool:
    return any(isinstance(m, QuantLayerMixin) for m in model.modules())


def _mismatch(model: nn.Module, source: str, problems: list[str]) -> ValueError:
    listed = "; ".join(problems[:_LISTED])
    more = f"; ... ({len(problems) - _LISTED} more)" if len(problems) > _LISTED else ""
    return ValueError(
        f"{source} holds a different architecture than the given {type(model).__name__}: "
        f"{listed}{more}. Pass a float instance of the architecture it was saved from, or "
        "model=None to rebuild it from the stored recipe"
    )


def _unreadable(source: str, error: Exception) -> ValueError:
    return ValueError(
        f"{source} is not a complete safetensors file ({error}); it is truncated or damaged: "
        "export the model again"
    )


def _check_exists(source: str) -> None:
    if not os.path.isfile(source):
        raise FileNotFoundError(f"no packed model file at {source!r}; check the path")


def _json_value(value: object, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{what} must be JSON-serializable (str, int, list, dict): {error}"
        ) from None


def _input_shape(shape: Sequence[int] | None) -> list[int] | None:
    if shape is None:
        return None
    values = list(shape)
    if not values or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
    ):
        raise ValueError(
            f"input_shape must be positive ints without the batch dim, e.g. (3, 224, 224), "
            f"got {shape!r}"
        )
    return values


def _library_version() -> str:
    import uniq_quant  # at call time: the package imports this module while it initializes

    return uniq_quant.__version__


def _size(path: PathLike) -> int:
    return os.path.getsize(path)
