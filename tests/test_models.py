"""The model zoo: every name builds, shapes hold, recipes rebuild, checkpoints load."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from uniq_quant.models import (
    MIN_IMAGE_SIZE,
    MODEL_NAMES,
    available_models,
    build_model,
    load_float_checkpoint,
    model_recipe,
    torchvision_model_names,
)
from uniq_quant.models.torchvision_models import replace_first_conv

# (in_channels, image size, classes): MNIST-like and CIFAR-100-like inputs.
INPUTS = [(1, 28, 10), (3, 32, 100)]
# Parameter counts of He et al. 2016, table 6, rounded to 10k.
PAPER_RESNET_PARAMS = {"resnet20": 0.27e6, "resnet32": 0.46e6, "resnet56": 0.85e6}


def _same_architecture(a: nn.Module, b: nn.Module) -> bool:
    shapes_a = {k: v.shape for k, v in a.state_dict().items()}
    shapes_b = {k: v.shape for k, v in b.state_dict().items()}
    return shapes_a == shapes_b


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("in_channels", "size", "classes"), INPUTS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_own_models_give_logits_of_the_right_shape(
    name: str, in_channels: int, size: int, classes: int
) -> None:
    """Each of our models maps (N, C, H, W) to finite (N, classes) logits in train and eval."""
    model = build_model(name, classes, in_channels, image_size=size)
    x = torch.randn(2, in_channels, size, size)
    for training in (True, False):
        logits = model.train(training)(x)
        assert logits.shape == (2, classes)
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_own_models_accept_the_smallest_images(name: str) -> None:
    """Each of our models runs on MIN_IMAGE_SIZE x MIN_IMAGE_SIZE images (the 8 x 8 digits)."""
    model = build_model(name, 10, in_channels=1, image_size=MIN_IMAGE_SIZE).eval()
    logits = model(torch.randn(2, 1, MIN_IMAGE_SIZE, MIN_IMAGE_SIZE))
    assert logits.shape == (2, 10)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_module_of_our_models_runs_once_per_forward(name: str) -> None:
    """No module instance serves two places, so per-module hooks see one call each."""
    model = build_model(name, 10, in_channels=3)
    leaves = [m for m in model.modules() if not list(m.children())]
    calls = {id(m): 0 for m in leaves}

    def count(module: nn.Module, *_: object) -> None:
        calls[id(module)] += 1

    for m in leaves:
        m.register_forward_hook(count)
    model(torch.randn(2, 3, 32, 32))
    assert set(calls.values()) == {1}


def test_cifar_resnets_have_the_papers_parameter_counts() -> None:
    """Option-A shortcuts add no parameters: counts match the paper to 1% (its rounding)."""
    for name, paper in PAPER_RESNET_PARAMS.items():
        assert _n_params(build_model(name, 10)) == pytest.approx(paper, rel=0.01)


def test_small_models_stay_small() -> None:
    """mobilenet_small has 100k-300k parameters; small_cnn and lenet5 fewer than 100k."""
    assert 100_000 <= _n_params(build_model("mobilenet_small", 10)) <= 300_000
    assert _n_params(build_model("small_cnn", 10, 1)) < 100_000
    assert _n_params(build_model("lenet5", 10, 1)) < 100_000


def test_small_cnn_fits_random_labels() -> None:
    """25 seeded Adam steps on 16 random images with fixed labels cut the loss tenfold.

    Over seeds 0-7 the final loss is 0.05-0.25% of the initial one, so the factor 10 leaves a
    margin of 40 or more.
    """
    model = build_model("small_cnn", 10, in_channels=1)
    x = torch.randn(16, 1, 12, 12)
    y = torch.randint(0, 10, (16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_torchvision_resnet18_takes_one_channel_images() -> None:
    """tv:resnet18 with in_channels=1 runs on 1 x 64 x 64 images; conv1 differs only in C_in."""
    model = build_model("tv:resnet18", 10, in_channels=1, image_size=64).eval()
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)
    rgb = build_model("tv:resnet18", 10, in_channels=3).conv1
    gray = model.conv1
    assert gray.in_channels == 1
    for attr in ("out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
        assert getattr(gray, attr) == getattr(rgb, attr)
    assert (gray.bias is None) == (rgb.bias is None)


def test_torchvision_mobilenet_v2_builds() -> None:
    """tv:mobilenet_v2 builds untrained with the requested classes and runs on 32 x 32 RGB."""
    model = build_model("tv:mobilenet_v2", 7).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_torchvision_vit_is_built_for_the_image_size() -> None:
    """Vision transformers receive image_size, so a 64 x 64 ViT runs on 64 x 64 images."""
    model = build_model("tv:vit_b_32", 10, in_channels=1, image_size=64).eval()
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 10)


def test_replace_first_conv_errors_without_a_conv() -> None:
    """A model without Conv2d cannot change its input channels, and the error says so."""
    with pytest.raises(ValueError, match=r"no nn\.Conv2d"):
        replace_first_conv(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), 1)


@pytest.mark.parametrize("name", [*MODEL_NAMES, "tv:resnet18"])
def test_recipe_round_trip_rebuilds_the_architecture(name: str) -> None:
    """build_model(**json round trip of model_recipe) has the same state_dict keys and shapes."""
    recipe = model_recipe(name, 10, in_channels=1, image_size=28)
    rebuilt = build_model(**json.loads(json.dumps(recipe)))
    assert recipe == {"name": name, "num_classes": 10, "in_channels": 1, "image_size": 28}
    assert _same_architecture(rebuilt, build_model(name, 10, in_channels=1, image_size=28))


@pytest.mark.parametrize("wrap", ["plain", "module", "model", "state_dict+module"])
def test_load_float_checkpoint_unwraps_nesting_and_ddp_prefixes(wrap: str, tmp_path) -> None:
    """Plain, DDP-prefixed and nested state_dicts load from a file with every tensor equal."""
    source = build_model("resnet20", 10)
    state = source.state_dict()
    prefixed = {f"module.{k}": v for k, v in state.items()}
    checkpoint = {
        "plain": state,
        "module": prefixed,
        "model": {"model": state, "epoch": 3},
        "state_dict+module": {"state_dict": prefixed, "optimizer": {}},
    }[wrap]
    path = tmp_path / "ckpt.pt"
    torch.save(checkpoint, path)
    target = load_float_checkpoint(build_model("resnet20", 10), path)
    for key, value in target.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_load_float_checkpoint_accepts_a_torchvision_state_dict() -> None:
    """A torchvision model's state_dict loads, in memory, into tv:NAME of the same classes."""
    source = build_model("tv:mobilenet_v2", 10)
    target = load_float_checkpoint(build_model("tv:mobilenet_v2", 10), source.state_dict())
    weight = target.features[0][0].weight
    assert torch.equal(weight, source.features[0][0].weight)


