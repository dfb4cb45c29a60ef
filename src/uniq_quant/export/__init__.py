"""Shipping a converted model: one packed low-bit file, and ONNX.

Modules:
    packing: pack_codes / unpack_codes, b-bit codes stored at exactly b bits each, and
        unpack_levels, packed codes straight to their levels (pure).
    format: the packed file's metadata, checksum and their checks (pure).
    packed: save_quantized / load_quantized, a converted model to one safetensors file and back.
    lazy: PackedWeightQuantizer, codes kept packed in memory and expanded in forward.
    onnx: export_onnx, codes and levels as initializers and the weights rebuilt by Gather.
"""

from uniq_quant.export.format import FORMAT_NAME, FORMAT_VERSION
from uniq_quant.export.lazy import PackedWeightQuantizer
from uniq_quant.export.onnx import export_onnx
from uniq_quant.export.packed import load_quantized, read_metadata, save_quantized
from uniq_quant.export.packing import pack_codes, packed_size, unpack_codes, unpack_levels

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "PackedWeightQuantizer",
    "export_onnx",
    "load_quantized",
    "pack_codes",
    "packed_size",
    "read_metadata",
    "save_quantized",
    "unpack_codes",
    "unpack_levels",
]
