from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models

from ctcid.contracts import BACKBONES
from ctcid.errors import CtcidError
from ctcid.model.backbones import build_backbone, weights_file_name, weights_path


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("input_size", [16, 32])
def test_every_backbone_outputs_two_logits_per_crop(name: str, input_size: int) -> None:
    model = build_backbone(name, "scratch", input_size).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 3, input_size, input_size))
    assert logits.shape == (3, 2)
    assert torch.isfinite(logits).all()


def test_alexnet_stride_shrinks_only_for_small_crops() -> None:
    assert build_backbone("alexnet", input_size=224)[0][0].stride == (4, 4)
    assert build_backbone("alexnet", input_size=32)[0][0].stride == (1, 1)


def test_vgg_keeps_its_pools_at_32_px_and_drops_surplus_ones_below() -> None:
    def pools(model: torch.nn.Module) -> int:
        return sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())

    assert pools(build_backbone("vgg16", input_size=32)) == 5
    assert pools(build_backbone("vgg16", input_size=16)) == 4


def test_unknown_backbone_is_refused() -> None:
    with pytest.raises(CtcidError, match="unknown backbone 'vgg11'"):
        build_backbone("vgg11")


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A freshly initialised torchvision resnet18 saved under the ImageNet file name."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(11)
    state = models.resnet18(weights=None).state_dict()
    torch.save(state, folder / "resnet18-f37072fd.pth")
    return folder, state


def test_pretrained_weights_load_from_an_explicit_folder(resnet18_weights) -> None:
    folder, state = resnet18_weights
    model = build_backbone("resnet18", "pretrained", 32, weights_dir=folder)
    loaded = model.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key
    assert model.fc.out_features == 2


def test_pretrained_weights_load_from_the_torch_hub_cache(resnet18_weights, tmp_path: Path) -> None:
    folder, state = resnet18_weights
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / "resnet18-f37072fd.pth").symlink_to(folder / "resnet18-f37072fd.pth")
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        model = build_backbone("resnet18", "pretrained", 32)
    finally:
        torch.hub.set_dir(previous)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


def test_missing_weights_name_the_file_and_where_to_put_it(tmp_path: Path) -> None:
    assert weights_file_name("resnet50") == "resnet50-0676ba61.pth"
    with pytest.raises(CtcidError) as error:
        build_backbone("resnet50", "pretrained", 32, weights_dir=tmp_path)
    message = str(error.value)
    assert "resnet50-0676ba61.pth" in message
    assert str(tmp_path) in message
    assert "train.weights_dir" in message
    assert not weights_path("resnet50", tmp_path).exists()  # nothing was downloaded


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "alexnet-owt-7be5be79.pth")
    with pytest.raises(CtcidError, match="not usable as alexnet ImageNet weights"):
        build_backbone("alexnet", "pretrained", 32, weights_dir=tmp_path)
