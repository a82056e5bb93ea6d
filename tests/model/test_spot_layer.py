"""The in-network CEP8 spot counter and the fusion head (train.spot_features)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctcid.config.segment import SegmentParams
from ctcid.model.backbones import build_classifier, model_input_size, spot_config
from ctcid.model.dataset import Normalisation
from ctcid.model.predict import ModelInfo, load_model, save_model
from ctcid.model.spot_layer import DIPLOID, N_FEATURES, SPOT_KEYS, SpotCounts
from factory import draw_crop

SIZE = 40
CHANNELS = ("DAPI", "CEP8", "CD45")


def crops_with(spots: list[int], seed: int = 1, radius: float = 11.0) -> torch.Tensor:
    """Noisy CTC-sized CD45-negative crops with these spot counts; same nucleus and noise per seed."""
    out = [
        draw_crop(SIZE, cell_type="ctc", radius=radius, spots=n, cd45=False, rng=np.random.default_rng(seed))
        for n in spots
    ]
    return torch.from_numpy(np.stack(out).astype(np.float32))


def counts(crops: torch.Tensor, counter: SpotCounts | None = None) -> list[int]:
    features = (counter or SpotCounts())(crops)
    return (features[:, 0] + DIPLOID).round().int().tolist()


def test_counts_the_spots_of_the_centre_nucleus() -> None:
    found = counts(crops_with([0, 1, 2, 3, 4]))
    assert found[:4] == [0, 1, 2, 3]
    assert found[4] >= 3  # random places: two of many spots may fall together


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_two_and_three_spots_are_told_apart_whatever_the_noise(seed: int) -> None:
    two, three = counts(crops_with([2, 3], seed=seed))
    assert three > two


def test_the_second_feature_is_the_rules_spot_call() -> None:
    features = SpotCounts()(crops_with([2, 3, 5]))
    assert features.shape == (3, N_FEATURES)
    assert features[:, 1].tolist() == [0.0, 1.0, 1.0]
    strict = SpotCounts(segment={"rule_min_spots": 4})(crops_with([2, 3, 5]))
    assert strict[:, 1].tolist() == [0.0, 0.0, 1.0]


def test_the_cd45_features_see_the_membrane_ring() -> None:
    rng = np.random.default_rng(1)
    ringed = draw_crop(SIZE, cell_type="ctc", radius=11.0, spots=3, cd45=True, rng=rng)
    plain = crops_with([3])
    features = SpotCounts()(torch.cat([plain, torch.from_numpy(ringed[None].astype(np.float32))]))
    assert features[:, 3].tolist() == [0.0, 1.0]  # CD45 call
    assert features[:, 4].tolist() == [1.0, 0.0]  # the rule's call: >= 3 spots and CD45-negative
    assert features[1, 2] > features[0, 2]


def test_spots_outside_the_nucleus_do_not_count() -> None:
    crop = crops_with([2])
    outside = crop.clone()
    outside[0, 1, 1:4, 1:4] += 4000.0  # a bright speck in the crop corner, far from the nucleus
    assert counts(outside) == counts(crop)


def test_a_nucleus_filling_the_crop_is_still_counted() -> None:
    big = crops_with([3], radius=19.0)  # no background left for the segment step's threshold
    assert counts(big) == [3]


def test_counts_do_not_depend_on_the_intensity_scale_or_orientation() -> None:
    crops = crops_with([2, 3, 4], seed=5)
    found = counts(crops)
    assert counts(crops * 7.5 + 40.0) == found
    assert counts(torch.rot90(crops, 1, dims=(2, 3))) == found


def test_the_config_follows_params_and_wants_native_crops() -> None:
    segment = SegmentParams(crop_size=SIZE)
    config = spot_config(("CEP8", "DAPI", "CD45"), segment, True, SIZE)
    assert config is not None and (config["dapi"], config["cep8"]) == (1, 0)
    assert set(config["segment"]) == set(SPOT_KEYS)
    assert spot_config(CHANNELS, segment, False, 32) is None
    assert config["cnn_size"] == SIZE and spot_config(CHANNELS, segment, True, 32)["cnn_size"] == 32
    assert model_input_size(32, SIZE, True) == SIZE and model_input_size(32, SIZE, False) == 32
    swapped = crops_with([3])[:, [1, 0, 2]]
    settings = {k: v for k, v in config.items() if k != "cnn_size"}
    assert counts(swapped, SpotCounts(**settings)) == [3]


def test_a_spot_model_reads_native_crops_and_resizes_them_for_its_backbone() -> None:
    spots = spot_config(CHANNELS, SegmentParams(crop_size=SIZE), True, 32)
    model = build_classifier("alexnet", Normalisation((0.0,) * 3, (1.0,) * 3), input_size=SIZE, spots=spots)
    seen = []
    model.backbone.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[-1]))
    assert model.eval()(crops_with([2, 3])).shape == (2, 2)
    assert seen == [32]


def test_the_fusion_head_reads_the_spots(tmp_path) -> None:
    torch.manual_seed(0)
    spots = spot_config(CHANNELS, SegmentParams(crop_size=SIZE), True, 32)
    normalisation = Normalisation((0.0,) * 3, (1000.0,) * 3)
    model = build_classifier("resnet18", normalisation, input_size=SIZE, spots=spots).eval()
    with torch.no_grad():
        model.spot_head.weight[:] = torch.tensor([[0.0] * N_FEATURES, [2.0, 4.0] + [0.0] * (N_FEATURES - 2)])
        logits = model(crops_with([2, 4]))
    assert logits[1, 1] - logits[1, 0] > logits[0, 1] - logits[0, 0] + 4.0
    info = ModelInfo(
        backbone="resnet18", init="scratch", input_size=SIZE, channels=CHANNELS,
        normalisation=normalisation, threshold=0.5, target_sensitivity=0.97, epochs=1, seed=0, spots=spots,
    )
    loaded = load_model(save_model(tmp_path / "model.pt", model, info))
    assert loaded.model.spots is not None
    with torch.no_grad():
        assert torch.allclose(loaded.model(crops_with([2, 4])), logits)


def test_a_plain_model_has_no_spot_head() -> None:
    model = build_classifier("vgg16", Normalisation((0.0,) * 3, (1.0,) * 3))
    assert model.spots is None and not hasattr(model, "head")
