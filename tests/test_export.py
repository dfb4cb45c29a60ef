"""Export: packed files load back bit-identical, stay near their analytic size, refuse damage;
ONNX matches torch; the ``export`` command."""

import argparse
import copy
import itertools
import json
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from uniq_quant import QuantConfig, calibrate, convert, prepare, quantized_layers
from uniq_quant.bops import count_bops
from uniq_quant.commands import export as export_command
from uniq_quant.export import (
    FORMAT_NAME,
    FORMAT_VERSION,
    PackedWeightQuantizer,
    export_onnx,
    load_quantized,
    packed_size,
    read_metadata,
    save_quantized,
)
from uniq_quant.export.format import CODES, LEVELS, METADATA_KEY, checksum
from uniq_quant.export.onnx import OUTPUT_NAME, onnx_graph_model
from uniq_quant.models import build_model, model_recipe
from uniq_quant.report import layer_report

ONNX_TOLERANCE = 1e-4  # the kernels of torch and of the ONNX runtimes round differently


class Converted(NamedTuple):
    model: nn.Module  # converted, eval mode
    float_model: nn.Module  # the same weights before prepare
    recipe: dict | None
    config: QuantConfig
    shape: tuple[int, ...]  # one input without the batch dim


def _warm_batch_norm(model: nn.Module, shape: tuple[int, ...]) -> None:
    """Give BatchNorm the statistics of random inputs so an untrained net has O(1) outputs."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, *shape))
    model.eval()


def _convert(model: nn.Module, config: QuantConfig, shape: tuple[int, ...]) -> nn.Module:
    prepare(model, config, torch.randn(1, *shape))
    calibrate(model, [torch.randn(8, *shape)])
    return convert(model).eval()


def _converted(name: str, config: QuantConfig, shape: tuple[int, ...]) -> Converted:
    recipe = model_recipe(name, 10, in_channels=shape[0], image_size=shape[1])
    model = build_model(**recipe)
    _warm_batch_norm(model, shape)
    float_model = copy.deepcopy(model)
    return Converted(_convert(model, config, shape), float_model, recipe, config, shape)


def _save(c: Converted, path: Path) -> Path:
    return save_quantized(c.model, path, recipe=c.recipe, config=c.config, input_shape=c.shape)


def _assert_same_outputs(a: nn.Module, b: nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(4, *shape)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def _resident_bytes(model: nn.Module) -> int:
    """Bytes of the storages behind the parameters and buffers, each storage counted once."""
    storages = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: these small models gain nothing from two, and two threads spin
    against each other when the machine is busy (a 100x slowdown measured on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory: pytest.TempPathFactory) -> tuple[Converted, Path]:
    """torchvision ResNet-18 at 4 bits (act 8) on 64 x 64 inputs, converted and saved."""
    torch.manual_seed(0)
    converted = _converted("tv:resnet18", QuantConfig(weight_bits=4, act_bits=8), (3, 64, 64))
    return converted, _save(converted, tmp_path_factory.mktemp("resnet18") / "model.safetensors")


@pytest.fixture
def small(tmp_path: Path) -> tuple[Converted, Path]:
    """The demo CNN (with BatchNorm) at 4 bits on 28 x 28 MNIST-like inputs, saved."""
    converted = _converted("small_cnn", QuantConfig(weight_bits=4), (1, 28, 28))
    return converted, _save(converted, tmp_path / "model.safetensors")


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("lazy", [False, True])
def test_small_cnn_round_trip_is_bit_identical(small: tuple[Converted, Path], lazy: bool) -> None:
    """A model rebuilt from the file's recipe computes exactly what the saved model computed."""
    converted, path = small
    loaded = load_quantized(path, lazy=lazy)
    assert not loaded.training
    _assert_same_outputs(converted.model, loaded, converted.shape)


def test_lazily_loaded_model_reports_and_counts_like_the_saved_one(
    small: tuple[Converted, Path],
) -> None:
    """The layer table and the BOPs of a lazy model (no float weights) equal the saved one's."""
    converted, path = small
    lazy = load_quantized(path, lazy=True)
    assert layer_report(lazy) == layer_report(converted.model)
    shape = converted.shape
    assert count_bops(lazy, shape).gbops == count_bops(converted.model, shape).gbops