def test_float_checkpoint_loads_strictly_into_quantized_layers() -> None:
    """Quantized twins keep the float keys, so a float state_dict loads with strict=True."""
    from uniq_quant.nn import QuantConv2d, QuantLinear

    state = build_model("small_cnn", 10, in_channels=1).state_dict()
    model = build_model("small_cnn", 10, in_channels=1)
    model.features[0][0] = QuantConv2d.from_float(model.features[0][0], weight_bits=4, act_bits=8)
    model.classifier[1] = QuantLinear.from_float(model.classifier[1], weight_bits=4, act_bits=8)
    load_float_checkpoint(model, state)
    assert torch.equal(model.features[0][0].weight, state["features.0.0.weight"])
    assert torch.equal(model.classifier[1].weight, state["classifier.1.weight"])


def test_classifier_mismatch_names_the_key_and_both_shapes() -> None:
    """A checkpoint with other num_classes raises naming key and shapes, and loads nothing."""
    model = build_model("resnet20", 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"'fc\.weight'.*\(100, 64\).*\(10, 64\).*num_classes=100"):
        load_float_checkpoint(model, build_model("resnet20", 100).state_dict())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_input_channel_mismatch_suggests_in_channels() -> None:
    """A checkpoint for RGB input loaded into a 1-channel model suggests in_channels=3."""
    model = build_model("tv:resnet18", 10, in_channels=1)
    with pytest.raises(ValueError, match=r"'conv1\.weight'.*in_channels=3"):
        load_float_checkpoint(model, build_model("tv:resnet18", 10).state_dict())


def test_architecture_mismatch_lists_keys_unless_not_strict() -> None:
    """Extra keys raise (strict) naming them and load nothing; strict=False loads the rest."""
    deeper = build_model("resnet32", 10).state_dict()
    model = build_model("resnet20", 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"unexpected keys \['layer1\.3\."):
        load_float_checkpoint(model, deeper)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    model = load_float_checkpoint(build_model("resnet20", 10), deeper, strict=False)
    assert torch.equal(model.conv1.weight, deeper["conv1.weight"])


@pytest.mark.parametrize("name", ["resnet18", "foo", "tv:", "tv:no_such_net", 3])
def test_unknown_names_list_the_choices(name: object) -> None:
    """Unknown names raise ValueError pointing at our names or torchvision's list."""
    with pytest.raises(ValueError, match=r"torchvision\.models\.list_models") as err:
        build_model(name, 10)
    if not str(name).startswith("tv:"):
        assert all(repr(n) in str(err.value) for n in MODEL_NAMES)
        assert "tv:NAME" in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
        ({"num_classes": True}, "num_classes must be a positive integer, got True"),
        ({"num_classes": 10, "in_channels": 2.0}, "in_channels must be a positive integer"),
        ({"num_classes": 10, "image_size": 4}, "at least 8 x 8 pixels, got image_size=4"),
    ],
)
def test_bad_sizes_are_rejected(kwargs: dict, match: str) -> None:
    """Counts and sizes must be positive integers; our models need 8 x 8 pixels or more."""
    with pytest.raises(ValueError, match=match):
        build_model("small_cnn", **kwargs)


def test_available_models_lists_ours_then_torchvision() -> None:
    """available_models() is our names followed by tv:NAME for every torchvision classifier."""
    names = available_models()
    assert tuple(names[: len(MODEL_NAMES)]) == MODEL_NAMES
    assert names[len(MODEL_NAMES) :] == [f"tv:{n}" for n in torchvision_model_names()]
    assert "tv:resnet18" in names


def test_models_work_without_torchvision() -> None:
    """With torchvision unimportable our models build, and tv: names say how to get it."""
    code = (
        "import sys; sys.modules['torchvision'] = None\n"
        "from uniq_quant.models import available_models, build_model, MODEL_NAMES\n"
        "assert available_models() == list(MODEL_NAMES)\n"
        "build_model('small_cnn', 10, 1)\n"
        "try:\n"
        "    build_model('tv:resnet18', 10)\n"
        "except ImportError as err:\n"
        "    assert 'pip install torchvision' in str(err), err\n"
        "else:\n"
        "    raise AssertionError('tv:resnet18 built without torchvision')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
