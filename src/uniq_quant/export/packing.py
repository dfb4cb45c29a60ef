"""Bit packing: b-bit codes stored at exactly b bits each, b = 1..8.

n codes of ``bits`` bits take ``ceil(n * bits / 8)`` bytes. The layout is a little-endian bit
stream: code i occupies stream bits [i * bits, (i + 1) * bits), its least significant bit first,
and stream bit j is bit j % 8 (counted from the least significant) of byte j // 8. Unused bits
of the last byte are zero. This is ``numpy.packbits(..., bitorder="little")`` applied to the
codes' little-endian bit expansion, so any language can read the bytes without this library.

Both directions are vectorized tensor operations (no Python loop over elements): the codes are
expanded into a (n, bits) matrix of 0/1 bytes, regrouped by eights and summed with the weights
1, 2, 4, ..., 128. The intermediate bit matrix takes n * bits bytes. ``unpack_levels`` goes from
the bytes straight to the weights a codebook gives them, one look-up per byte where bytes hold
whole codes (1, 2, 4 and 8 bits).
"""

from __future__ import annotations

import functools
import math

import torch

from uniq_quant._validation import check_bits
from uniq_quant.functional.quantize import dequantize

_BYTE = 8  # bits per byte
_WORDS = {4: torch.int32, 8: torch.int64, 16: torch.complex128}  # one element of so many bytes