@pytest.mark.parametrize("lazy", [False, True])
def test_per_channel_round_trip_is_bit_identical(tmp_path: Path, lazy: bool) -> None:
    """Per-channel levels (C_out, k), depthwise convolutions included, load back exactly."""
    converted = _converted(
        "mobilenet_small", QuantConfig(weight_bits=3, per_channel=True), (3, 32, 32)
    )
    loaded = load_quantized(_save(converted, tmp_path / "m.safetensors"), lazy=lazy)
    _assert_same_outputs(converted.model, loaded, converted.shape)
    for (_, saved), (_, layer) in zip(
        quantized_layers(converted.model), quantized_layers(loaded), strict=True
    ):
        assert torch.equal(saved.weight_quantizer.codes, layer.weight_quantizer.codes)
        assert torch.equal(saved.weight_quantizer.levels, layer.weight_quantizer.levels)


@pytest.mark.parametrize("lazy", [False, True])
def test_resnet18_round_trip_is_bit_identical(resnet18: tuple[Converted, Path], lazy: bool) -> None:
    """torchvision ResNet-18, rebuilt by name from the recipe, is bit-identical."""
    converted, path = resnet18
    _assert_same_outputs(converted.model, load_quantized(path, lazy=lazy), converted.shape)


def test_float_override_layer_stays_float(tmp_path: Path) -> None:
    """A layer kept in float by an override is stored as float and loads as the plain layer."""
    config = QuantConfig(weight_bits=2, overrides={"classifier.1": "float"})
    converted = _converted("small_cnn", config, (1, 28, 28))
    path = _save(converted, tmp_path / "m.safetensors")
    loaded = load_quantized(path)
    assert type(loaded.classifier[1]) is nn.Linear
    assert [name for name, _ in quantized_layers(loaded)] == ["features.0.0", "features.2.0"]
    with safe_open(path, framework="pt") as handle:
        assert handle.get_tensor("classifier.1.weight").dtype == torch.float32
    _assert_same_outputs(converted.model, loaded, converted.shape)


