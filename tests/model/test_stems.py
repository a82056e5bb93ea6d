"""``stem="small"``: a 3x3 stride-1 first convolution and no early max-pool, for every backbone, so the
2-3 px CEP8 spots of a 32-40 px crop are not merged before the first block (ctcid.model.backbones)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models

from ctcid.contracts import BACKBONES
from ctcid.errors import CtcidError
from ctcid.model.backbones import ModelSpec, build_backbone, build_classifier, weights_file_name
from ctcid.model.dataset import Normalisation
from ctcid.model.predict import ModelInfo, load_model, save_model
from factory import INPUT_SIZE

NORMALISATION = Normalisation((300.0, 400.0, 350.0), (900.0, 500.0, 600.0))


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


# where torchvision puts the first max-pool of the features: after conv-ReLU (AlexNet), after two (VGG)
FIRST_POOL = {"alexnet": 2, "vgg16": 4, "vgg19": 4}


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("input_size", [32, 40])
def test_every_backbone_with_a_small_stem_outputs_two_logits_per_crop(name: str, input_size: int) -> None:
    model = build_backbone(name, "scratch", input_size, stem="small").eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, input_size, input_size))
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    conv = first_conv(model)
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    if name.startswith("resnet"):
        assert isinstance(model.maxpool, nn.Identity)
    else:
        assert isinstance(model[0][FIRST_POOL[name]], nn.Identity)


def test_the_resnet18_small_stem_keeps_the_crops_resolution_into_the_first_block() -> None:
    sizes = {}
    for stem in ("standard", "small"):
        model = build_backbone("resnet18", "scratch", 32, stem=stem).eval()
        seen = []
        model.layer1.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out.shape[-1]))
        with torch.no_grad():
            model(torch.randn(1, 3, 32, 32))
        sizes[stem] = seen[0]
    assert sizes == {"standard": 8, "small": 32}
    small = build_backbone("resnet18", "scratch", 32, stem="small")
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and small.conv1.bias is None
    assert isinstance(small.maxpool, nn.Identity)
    standard = build_backbone("resnet18", "scratch", 32)
    assert standard.conv1.kernel_size == (7, 7) and isinstance(standard.maxpool, nn.MaxPool2d)


def test_an_unknown_stem_is_refused() -> None:
    with pytest.raises(CtcidError, match="unknown stem 'tiny'"):
        build_backbone("resnet18", stem="tiny")  # type: ignore[arg-type]


def small_model_info(**changes: object) -> ModelInfo:
    values: dict[str, object] = dict(
        backbone="resnet18", init="scratch", input_size=INPUT_SIZE, channels=("DAPI", "CEP8", "CD45"),
        normalisation=NORMALISATION, threshold=0.4, target_sensitivity=0.95, epochs=2, seed=0, stem="small",
    )
    return ModelInfo(**(values | changes))  # type: ignore[arg-type]


def test_a_small_stem_model_survives_save_and_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_classifier("resnet18", NORMALISATION, input_size=INPUT_SIZE, stem="small").eval()
    images = 500 * torch.rand(4, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.no_grad():
        expected = model(images)
    loaded = load_model(save_model(tmp_path / "model.pt", model, small_model_info()))
    assert loaded.info.stem == "small" and loaded.info == small_model_info()
    assert loaded.model.backbone.conv1.kernel_size == (3, 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(images), expected, atol=1e-6, rtol=1e-6)


def test_the_stem_of_the_metadata_is_the_one_rebuilt(tmp_path: Path) -> None:
    model = build_classifier("resnet18", NORMALISATION, input_size=INPUT_SIZE, stem="small")
    path = save_model(tmp_path / "model.pt", model, small_model_info(stem="standard"))
    with pytest.raises(RuntimeError, match="size mismatch"):  # 3x3 weights do not fit a 7x7 stem
        load_model(path)


def test_models_saved_before_stems_read_as_standard() -> None:
    values = small_model_info().to_dict()
    del values["stem"]
    assert ModelInfo.from_dict(values).stem == "standard"


def test_a_model_spec_builds_its_stem_and_starts_a_small_stem_from_a_trained_one(tmp_path: Path) -> None:
    torch.manual_seed(1)
    spec = ModelSpec("resnet18", input_size=INPUT_SIZE, stem="small")
    champion = spec.build(NORMALISATION)
    assert isinstance(champion.backbone.maxpool, nn.Identity)
    path = save_model(tmp_path / "model.pt", champion, small_model_info())
    other = Normalisation((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    tuned = ModelSpec("resnet18", "registry", INPUT_SIZE, start_from=str(path), stem="small").build(other)
    state, start = tuned.state_dict(), champion.state_dict()
    for key, value in start.items():
        if not key.startswith("normalise."):
            assert torch.equal(state[key], value), key
    assert tuned.normalise.mean.flatten().tolist() == [1.0, 2.0, 3.0]


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A freshly initialised torchvision resnet18 saved under the ImageNet file name."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(11)
    state = models.resnet18(weights=None).state_dict()
    torch.save(state, folder / weights_file_name("resnet18"))
    return folder, state


def test_a_pretrained_small_stem_keeps_every_imagenet_weight_but_the_first_convolution(
    resnet18_weights,
) -> None:
    folder, state = resnet18_weights
    model = build_backbone("resnet18", "pretrained", 32, weights_dir=folder, stem="small")
    loaded = model.state_dict()
    replaced = {key for key in state if key.startswith(("conv1.", "fc."))}
    assert replaced == {"conv1.weight", "fc.weight", "fc.bias"}
    for key, value in state.items():
        if key not in replaced:
            assert torch.equal(loaded[key], value), key
    assert loaded["conv1.weight"].shape == (64, 3, 3, 3) and state["conv1.weight"].shape == (64, 3, 7, 7)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 2)


def test_pretrained_vgg_and_alexnet_stems_keep_their_loadable_layer_names() -> None:
    # pools carry no weights: a small stem renames nothing, so ImageNet keys still match
    for name in ("alexnet", "vgg16"):
        small = build_backbone(name, "scratch", 32, stem="small").state_dict()
        standard = build_backbone(name, "scratch", 32).state_dict()
        assert small.keys() == standard.keys()