def packed_size(numel: int, bits: int) -> int:
    """Bytes that ``numel`` codes of ``bits`` bits take once packed: ceil(numel * bits / 8)."""
    return math.ceil(numel * check_bits(bits, what="code bits") / _BYTE)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack uint8 codes of any shape into a flat byte tensor at ``bits`` bits per code.

    Args:
        codes: uint8 tensor of values in 0..2^bits - 1, any shape (read in row-major order).
        bits: bits per code, 1..8.

    Returns:
        uint8 tensor of shape (ceil(codes.numel() * bits / 8),) on ``codes``' device.

    Raises:
        TypeError: ``codes`` is not a uint8 tensor.
        ValueError: ``bits`` is outside 1..8, or a code does not fit in ``bits`` bits.

    Example:
        >>> pack_codes(torch.tensor([1, 2, 3], dtype=torch.uint8), bits=2)
        tensor([57], dtype=torch.uint8)
    """
    bits = check_bits(bits, what="code bits")
    _check_uint8(codes, "codes")
    flat = codes.reshape(-1)
    if flat.numel() and int(flat.max()) >= 2**bits:
        raise ValueError(
            f"a code of value {int(flat.max())} does not fit in {bits} bits (max {2**bits - 1}); "
            "pack with the bits the codes were quantized at"
        )

    # 1. the little-endian bit stream, one 0/1 byte per bit: (n * bits,)
    stream = ((flat.unsqueeze(1) >> _shifts(bits, flat.device)) & 1).reshape(-1)

    # 2. pad to whole bytes and weigh each bit by its place value within its byte
    stream = torch.nn.functional.pad(stream, (0, -stream.numel() % _BYTE))
    place = torch.ones((), dtype=torch.uint8, device=flat.device) << _shifts(_BYTE, flat.device)
    return (stream.reshape(-1, _BYTE) * place).sum(dim=1, dtype=torch.uint8)


def unpack_codes(
    packed: torch.Tensor, bits: int, numel: int, shape: torch.Size | tuple[int, ...] | None = None
) -> torch.Tensor:
    """Unpack the first ``numel`` codes of ``bits`` bits from ``packed``: ``pack_codes``' inverse.

    Args:
        packed: flat uint8 tensor written by ``pack_codes``.
        bits: bits per code, 1..8.
        numel: number of codes to read.
        shape: shape of the result (its product must be ``numel``); flat (numel,) if None.

    Returns:
        uint8 tensor of codes in 0..2^bits - 1, shaped ``shape``, on ``packed``'s device.

    Raises:
        TypeError: ``packed`` is not a flat uint8 tensor.
        ValueError: ``packed`` does not hold exactly ``ceil(numel * bits / 8)`` bytes, or
            ``shape`` does not hold ``numel`` elements.
    """
    bits = check_bits(bits, what="code bits")
    _check_uint8(packed, "packed codes")
    expected = packed_size(numel, bits)
    if packed.dim() != 1 or packed.numel() != expected:
        raise ValueError(
            f"{numel} codes of {bits} bits take {expected} bytes, got a packed tensor of shape "
            f"{tuple(packed.shape)}; pass the numel and bits the codes were packed with"
        )
    shape = (numel,) if shape is None else tuple(shape)
    if math.prod(shape) != numel:
        raise ValueError(f"shape {shape} does not hold {numel} codes; pass the codes' own shape")

    # 1. the bit stream, one 0/1 byte per bit, cut to the codes' bits: (numel, bits)
    stream = (packed.unsqueeze(1) >> _shifts(_BYTE, packed.device)) & 1
    stream = stream.reshape(-1)[: numel * bits].reshape(numel, bits)

    # 2. weigh each bit by its place value within its code
    place = torch.ones((), dtype=torch.uint8, device=packed.device) << _shifts(bits, packed.device)
    return (stream * place).sum(dim=1, dtype=torch.uint8).reshape(shape)


def unpack_levels(
    packed: torch.Tensor, levels: torch.Tensor, bits: int, shape: torch.Size | tuple[int, ...]
) -> torch.Tensor:
    """``levels`` looked up by the codes in ``packed``: ``dequantize(unpack_codes(...), levels)``.

    When ``bits`` divides 8 each byte holds m = 8 / bits whole codes, so the m weights a byte
    decodes to depend on that byte alone: a table T of shape (G, 256, m), T[g, v] = the levels
    of row g that byte value v's codes select, turns the bytes into weights with one look-up per
    byte and no code tensor (G = 1 per tensor, C_out per channel, where each channel's codes
    must fill whole bytes). Other widths, and channels that share a byte, unpack the codes
    first. The result is bit-identical either way: it is the levels themselves.

    Args:
        packed: flat uint8 tensor written by ``pack_codes``.
        levels: (k,) per tensor or (C_out, k) per output channel, k = 2^bits.
        bits: bits per code, 1..8.
        shape: shape of the weight; dim 0 indexes the channels of per-channel levels.

    Returns:
        Tensor shaped ``shape`` in ``levels``' dtype, on ``packed``'s device.

    Raises:
        TypeError, ValueError: as ``unpack_codes`` and ``dequantize`` for bad input.
    """
    bits = check_bits(bits, what="code bits")
    _check_uint8(packed, "packed codes")
    shape = tuple(shape)
    numel = math.prod(shape)
    rows = _table_rows(levels, shape, bits)
    if rows is None or packed.dim() != 1 or packed.numel() != packed_size(numel, bits):
        return dequantize(unpack_codes(packed, bits, numel, shape), levels)  # or its errors

    # 1. the table of the levels each byte value decodes to, (G * 256, m)
    per_byte = _BYTE // bits
    table = rows[:, _byte_codes(bits, packed.device)].reshape(-1, per_byte)

    # 2. one look-up per byte: row g's bytes index its own 256 table rows
    index = packed.int()
    if rows.shape[0] > 1:
        offsets = torch.arange(rows.shape[0], dtype=torch.int32, device=packed.device) * 256
        index = (index.reshape(rows.shape[0], -1) + offsets.unsqueeze(1)).reshape(-1)
    words = _WORDS.get(table.shape[1] * table.element_size())
    if words is None or (table.requires_grad and torch.is_grad_enabled()):  # differentiable
        weights = table.index_select(0, index)
    else:  # each table row read as one wider element: a 1-D look-up, several times faster
        weights = table.view(words).reshape(-1).index_select(0, index).view(table.dtype)
    return weights.reshape(-1)[:numel].reshape(shape)


def _table_rows(levels: torch.Tensor, shape: tuple[int, ...], bits: int) -> torch.Tensor | None:
    """``levels`` as (G, 2^bits) rows when the per-byte look-up applies to them, else None: the
    bytes must hold whole codes, and per channel each channel's codes must fill whole bytes."""
    if _BYTE % bits or levels.dim() not in (1, 2) or levels.shape[-1] != 2**bits:
        return None
    if levels.dim() == 1:
        return levels.reshape(1, -1)
    if not shape or levels.shape[0] != shape[0] or math.prod(shape[1:]) * bits % _BYTE:
        return None
    return levels


@functools.lru_cache(maxsize=32)
def _byte_codes(bits: int, device: torch.device) -> torch.Tensor:
    """(256, 8 / bits) int64: the codes byte value v holds, in stream order, for each v. Made
    outside inference mode, so that the kept tensor also serves computations autograd tracks."""
    with torch.inference_mode(False):
        values = torch.arange(256, dtype=torch.uint8, device=device)
        return unpack_codes(values, bits, 256 * (_BYTE // bits)).reshape(256, -1).long()


def _shifts(count: int, device: torch.device) -> torch.Tensor:
    """The shifts 0..count-1 as uint8, to broadcast against a trailing dim."""
    return torch.arange(count, dtype=torch.uint8, device=device)


def _check_uint8(tensor: object, what: str) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.uint8:
        kind = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise TypeError(f"{what} must be a uint8 torch.Tensor, got {kind}")