class _Signal(nn.Module):
    """A user's own model, unknown to the zoo: Conv1d + BatchNorm1d + Linear."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 8, 5, padding=2)
        self.bn = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).mean(dim=2))


def test_own_model_loads_through_the_model_argument(tmp_path: Path) -> None:
    """Without a recipe, a float instance of the user's class is filled; no recipe, no model:
    a ValueError that says to pass one."""
    model = _Signal()
    _warm_batch_norm(model, (2, 16))
    config = QuantConfig(weight_bits=5, first_layer_bits="float")
    _convert(model, config, (2, 16))
    path = save_quantized(model, tmp_path / "own.safetensors", config=config)
    loaded = load_quantized(path, _Signal())
    _assert_same_outputs(model, loaded, (2, 16))
    with pytest.raises(ValueError, match="no build recipe: pass model="):
        load_quantized(path)


def test_metadata_describes_every_layer(small: tuple[Converted, Path]) -> None:
    """One JSON string holds format, version, recipe, config, input shape, layers and checksum."""
    converted, path = small
    metadata = read_metadata(path)
    assert metadata["format"] == FORMAT_NAME and metadata["version"] == FORMAT_VERSION
    assert metadata["recipe"] == converted.recipe
    assert QuantConfig.from_dict(metadata["config"]) == converted.config
    assert metadata["input_shape"] == [1, 28, 28]
    assert metadata["checksum"].startswith("sha256:")
    layers = list(quantized_layers(converted.model))
    assert [e["name"] for e in metadata["layers"]] == [name for name, _ in layers]
    for entry, (_, layer) in zip(metadata["layers"], layers, strict=True):
        assert entry["bits"] == 4 and entry["granularity"] == "per_tensor"
        assert entry["shape"] == list(layer.weight.shape)
    assert [e["act_bits"] for e in metadata["layers"]] == [None, 8, 8]


def test_save_refuses_an_unconverted_model(tmp_path: Path) -> None:
    """A float or only prepared model is a RuntimeError that says to convert() first."""
    model = build_model("small_cnn", 10, in_channels=1)
    with pytest.raises(RuntimeError, match=r"convert\(\) the model before saving"):
        save_quantized(model, tmp_path / "m.safetensors")
    prepare(model, QuantConfig(), torch.randn(1, 1, 28, 28))
    with pytest.raises(RuntimeError, match=r"convert\(\) the model before saving"):
        save_quantized(model, tmp_path / "m.safetensors")
    assert not list(tmp_path.iterdir())


def test_save_is_atomic(small: tuple[Converted, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails midway leaves the previous file intact and no temporary file."""
    converted, path = small
    before = path.read_bytes()

    def crash(tensors: dict, filename: os.PathLike, metadata: dict) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("uniq_quant.export.packed.save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        _save(converted, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_saved_file_is_readable_by_others(small: tuple[Converted, Path]) -> None:
    """The file gets a new file's usual permissions (umask applied), not owner-only."""
    _, path = small
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


# -- size and memory ---------------------------------------------------------------------------


def test_resnet18_file_is_within_2_percent_of_analytic_size(
    resnet18: tuple[Converted, Path],
) -> None:
    """File bytes ~ sum(ceil(bits * numel / 8)) + levels + float remainder (+ the header)."""
    converted, path = resnet18
    layers = list(quantized_layers(converted.model))
    codes = sum(
        packed_size(layer.weight.numel(), layer.weight_quantizer.bits) for _, layer in layers
    )
    levels = sum(layer.weight_quantizer.levels.nbytes for _, layer in layers)
    skipped = {f"{name}.{leaf}" for name, _ in layers for leaf in ("weight", CODES, LEVELS)}
    remainder = sum(t.nbytes for k, t in converted.model.state_dict().items() if k not in skipped)
    analytic = codes + levels + remainder
    size = path.stat().st_size
    print(f"\nresnet18 W4: file {size} B, analytic {analytic} B ({size / analytic - 1:+.3%})")
    assert abs(size - analytic) <= 0.02 * analytic


def test_lazy_loading_keeps_weights_packed(resnet18: tuple[Converted, Path]) -> None:
    """Lazily, every weight stays packed (bits / 8 bytes each): resident memory drops > 85 %.

    Eager: float32 weight (4 B) + uint8 codes (1 B) per weight, plus any decoded-weight cache
    of the quantizer; lazy: 0.5 B at 4 bits.
    """
    converted, path = resnet18
    eager, lazy = load_quantized(path), load_quantized(path, lazy=True)
    with torch.no_grad():  # a forward first: what stays resident during inference counts
        eager(torch.randn(1, *converted.shape))
        lazy(torch.randn(1, *converted.shape))
    eager_bytes, lazy_bytes = _resident_bytes(eager), _resident_bytes(lazy)
    print(
        f"\nresnet18 W4 resident parameters + buffers: eager {eager_bytes} B, lazy {lazy_bytes} B "
        f"(saves {eager_bytes - lazy_bytes} B, {1 - lazy_bytes / eager_bytes:.1%})"
    )
    assert lazy_bytes < 0.15 * eager_bytes
    layer = lazy.get_submodule("layer1.0.conv1")
    assert layer.weight is None and isinstance(layer.weight_quantizer, PackedWeightQuantizer)
    with pytest.raises(RuntimeError, match="lazy=False"):
        layer.mode = "float"


def test_eager_loading_keeps_one_float_copy_of_each_weight(
    resnet18: tuple[Converted, Path],
) -> None:
    """Eagerly, the frozen quantizer returns ``layer.weight`` itself: 5 bytes per weight (float
    value and uint8 code), not 9 with a second decoded copy."""
    converted, path = resnet18
    eager = load_quantized(path)
    with torch.no_grad():
        eager(torch.randn(1, *converted.shape))
    layers = list(quantized_layers(eager))
    for _, layer in layers:
        assert layer.weight_quantizer(layer.weight).data_ptr() == layer.weight.data_ptr()
    weights = sum(layer.weight.numel() for _, layer in layers)
    skipped = {f"{name}.{leaf}" for name, _ in layers for leaf in ("weight", CODES)}
    others = sum(t.nbytes for k, t in eager.state_dict().items() if k not in skipped)
    assert _resident_bytes(eager) <= 5 * weights + others + 1024


# -- integrity ---------------------------------------------------------------------------------


def _data_start(path: Path) -> int:
    """Offset of the tensor data in a safetensors file (after the 8-byte length and header)."""
    (header_length,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + header_length


@pytest.mark.parametrize("keep", ["half", "all but one byte"])
def test_truncated_file_is_an_error(small: tuple[Converted, Path], keep: str) -> None:
    """A truncated file is a ValueError that says so and to export again."""
    _, path = small
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if keep == "half" else data[:-1])
    with pytest.raises(ValueError, match="truncated or damaged: export the model again"):
        load_quantized(path)


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_altered_tensor_byte_is_an_error(small: tuple[Converted, Path], where: float) -> None:
    """One flipped byte anywhere in the tensor data fails the checksum."""
    _, path = small
    data = bytearray(path.read_bytes())
    start = _data_start(path)
    position = min(len(data) - 1, start + int(where * (len(data) - start)))
    data[position] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"checksum .* export it again"):
        load_quantized(path)


