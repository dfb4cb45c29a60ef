"""The packed file format: its metadata, its checksum and their checks (pure functions).

A packed file is one safetensors file. Its tensors are the model's state_dict with every
quantized layer's float ``weight`` left out and its codes packed:

    NAME.weight_quantizer.codes   uint8 (ceil(numel * bits / 8),)  codes at ``bits`` bits each
    NAME.weight_quantizer.levels  float (k,) per tensor or (C_out, k) per channel
    every other state_dict entry  as in the model (biases, BatchNorm parameters and buffers,
                                  unquantized layers, activation ranges ``clip`` / ``signed``)

Its safetensors metadata holds one key, ``METADATA_KEY``, whose value is a JSON object:

    format       "uniq-quant-packed"
    version      1 (``FORMAT_VERSION``); a reader refuses a newer one
    library      the uniq-quant version that wrote the file
    recipe       ``build_model`` arguments that rebuild the architecture, or null
    config       ``QuantConfig.to_dict()``, or null
    input_shape  the model's input shape without the batch dim, e.g. [3, 224, 224], or null
    layers       one object per quantized layer, in data-flow order: name, kind (conv1d /
                 conv2d / linear), shape (of the weight), bits, granularity (per_tensor /
                 per_channel), fit, act_bits (null: no input quantizer), act_percentile,
                 act_noise and hyper (the layer's constructor arguments)
    checksum     "sha256:" + the hex digest of ``checksum`` over the metadata without this key
                 and every tensor (name, dtype, shape, bytes) in name order
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch

FORMAT_NAME = "uniq-quant-packed"
FORMAT_VERSION = 1
METADATA_KEY = "uniq_quant"
CODES = "weight_quantizer.codes"
LEVELS = "weight_quantizer.levels"
GRANULARITIES = ("per_tensor", "per_channel")
KINDS = ("conv1d", "conv2d", "linear")
LAYER_KEYS = frozenset(
    {
        "name",
        "kind",
        "shape",
        "bits",
        "granularity",
        "fit",
        "act_bits",
        "act_percentile",
        "act_noise",
        "hyper",
    }
)
_CHECKSUM_PREFIX = "sha256:"


def checksum(metadata: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """``"sha256:<hex>"`` over the canonical JSON of ``metadata`` and ``tensors`` in name order.

    The ``checksum`` key of ``metadata`` is left out. Each tensor contributes its name, dtype,
    shape and raw bytes (row-major), so the digest does not depend on the file's layout.
    """
    digest = hashlib.sha256()
    body = {k: v for k, v in metadata.items() if k != "checksum"}
    digest.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"\n{name}|{tensor.dtype}|{list(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return _CHECKSUM_PREFIX + digest.hexdigest()


def encode_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The safetensors metadata (str -> str) holding ``metadata`` as one JSON string."""
    return {METADATA_KEY: json.dumps(metadata, sort_keys=True)}


def decode_metadata(raw: Mapping[str, str] | None, source: str) -> dict[str, Any]:
    """Parse and check the metadata of a packed file read from ``source``.

    Raises:
        ValueError: the metadata is missing or not JSON, names another format, or has a
            version this library cannot read.
    """
    if not raw or METADATA_KEY not in raw:
        raise ValueError(
            f"{source} is a safetensors file without uniq-quant metadata, not a packed model; "
            "write one with uniq_quant.export.save_quantized"
        )
    try:
        metadata = json.loads(raw[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{source} has corrupt uniq-quant metadata ({error}); re-export it"
        ) from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        found = metadata.get("format") if isinstance(metadata, dict) else metadata
        raise ValueError(
            f"{source} holds format {found!r}, not {FORMAT_NAME!r}; "
            "write it with uniq_quant.export.save_quantized"
        )
    version = metadata.get("version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        fix = "upgrade uniq-quant to read it" if newer else "re-export it with this uniq-quant"
        raise ValueError(
            f"{source} has packed format version {version!r}; this uniq-quant reads version "
            f"{FORMAT_VERSION} only: {fix}"
        )
    _check_layers(metadata.get("layers"), source)
    return metadata


def verify_checksum(
    metadata: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raise ValueError unless ``metadata["checksum"]`` matches the metadata and tensors."""
    stored = metadata.get("checksum")
    actual = checksum(metadata, tensors)
    if stored != actual:
        raise ValueError(
            f"{source} is corrupt: its checksum is {stored!r} but its content hashes to "
            f"{actual!r}; the file was altered or damaged after export, export it again"
        )


def _check_layers(layers: object, source: str) -> None:
    """ValueError unless ``layers`` is a list of complete layer entries."""
    problem = None
    if not isinstance(layers, list) or not layers:
        problem = f"'layers' is {layers!r}, not a non-empty list"
    else:
        for entry in layers:
            missing = sorted(LAYER_KEYS - set(entry) if isinstance(entry, dict) else LAYER_KEYS)
            if missing:
                problem = f"a layer entry lacks {missing}"
            elif entry["kind"] not in KINDS or entry["granularity"] not in GRANULARITIES:
                problem = f"layer {entry['name']!r} has kind {entry['kind']!r}, granularity "
                problem += f"{entry['granularity']!r}"
            elif entry["bits"] not in range(1, 9):
                problem = f"layer {entry['name']!r} has bits {entry['bits']!r}"
            if problem:
                break
    if problem:
        raise ValueError(f"{source} has malformed uniq-quant metadata: {problem}; re-export it")
