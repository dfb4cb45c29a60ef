"""Bit packing: exact round trips at every width, the documented layout, its checks and speed."""

import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uniq_quant.export.packing import pack_codes, packed_size, unpack_codes, unpack_levels
from uniq_quant.functional import dequantize

ALL_BITS = range(1, 9)
ODD_LENGTHS = (0, 1, 3, 7, 8, 9, 15, 17, 1001)


def _random_codes(numel: int, bits: int) -> torch.Tensor:
    return torch.randint(0, 2**bits, (numel,), dtype=torch.uint8)


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("numel", ODD_LENGTHS)
def test_round_trip_is_exact_at_every_width_and_length(bits: int, numel: int) -> None:
    """unpack(pack(c)) == c, and pack(c) holds exactly ceil(n * bits / 8) bytes."""
    codes = _random_codes(numel, bits)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (math.ceil(numel * bits / 8),) == (packed_size(numel, bits),)
    assert torch.equal(unpack_codes(packed, bits, numel), codes)


@settings(max_examples=200, deadline=None)
@given(
    bits=st.integers(1, 8),
    data=st.data(),
)
def test_round_trip_property(bits: int, data: st.DataObject) -> None:
    """For any bits in 1..8 and any list of codes below 2^bits, the round trip is exact."""
    values = data.draw(st.lists(st.integers(0, 2**bits - 1), max_size=200))
    codes = torch.tensor(values, dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.numel() == math.ceil(len(values) * bits / 8)
    assert unpack_codes(packed, bits, len(values)).tolist() == values


@pytest.mark.parametrize("bits", ALL_BITS)
def test_layout_is_numpy_little_endian_packbits(bits: int) -> None:
    """The bytes equal numpy.packbits(bitorder="little") of the codes' little-endian bits."""
    codes = _random_codes(777, bits)
    bit_matrix = (codes.numpy()[:, None] >> np.arange(bits)) & 1  # (n, bits), LSB first
    expected = np.packbits(bit_matrix.astype(np.uint8).reshape(-1), bitorder="little")
    assert np.array_equal(pack_codes(codes, bits).numpy(), expected)


def test_known_bytes() -> None:
    """Codes 1, 2, 3 at 2 bits are the stream 10 01 11 (LSB first): byte 0b00111001 = 57."""
    assert pack_codes(torch.tensor([1, 2, 3], dtype=torch.uint8), 2).tolist() == [57]
    assert pack_codes(torch.tensor([5, 3], dtype=torch.uint8), 3).tolist() == [0b011101]


def test_unused_tail_bits_are_zero() -> None:
    """The padding bits of the last byte are 0, so equal codes always give equal bytes."""
    codes = torch.full((3,), 7, dtype=torch.uint8)  # 9 bits of ones -> 0xFF, 0x01
    assert pack_codes(codes, 3).tolist() == [0xFF, 0x01]


def test_shape_is_restored() -> None:
    """Multi-dim codes pack in row-major order and unpack to the shape asked for."""
    codes = torch.randint(0, 16, (8, 3, 3, 3), dtype=torch.uint8)
    packed = pack_codes(codes, 4)
    assert torch.equal(unpack_codes(packed, 4, codes.numel(), codes.shape), codes)


def test_rejects_bad_input() -> None:
    """Wide codes, wrong dtypes, wrong byte counts and shapes are errors that name the fix."""
    with pytest.raises(ValueError, match="does not fit in 2 bits"):
        pack_codes(torch.tensor([4], dtype=torch.uint8), 2)
    with pytest.raises(TypeError, match="uint8"):
        pack_codes(torch.tensor([1, 2]), 2)
    with pytest.raises(ValueError, match=r"integer in 1\.\.8"):
        pack_codes(torch.tensor([1], dtype=torch.uint8), 9)
    packed = pack_codes(_random_codes(10, 3), 3)
    with pytest.raises(ValueError, match="11 codes of 3 bits take 5 bytes"):
        unpack_codes(packed, 3, 11)  # 10 codes took 4 bytes
    with pytest.raises(ValueError, match="does not hold 10 codes"):
        unpack_codes(packed, 3, 10, (3, 3))


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("shape", [(64, 16, 3, 3), (16, 3, 3, 3), (7, 5), (9,)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unpack_levels_equals_dequantized_codes(bits, per_channel, shape, dtype) -> None:
    """The per-byte look-up gives levels[codes] bit for bit at every width, per tensor and per
    channel, also where codes cross bytes or channels share a byte (3x3x3 kernels, odd sizes)."""
    k = 2**bits
    codes = torch.randint(0, k, shape, dtype=torch.uint8)
    levels = torch.randn((shape[0], k) if per_channel else (k,), dtype=dtype)
    weights = unpack_levels(pack_codes(codes, bits), levels, bits, shape)
    assert weights.dtype == dtype and weights.shape == shape
    assert torch.equal(weights, dequantize(codes, levels))


def test_unpack_levels_works_in_inference_mode_and_passes_gradients_to_levels() -> None:
    """Called first under inference mode, the kept byte table still serves autograd later; a
    gradient reaches levels that require one, as through dequantize."""
    codes = torch.randint(0, 16, (8, 9), dtype=torch.uint8)
    packed, levels = pack_codes(codes, 4), torch.randn(16)
    with torch.inference_mode():
        assert torch.equal(unpack_levels(packed, levels, 4, codes.shape), dequantize(codes, levels))
    ours, reference = levels.clone().requires_grad_(), levels.clone().requires_grad_()
    upstream = torch.randn(codes.shape)
    (unpack_levels(packed, ours, 4, codes.shape) * upstream).sum().backward()
    (dequantize(codes, reference) * upstream).sum().backward()
    torch.testing.assert_close(ours.grad, reference.grad)  # sums in another order


def test_unpack_levels_rejects_bad_input_like_unpack_codes_and_dequantize() -> None:
    """Codes that are not packed bytes, a wrong byte count, or levels for other channels."""
    codes = torch.randint(0, 16, (8, 9), dtype=torch.uint8)
    packed = pack_codes(codes, 4)
    with pytest.raises(TypeError, match="uint8"):
        unpack_levels(packed.long(), torch.randn(16), 4, codes.shape)
    with pytest.raises(ValueError, match="take 36 bytes"):
        unpack_levels(packed[:-1], torch.randn(16), 4, codes.shape)
    for levels in (torch.randn(3, 16), torch.randn(1, 16), torch.tensor(1.0)):
        with pytest.raises(ValueError, match="C_out"):
            unpack_levels(packed, levels, 4, codes.shape)


def test_resnet18_sized_tensor_packs_in_well_under_a_second() -> None:
    """11.7M codes (all of ResNet-18's weights) pack and unpack at 3 bits in < 1 s each.

    Measured about 0.1 s each on 2 CPU cores; the bound leaves 10x for a slow CI machine.
    """
    codes = _random_codes(11_700_000, 3)
    start = time.perf_counter()
    packed = pack_codes(codes, 3)
    packing = time.perf_counter() - start
    start = time.perf_counter()
    restored = unpack_codes(packed, 3, codes.numel())
    unpacking = time.perf_counter() - start
    print(f"11.7M codes at 3 bits: pack {packing:.3f} s, unpack {unpacking:.3f} s")
    assert torch.equal(restored, codes)
    assert packing < 1.0 and unpacking < 1.0