def _rewrite_metadata(path: Path, **changes: object) -> None:
    with safe_open(path, framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        metadata = json.loads(handle.metadata()[METADATA_KEY])
    metadata.update(changes)
    metadata["checksum"] = checksum(metadata, tensors)
    save_file(tensors, path, metadata={METADATA_KEY: json.dumps(metadata)})


def test_wrong_format_version_is_an_error(small: tuple[Converted, Path]) -> None:
    """A newer version asks for an upgrade, an older one for a re-export."""
    _, path = small
    _rewrite_metadata(path, version=FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match=r"version 2; .* upgrade uniq-quant"):
        load_quantized(path)
    _rewrite_metadata(path, version=0)
    with pytest.raises(ValueError, match=r"version 0; .* re-export"):
        load_quantized(path)


def test_file_of_another_format_is_an_error(tmp_path: Path) -> None:
    """A safetensors file without our metadata, or a missing file, is a clear error."""
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="without uniq-quant metadata"):
        load_quantized(path)
    with pytest.raises(FileNotFoundError, match="no packed model file"):
        load_quantized(tmp_path / "absent.safetensors")


@pytest.mark.parametrize(
    ("other", "problem"),
    [
        (lambda: build_model("resnet20", 10, in_channels=1), "no layer 'features.0.0'"),
        (lambda: build_model("small_cnn", 5, in_channels=1), "'classifier.1' differs"),
        (lambda: build_model("small_cnn", 10, in_channels=3), "'features.0.0' differs"),
    ],
)
def test_architecture_mismatch_is_an_error(
    small: tuple[Converted, Path], other: object, problem: str
) -> None:
    """A model of a different architecture is refused before anything is loaded into it."""
    _, path = small
    model = other()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=f"different architecture.*{problem}"):
        load_quantized(path, model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_remaining_tensors_must_match(small: tuple[Converted, Path]) -> None:
    """Same quantized layers but a BatchNorm without affine parameters: refused, naming the
    tensor, and the model is left unprepared."""
    _, path = small
    model = build_model("small_cnn", 10, in_channels=1)
    model.features[0][1] = nn.BatchNorm2d(16, affine=False)
    with pytest.raises(ValueError, match=r"'features\.0\.1\.weight' has no place in the model"):
        load_quantized(path, model)
    assert not list(quantized_layers(model))  # the model is left as it was


def test_prepared_model_argument_is_an_error(small: tuple[Converted, Path]) -> None:
    """``model`` must be a float model: a prepared one is refused with the fix."""
    converted, path = small
    with pytest.raises(ValueError, match="unprepared float"):
        load_quantized(path, converted.model)


# -- ONNX --------------------------------------------------------------------------------------


def _float_onnx_bytes(model: nn.Module, path: Path, x: torch.Tensor) -> int:
    with pytest.warns(DeprecationWarning):
        torch.onnx.export(copy.deepcopy(model).eval(), (x,), path, dynamo=False)
    return path.stat().st_size


@pytest.fixture(scope="module")
def mobilenet_v2() -> Converted:
    """torchvision MobileNet-V2 at 4 bits per channel (act 8) on 32 x 32 inputs, converted."""
    torch.manual_seed(0)
    return _converted("tv:mobilenet_v2", QuantConfig(weight_bits=4, per_channel=True), (3, 32, 32))


def _weights_only(model: nn.Module) -> nn.Module:
    """A copy of a converted model without its input quantizers (weights still quantized)."""
    model = copy.deepcopy(model)
    for _, layer in quantized_layers(model):
        layer.input_quantizer = None
    return model


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_onnx_graph_equals_torch_in_float64(
    request: pytest.FixtureRequest, tmp_path: Path, name: str
) -> None:
    """The exported graph, activation quantization included, computes the converted model's
    function: onnx's reference runtime on a float64 export matches torch in float64.

    In float64 the runtimes' rounding differences (~1e-16) cannot reach a rounding tie of the
    8-bit activation grid (step ~1e-2), so any difference would be the graph's own.
    """
    converted = request.getfixturevalue(name)
    converted = converted if isinstance(converted, Converted) else converted[0]
    model = copy.deepcopy(converted.model).double()
    x = torch.randn(2, *converted.shape, dtype=torch.float64)
    path = export_onnx(model, tmp_path / "q64.onnx", x[:1])
    with torch.no_grad():
        expected = model(x).numpy()
    got = ReferenceEvaluator(os.fspath(path)).run(None, {"input": x.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    print(f"\n{name} W4A8 float64: onnx reference vs torch max |diff| {diff:.1e}")
    assert diff < ONNX_TOLERANCE


@pytest.mark.parametrize(
    ("name", "size_ratio"),
    [
        ("resnet18", 0.3),  # one byte of code per weight instead of four
        ("mobilenet_v2", 0.45),  # + 16 float levels per output channel (depthwise: 9 weights)
    ],
)
def test_onnxruntime_runs_the_float32_file_as_torch(
    request: pytest.FixtureRequest, tmp_path: Path, name: str, size_ratio: float
) -> None:
    """onnxruntime runs the shipped float32 file of a weight-quantized model as torch does;
    the file is a fraction of the float ONNX."""
    converted = request.getfixturevalue(name)
    converted = converted if isinstance(converted, Converted) else converted[0]
    model = _weights_only(converted.model)
    x = torch.randn(4, *converted.shape)
    float_bytes = _float_onnx_bytes(converted.float_model, tmp_path / "f.onnx", x[:1])
    path = export_onnx(model, tmp_path / "q.onnx", x[:1])
    with torch.no_grad():
        expected = model(x).numpy()
    got = _onnxruntime(path).run(None, {"input": x.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    size = path.stat().st_size
    print(
        f"\n{name} W4 float32: onnxruntime vs torch max |diff| {diff:.1e} (logits up to "
        f"{np.abs(expected).max():.3f}); ONNX {size} B vs float ONNX {float_bytes} B "
        f"({size / float_bytes:.1%})"
    )
    assert diff < ONNX_TOLERANCE
    assert size < size_ratio * float_bytes


def test_onnxruntime_rounds_activations_as_torch_except_at_ties(
    resnet18: tuple[Converted, Path], tmp_path: Path
) -> None:
    """In float32, onnxruntime's first quantized activation equals torch's except where torch's
    x / step lies on a rounding tie to within float32 convolution error; that is the only cause
    of the larger logit differences of W4A8 models, which are printed."""
    converted = resnet18[0]
    x = torch.randn(8, *converted.shape)
    path = export_onnx(converted.model, tmp_path / "q.onnx", x[:1])

    # 1. onnxruntime: the logits and the grid indices of the first Round node
    graph = onnx.load(path)
    first_round = next(node.output[0] for node in graph.graph.node if node.op_type == "Round")
    graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(first_round))
    session = _onnxruntime(graph.SerializeToString())
    logits, grid = session.run([OUTPUT_NAME, first_round], {"input": x.numpy()})

    # 2. torch: x / step at the first input quantizer, by a hook on the traced module
    traced = onnx_graph_model(converted.model)
    quantizer = next(
        layer.input_quantizer for _, layer in quantized_layers(traced) if layer.input_quantizer
    )
    scaled = []
    quantizer.register_forward_hook(
        lambda m, args, out: scaled.append(torch.clamp(args[0], m.lo, m.hi) / m.step)
    )
    with torch.no_grad():
        expected = traced(x).numpy()
    scaled = scaled[0].numpy()

    # 3. a flip only where |frac(x / step) - 1/2| is within float32 error of 255-step sums
    flips = grid != np.round(scaled)
    tie_distance = np.abs(scaled - np.floor(scaled) - 0.5)
    print(
        f"\ntv:resnet18 W4A8 float32: onnxruntime vs torch logits max |diff| "
        f"{np.abs(logits - expected).max():.1e} (of {np.abs(expected).max():.3f}); first "
        f"activation: {int(flips.sum())} of {flips.size} values one step apart, all at ties"
    )
    assert np.all(tie_distance[flips] < 1e-3)  # |x / step| <= 255, relative error ~1e-6
    assert flips.mean() < 1e-3


def test_onnx_graph_keeps_codes_and_gathers(small: tuple[Converted, Path], tmp_path: Path) -> None:
    """Codes are uint8 initializers shaped like the weights, rebuilt by Cast + Gather; the
    input quantizers are Clip, Div, Round, Mul; no float weight of a quantized layer is stored."""
    converted, _ = small
    path = export_onnx(converted.model, tmp_path / "q.onnx", torch.randn(1, 1, 28, 28))
    graph = onnx.load(path).graph
    ops = [node.op_type for node in graph.node]
    uint8 = [i for i in graph.initializer if i.data_type == onnx.TensorProto.UINT8]
    shapes = sorted(list(i.dims) for i in uint8)
    layers = quantized_layers(converted.model)
    assert shapes == sorted(list(layer.weight.shape) for _, layer in layers)
    assert ops.count("Gather") == 3 and ops.count("Cast") >= 3
    assert ops.count("Round") == 2 and ops.count("Clip") >= 2
    floats = sum(
        np.prod(i.dims) for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT
    )
    weights = sum(layer.weight.numel() for _, layer in quantized_layers(converted.model))
    assert floats < 0.02 * weights  # levels, biases, BatchNorm and ranges only


def _onnxruntime(model: str | os.PathLike | bytes) -> onnxruntime.InferenceSession:
    source = model if isinstance(model, bytes) else os.fspath(model)
    return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])


def test_onnx_graph_model_is_exact_in_torch(tmp_path: Path) -> None:
    """The module the exporter traces computes the converted model's outputs bit for bit."""
    converted = _converted("small_cnn", QuantConfig(per_channel=True), (1, 16, 16))
    _assert_same_outputs(converted.model, onnx_graph_model(converted.model), converted.shape)
    lazy = load_quantized(_save(converted, tmp_path / "m.safetensors"), lazy=True)
    _assert_same_outputs(converted.model, onnx_graph_model(lazy), converted.shape)


def test_onnx_refuses_an_unconverted_model(tmp_path: Path) -> None:
    """Exporting before convert() is a RuntimeError; nothing is written."""
    model = build_model("small_cnn", 10, in_channels=1)
    prepare(model, QuantConfig(), torch.randn(1, 1, 28, 28))
    with pytest.raises(RuntimeError, match=r"convert\(\) the model"):
        export_onnx(model, tmp_path / "q.onnx", torch.randn(1, 1, 28, 28))
    assert not list(tmp_path.iterdir())


# -- the export command -------------------------------------------------------------------------


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    export_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", *argv])
    return args.handler(args)


def test_cli_registers_export() -> None:
    """``uniq-quant export`` is one of the command line's subcommands."""
    from uniq_quant.cli import COMMANDS

    assert "export" in COMMANDS


def test_cli_exports_a_run_folder(
    small: tuple[Converted, Path], capsys: pytest.CaptureFixture
) -> None:
    """A run folder's model.safetensors becomes model.onnx and a verified packed copy."""
    converted, path = small
    run = path.parent
    assert _cli(str(run), "--format", "onnx") == 0
    assert (run / "model.onnx").is_file()
    assert _cli(str(run), "--format", "packed") == 0
    copy_path = run / "model.packed.safetensors"
    _assert_same_outputs(converted.model, load_quantized(copy_path), converted.shape)
    assert "smaller" in capsys.readouterr().out


def test_cli_refuses_to_overwrite_without_force(
    small: tuple[Converted, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An existing output is exit code 2 unless --force."""
    _, path = small
    out = tmp_path / "out.onnx"
    out.write_bytes(b"precious")
    assert _cli(str(path), "--format", "onnx", "--out", str(out)) == 2
    assert out.read_bytes() == b"precious" and "--force" in caplog.text
    assert _cli(str(path), "--format", "onnx", "--out", str(out), "--force") == 0
    assert onnx.load(out).graph.node


def test_cli_bad_input_is_exit_code_2(
    small: tuple[Converted, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A missing path, a folder without a model, or a damaged file: exit code 2 and why."""
    _, path = small
    assert _cli(str(tmp_path / "absent"), "--format", "onnx") == 2
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert _cli(str(empty), "--format", "onnx") == 2
    assert "holds no model.safetensors" in caplog.text
    path.write_bytes(path.read_bytes()[:-1])
    assert _cli(str(path), "--format", "packed") == 2
    assert "truncated" in caplog.text


def test_cli_onnx_needs_an_input_shape(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Without a stored input shape or image size, --input-shape is asked for, then used."""
    model = build_model("small_cnn", 10, in_channels=1)
    _convert(model, QuantConfig(), (1, 28, 28))
    path = save_quantized(
        model, tmp_path / "m.safetensors", recipe=model_recipe("small_cnn", 10, 1)
    )
    assert _cli(str(path), "--format", "onnx") == 2
    assert "--input-shape" in caplog.text
    assert _cli(str(path), "--format", "onnx", "--input-shape", "1,28,28") == 0
