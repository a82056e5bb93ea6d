"""The paper's five CNN backbones, adapted to small three-channel single-cell crops.

Each backbone is torchvision's architecture with three changes for crops of 16-64 px, where
ImageNet's 224 px assumptions break (each is documented in docs/training.md):

* **Head.** Global average pooling and one ``Linear(channels, 2)`` replace the classifier. The
  4096-wide VGG/AlexNet classifiers hold ~90 % of the parameters (VGG16: 120 M of 138 M), would
  memorise a few hundred crops and dominate CPU time; at 32 px the last feature map is 1x1, so
  their 7x7 adaptive pooling would only copy one value 49 times. ResNet already pools globally;
  only its 1000-way ``fc`` becomes 2-way.
* **AlexNet stride.** The first convolution (11x11, stride 4) is followed by three 3x3/2 max
  pools; at 32 px the map vanishes after the third pool. The stride is lowered (4, then 2, then 1)
  to the largest value that keeps at least a 1x1 map, which costs less than up-sampling the
  crop to 64+ px. The 11x11 kernel is kept so ImageNet weights still load.
* **Surplus pooling.** Where even that is not enough (VGG below 32 px, AlexNet below ~17 px),
  trailing max pools become identities. Pools have no weights, so layer names and pretrained
  loading are unchanged.

``init="pretrained"`` loads ImageNet weights strictly into the *unmodified* torchvision model
first, so a wrong or truncated file fails loudly, then adapts it. Nothing is ever downloaded.
``init="registry"`` starts from the weights of a trained ctcid ``model.pt`` of the same backbone
(the registry's champion, :mod:`ctcid.model.transfer`): every layer but the channel normalisation,
whose statistics come from the new training crops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torchvision import models

from ctcid.contracts import BACKBONES, STEMS, Init, Stem
from ctcid.errors import CtcidError
from ctcid.model.dataset import ChannelNormalise, Normalisation
from ctcid.model.spot_layer import N_FEATURES as N_SPOT_FEATURES
from ctcid.model.spot_layer import RULE_FEATURE, SPOT_KEYS, SpotCounts

N_CLASSES = 2
RULE_PRIOR = 6.0  # logits the rule's call on the crop is worth to a new fusion model, each way

# torchvision's constructor of each backbone has the backbone's name
_CONSTRUCTORS: dict[str, Callable[..., nn.Module]] = {name: getattr(models, name) for name in BACKBONES}

# torchvision's IMAGENET1K_V1 weights, the ones available when the paper was written; the file
# names are those torch.hub caches them under, so an existing cache is found as is.
WEIGHT_URLS: dict[str, str] = {
    name: models.get_model_weights(name).IMAGENET1K_V1.url
    for name in BACKBONES  # type: ignore[attr-defined]
}


def weights_file_name(name: str) -> str:
    """File name of the ImageNet weights of ``name``, e.g. ``resnet18-f37072fd.pth``."""
    return WEIGHT_URLS[_check_name(name)].rsplit("/", 1)[-1]


def weights_path(name: str, weights_dir: str | Path | None = None) -> Path:
    """Where the weights of ``name`` are looked for: ``weights_dir`` or the torch hub cache."""
    folder = Path(weights_dir) if weights_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    return folder / weights_file_name(name)


def build_backbone(
    name: str,
    init: Init = "scratch",
    input_size: int = 32,
    weights_dir: str | Path | None = None,
    stem: Stem = "standard",
) -> nn.Module:
    """A 2-class classifier of ``3 x input_size x input_size`` crops; outputs logits ``N x 2``.

    ``stem="small"`` (:func:`_small_stem`) replaces the first layers after any ImageNet weights
    are loaded: the new first convolution starts from random weights, the rest keeps them.
    """
    _check_name(name)
    if init not in ("scratch", "pretrained"):
        raise CtcidError(f"init {init!r} builds no bare backbone; use 'scratch' or 'pretrained'")
    if stem not in STEMS:
        raise CtcidError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    network = _CONSTRUCTORS[name](weights=None)
    if init == "pretrained":
        _load_imagenet(network, name, weights_path(name, weights_dir))
    if stem == "small":
        _small_stem(network, name)
    if name.startswith("resnet"):
        network.fc = nn.Linear(network.fc.in_features, N_CLASSES)
        return network
    if name == "alexnet" and stem == "standard":
        _fit_alexnet_stride(network.features, input_size)
    _drop_surplus_pools(network.features, input_size, name)
    return nn.Sequential(network.features, _pooled_head(_out_channels(network.features)))


def _small_stem(network: nn.Module, name: str) -> None:
    """A 3x3 stride-1 first convolution and no max-pool before the first block.

    ImageNet stems shrink a 224 px image 4x before any block (7x7/2 conv and 3x3/2 pool in ResNet,
    11x11/4 conv in AlexNet); on a 32-40 px crop that leaves an 8-10 px map in which the 2-3 px
    CEP8 spots of one nucleus merge before the network can count them. VGG's first convolution is
    already 3x3/1, so only its first pool goes. Pools carry no weights, so names stay loadable.
    """
    if name.startswith("resnet"):
        network.conv1 = nn.Conv2d(3, network.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        network.maxpool = nn.Identity()
        return
    features = network.features
    if name == "alexnet":
        features[0] = nn.Conv2d(3, features[0].out_channels, 3, stride=1, padding=1)
    first_pool = next(i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d))
    features[first_pool] = nn.Identity()


class CellClassifier(nn.Module):
    """Resized raw-intensity crops in, 2-class logits out: channel normalisation, then the backbone.

    The normalisation statistics are buffers, so a saved state dict carries its preprocessing.
    With ``spots`` (:class:`~ctcid.model.spot_layer.SpotCounts`, ``train.spot_features``) the
    backbone's last linear layer gives way to a ``head`` over its pooled features plus a
    ``spot_head`` over the crop's CEP8 spot counts, their logits summed: a fusion model that still
    takes crops alone.
    """

    def __init__(
        self,
        backbone: nn.Module,
        normalisation: Normalisation,
        spots: SpotCounts | None = None,
        cnn_size: int | None = None,
    ) -> None:
        super().__init__()
        self.normalise: ChannelNormalise = normalisation.module()
        self.backbone = backbone
        self.spots = spots
        self.cnn_size = cnn_size  # a spot model reads native crops and resizes them for its backbone
        if spots is not None:
            self.head = nn.Linear(_drop_final_linear(backbone), N_CLASSES)
            self.spot_head = nn.Linear(N_SPOT_FEATURES, N_CLASSES)
            # how much of the CNN's opinion is added to the criterion's features: 0 at the start
            self.cnn_gain = nn.Parameter(torch.zeros(()))
            self._start_from_the_rule()

    @torch.no_grad()
    def _start_from_the_rule(self) -> None:
        """A new fusion model starts as the rule on the crop (the floor every champion must clear).

        The spot head gives the rule's call RULE_PRIOR logits either way and the CNN's logits enter
        squashed (tanh) and scaled by ``cnn_gain``, which starts at 0 (ReZero: Bachlechner et al.,
        2020): the fit begins at the rule and the CNN adds only what lowers the loss, never more
        than ``|cnn_gain|`` logits. Started from nothing, or with the
        CNN at full weight, the fusion ended worse than the rule per patient out of fold: the CNN
        moved look-alikes and leukocytes it could not tell apart (docs/results.md#levers-issue-29).
        """
        self.spot_head.weight.zero_()
        self.spot_head.weight[1, RULE_FEATURE] = RULE_PRIOR
        self.spot_head.weight[0, RULE_FEATURE] = -RULE_PRIOR
        self.spot_head.bias.copy_(torch.tensor([RULE_PRIOR / 2, -RULE_PRIOR / 2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spots is None:
            return self.backbone(self.normalise(x))
        small = x
        if self.cnn_size is not None and x.shape[-1] != self.cnn_size:
            size = (self.cnn_size, self.cnn_size)
            small = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        features = self.backbone(self.normalise(small))
        # bounded: a diverging backbone (VGG without BatchNorm) cannot outvote the criterion's features
        residual = self.cnn_gain * torch.tanh(self.head(features))
        return residual + self.spot_head(self.spots(x).to(features.dtype))


def _drop_final_linear(backbone: nn.Module) -> int:
    """Replace the backbone's last ``nn.Linear`` by an identity; returns its input width."""
    name, final = [(n, m) for n, m in backbone.named_modules() if isinstance(m, nn.Linear)][-1]
    parent = backbone.get_submodule(name.rpartition(".")[0]) if "." in name else backbone
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return final.in_features


def build_classifier(
    name: str,
    normalisation: Normalisation,
    init: Init = "scratch",
    input_size: int = 32,
    weights_dir: str | Path | None = None,
    stem: Stem = "standard",
    spots: Mapping[str, Any] | None = None,
) -> CellClassifier:
    """``spots`` (:func:`spot_config`) adds the spot-count fusion head; None: the CNN alone."""
    if spots is None:
        return CellClassifier(build_backbone(name, init, input_size, weights_dir, stem), normalisation)
    settings = dict(spots)
    cnn_size = int(settings.pop("cnn_size", input_size))
    backbone = build_backbone(name, init, cnn_size, weights_dir, stem)
    return CellClassifier(backbone, normalisation, SpotCounts(**settings), cnn_size)


def spot_config(
    channels: Sequence[str], segment: Any, spot_features: bool, input_size: int
) -> dict[str, Any] | None:
    """The spot layer's settings (JSON-able, saved with the model) when the model counts spots, else None.

    ``segment`` holds at least :data:`~ctcid.model.spot_layer.SPOT_KEYS`; ``input_size`` is
    ``train.input_size``, the side the backbone sees.
    """
    if not spot_features:
        return None
    return {
        "dapi": list(channels).index("DAPI"),
        "cep8": list(channels).index("CEP8"),
        "cd45": list(channels).index("CD45"),
        "segment": {key: getattr(segment, key) for key in SPOT_KEYS},
        "cnn_size": int(input_size),
    }


def model_input_size(input_size: int, crop_size: int, spot_features: bool) -> int:
    """The side of the crops a model reads: native for a spot model (it counts on the crop's own
    pixels and resizes for its backbone inside), else ``train.input_size``."""
    return crop_size if spot_features else input_size


@dataclass(frozen=True)
class ModelSpec:
    """Which network to build: what a trained model needs besides its weights and normalisation."""

    backbone: str
    init: Init = "scratch"
    input_size: int = 32
    weights_dir: str | None = None  # ImageNet weights for init "pretrained"; None = torch hub cache
    start_from: str | None = None  # a ctcid model.pt whose weights init "registry" starts from
    stem: Stem = "standard"
    spots: dict[str, Any] | None = None  # train.spot_features: spot_config()

    def build(self, normalisation: Normalisation) -> CellClassifier:
        if self.init != "registry":
            return build_classifier(
                self.backbone, normalisation, self.init, self.input_size, self.weights_dir, self.stem,
                self.spots,
            )
        if self.start_from is None:
            raise CtcidError("init 'registry' needs the champion's model file; none was resolved")
        model = build_classifier(
            self.backbone, normalisation, "scratch", self.input_size, stem=self.stem,
            spots=self.spots,
        )
        load_trained_weights(model, self.backbone, Path(self.start_from))
        return model


def load_trained_weights(model: CellClassifier, name: str, path: Path) -> None:
    """Every weight of the ctcid ``model.pt`` at ``path`` except its normalisation statistics."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        source = saved["metadata"]["backbone"]
        state = {k: v for k, v in saved["state_dict"].items() if not k.startswith("normalise.")}
    except Exception as error:  # truncated file, foreign pickle, missing keys
        raise CtcidError(f"{path}: not a ctcid model file to start from ({error})") from None
    if source != name:
        raise CtcidError(f"{path} holds a {source} model; fine-tuning {name} needs a {name} model")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("normalise.")]:
        raise CtcidError(f"{path}: weights do not fit {name} (missing {missing}, unexpected {unexpected})")


def _check_name(name: str) -> str:
    if name not in _CONSTRUCTORS:
        raise CtcidError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return name


def _load_imagenet(network: nn.Module, name: str, path: Path) -> None:
    if not path.is_file():
        raise CtcidError(
            f"ImageNet weights for {name} not found: expected the file {path.name} in {path.parent}. "
            f"Nothing is downloaded at run time: copy {WEIGHT_URLS[name]} (fetched on a machine with "
            f"network access) to {path}, or set train.weights_dir to the folder that holds {path.name}."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(state, strict=True)
    except Exception as error:  # unreadable pickle, wrong architecture, truncated file
        raise CtcidError(f"{path}: not usable as {name} ImageNet weights ({error})") from None


def _pooled_head(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, N_CLASSES))


def _out_channels(features: nn.Sequential) -> int:
    convs = [m for m in features.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _spatial_size(features: nn.Sequential, size: int) -> int:
    """Side of the feature map for a ``size`` input; 0 once any layer would leave nothing."""
    for layer in features:
        if isinstance(layer, nn.Conv2d | nn.MaxPool2d):
            kernel, stride, padding, dilation = (
                _first(layer.kernel_size),
                _first(layer.stride),
                _first(layer.padding),
                _first(layer.dilation),
            )
            size = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
            if size < 1:
                return 0
    return size


def _first(value: int | tuple[int, ...] | str) -> int:
    return int(value[0] if isinstance(value, tuple) else value)


def _fit_alexnet_stride(features: nn.Sequential, input_size: int) -> None:
    first = features[0]
    for stride in (4, 2, 1):
        first.stride = (stride, stride)
        if _spatial_size(features, input_size) >= 1:
            return


def _drop_surplus_pools(features: nn.Sequential, input_size: int, name: str) -> None:
    pools = [i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]
    while _spatial_size(features, input_size) < 1:
        if not pools:
            raise CtcidError(f"{name} cannot process {input_size} px inputs; raise train.input_size")
        features[pools.pop()] = nn.Identity()
