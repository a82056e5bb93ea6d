"""Site-shift augmentation (ctcid.model.shift): each knob does what its site difference needs, alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ctcid.config.train import SiteShift, TrainParams
from ctcid.model.backbones import ModelSpec
from ctcid.model.dataset import CropBatches, LabelledCrops, augment, resize_crops
from ctcid.model.shift import DEFAULT_CHANNELS, site_shift
from ctcid.model.train import cv_fingerprint
from ctcid.model.trainer import FitOptions
from factory import CROP_SIZE, INPUT_SIZE, draw_crops, tiny_params

DAPI, CEP8, CD45 = 0, 1, 2  # in DEFAULT_CHANNELS
# every knob off: a test turns on the one it checks
OFF = SiteShift(
    prob=1.0,
    offset=0.0,
    blur_sigma=(0.0, 0.0),
    read_noise=(0.0, 0.0),
    shot_noise=(0.0, 0.0),
    spot_dimming=(1.0, 1.0),
    misregistration_px=0.0,
    bleed_through=(0.0, 0.0),
)


def _only(**knobs: object) -> SiteShift:
    return OFF.model_copy(update=knobs)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _crops(n: int = 32, size: int = 32) -> torch.Tensor:
    """draw_crops' cells on about the standardised scale (background ~0.1, a cell ~1)."""
    labels = np.arange(n) % 2 == 1
    raw = draw_crops(labels, CROP_SIZE, np.random.default_rng(0))
    return resize_crops(raw, size) / 3000.0


def _blobs(n: int, size: int = 32, sigma: float = 2.0) -> torch.Tensor:
    """A Gaussian blob in the middle of every channel: centres of mass are easy to follow."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = (size - 1) / 2
    blob = torch.exp(-((yy - centre) ** 2 + (xx - centre) ** 2) / (2 * sigma**2))
    return blob.expand(n, 3, size, size).clone()


def _centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    """``N x C x 2`` (x, y) centre of mass of each channel."""
    size = images.shape[-1]
    axis = torch.arange(size, dtype=images.dtype)
    mass = images.sum(dim=(2, 3))
    x = (images.sum(dim=2) * axis).sum(dim=2) / mass
    y = (images.sum(dim=3) * axis).sum(dim=2) / mass
    return torch.stack([x, y], dim=2)


def test_prob_zero_and_augment_off_leave_images_unchanged() -> None:
    images = _crops()
    assert torch.equal(site_shift(images, _gen(), SiteShift(prob=0.0), DEFAULT_CHANNELS), images)
    rows = torch.arange(len(images))  # the labels say which crop each batch row is
    data = LabelledCrops(images, rows, rows.numpy())
    batches = CropBatches(
        data, len(images), training=True, generator=_gen(), augmented=False, site_shift=SiteShift(prob=1.0)
    )
    (batch, order), *_ = list(batches)
    assert torch.equal(batch, images[order])


def test_prob_zero_draws_nothing_so_training_runs_stay_as_before() -> None:
    generator = _gen()
    site_shift(_crops(4), generator, SiteShift(prob=0.0), DEFAULT_CHANNELS)
    assert torch.equal(generator.get_state(), _gen().get_state())


def test_crops_not_chosen_come_back_bit_for_bit() -> None:
    images = _crops(64)
    out = site_shift(images, _gen(), SiteShift(prob=0.5), DEFAULT_CHANNELS)
    same = torch.tensor([torch.equal(a, b) for a, b in zip(out, images, strict=True)])
    assert 10 < int(same.sum()) < 54


def test_same_seed_same_shift_other_seed_other_shift() -> None:
    images = _crops()
    first = site_shift(images, _gen(7), SiteShift(), DEFAULT_CHANNELS)
    assert torch.equal(first, site_shift(images, _gen(7), SiteShift(), DEFAULT_CHANNELS))
    assert not torch.equal(first, site_shift(images, _gen(8), SiteShift(), DEFAULT_CHANNELS))


def test_shapes_and_dtype_are_kept() -> None:
    images = _crops(8)
    out = site_shift(images, _gen(), SiteShift(prob=1.0), DEFAULT_CHANNELS)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert not torch.equal(out, images)


def test_spot_dimming_scales_cep8_only() -> None:
    images = _crops()
    out = site_shift(images, _gen(), _only(spot_dimming=(0.5, 0.5)), DEFAULT_CHANNELS)
    torch.testing.assert_close(out[:, CEP8], 0.5 * images[:, CEP8])
    assert torch.equal(out[:, DAPI], images[:, DAPI])
    assert torch.equal(out[:, CD45], images[:, CD45])


def test_offset_is_per_channel_and_bounded() -> None:
    images = _crops()
    moved = site_shift(images, _gen(), _only(offset=0.1), DEFAULT_CHANNELS) - images
    per_channel = moved.flatten(2)
    torch.testing.assert_close(per_channel.amin(2), per_channel.amax(2))  # a constant per channel
    assert per_channel.abs().max() <= 0.1 + 1e-6


def test_bleed_through_adds_dapi_into_cep8_and_cep8_into_cd45() -> None:
    dapi_only = torch.zeros(4, 3, 16, 16)
    dapi_only[:, DAPI, 4:12, 4:12] = 1.0
    out = site_shift(dapi_only, _gen(), _only(bleed_through=(0.1, 0.1)), DEFAULT_CHANNELS)
    torch.testing.assert_close(out[:, CEP8], 0.1 * dapi_only[:, DAPI])
    assert torch.equal(out[:, DAPI], dapi_only[:, DAPI])
    assert not out[:, CD45].any()  # DAPI leaks into CEP8 only, not on to CD45
    cep8_only = dapi_only[:, [CEP8, DAPI, CD45]]
    out = site_shift(cep8_only, _gen(), _only(bleed_through=(0.1, 0.1)), DEFAULT_CHANNELS)
    torch.testing.assert_close(out[:, CD45], 0.1 * cep8_only[:, CEP8])


def test_blur_lowers_a_spot_and_keeps_its_light() -> None:
    spot = torch.zeros(16, 3, 32, 32)
    spot[:, :, 16, 16] = 10.0
    out = site_shift(spot, _gen(), _only(blur_sigma=(0.5, 2.0)), DEFAULT_CHANNELS)
    assert (out.amax(dim=(2, 3)) < 0.9 * 10.0).all()
    torch.testing.assert_close(out.sum(dim=(2, 3)), spot.sum(dim=(2, 3)), rtol=1e-4, atol=1e-4)
    # a wider sigma spreads the spot further: the peaks differ between crops
    assert out.amax(dim=(2, 3))[:, 0].std() > 0.1


def test_blur_sigma_zero_is_the_identity() -> None:
    images = _crops(8)
    out = site_shift(images, _gen(), _only(blur_sigma=(0.0, 0.0)), DEFAULT_CHANNELS)
    assert torch.equal(out, images)


def test_misregistration_moves_cep8_and_cd45_within_bound_never_dapi() -> None:
    images = _blobs(64)
    out = site_shift(images, _gen(), _only(misregistration_px=1.5), DEFAULT_CHANNELS)
    assert torch.equal(out[:, DAPI], images[:, DAPI])
    moved = (_centre_of_mass(out) - _centre_of_mass(images)).norm(dim=2)
    assert moved[:, DAPI].max() == 0
    assert moved[:, [CEP8, CD45]].max() <= 1.5 + 1e-3
    assert moved[:, [CEP8, CD45]].max() > 1.0  # the disc is used, not only its centre
    assert not torch.allclose(moved[:, CEP8], moved[:, CD45])  # each channel its own shift


def test_read_noise_adds_its_variance_and_shot_noise_grows_with_the_signal() -> None:
    flat = torch.zeros(64, 3, 32, 32)
    out = site_shift(flat, _gen(), _only(read_noise=(0.1, 0.1)), DEFAULT_CHANNELS)
    assert out.var().item() == pytest.approx(0.01, rel=0.05)
    shot = _only(read_noise=(0.1, 0.1), shot_noise=(0.05, 0.05))
    dark = site_shift(flat, _gen(), shot, DEFAULT_CHANNELS)
    bright = site_shift(flat + 2.0, _gen(), shot, DEFAULT_CHANNELS)
    assert dark.var().item() == pytest.approx(0.01, rel=0.05)
    assert bright.var().item() == pytest.approx(0.01 + 0.05 * 2.0, rel=0.05)
    assert bright.mean().item() == pytest.approx(2.0, abs=0.01)


def test_a_permuted_channel_order_shifts_the_same_stains() -> None:
    images = _crops(16)
    shift = _only(
        spot_dimming=(0.5, 0.9), bleed_through=(0.02, 0.1), blur_sigma=(0.0, 1.0), misregistration_px=1.5
    )
    order = [2, 0, 1]  # CD45, DAPI, CEP8
    channels = tuple(DEFAULT_CHANNELS[i] for i in order)
    expected = site_shift(images, _gen(3), shift, DEFAULT_CHANNELS)[:, order]
    permuted = site_shift(images[:, order], _gen(3), shift, channels)
    torch.testing.assert_close(permuted, expected)


def test_channels_must_name_the_three_stains() -> None:
    with pytest.raises(ValueError, match="channels must name"):
        site_shift(_crops(2), _gen(), SiteShift(), ("DAPI", "CEP8", "FITC"))


def test_augment_applies_the_shift_after_flips_and_gain() -> None:
    images = _crops(16)
    plain = augment(images, _gen(), 0.1)
    shifted = augment(images, _gen(), 0.1, _only(offset=0.2), DEFAULT_CHANNELS)
    # the same flips and gain, then a constant per crop and channel
    moved = (shifted - plain).flatten(2)
    torch.testing.assert_close(moved.amin(2), moved.amax(2))
    assert moved.abs().amax() > 0.01


def test_fit_options_carry_the_site_shift_and_channels(tmp_path: Path) -> None:
    params = tiny_params(tmp_path, ["alexnet"], site_shift={"prob": 0.3})
    channels = ["CD45", "DAPI", "CEP8"]
    options = FitOptions.from_params(params.train, 0, channels)
    assert options.site_shift == SiteShift(prob=0.3)
    assert options.channels == tuple(channels)
    by_hand = FitOptions(1, 1, 16, 1e-3, 0.0, True, 0.0, 0)
    assert by_hand.site_shift.prob == 0.0  # options built by hand shift nothing


def test_cv_fingerprint_changes_with_site_shift_and_standardise() -> None:
    spec = ModelSpec("alexnet", input_size=INPUT_SIZE)

    def fingerprint(config: TrainParams) -> str:
        return cv_fingerprint(config, 0, "data", spec, torch.device("cpu"))

    base = TrainParams()
    assert fingerprint(base) == fingerprint(TrainParams())
    assert fingerprint(base) != fingerprint(TrainParams(standardise=False))
    assert fingerprint(base) != fingerprint(TrainParams(site_shift=SiteShift(prob=0.5)))
    assert fingerprint(base) != fingerprint(TrainParams(site_shift=SiteShift(blur_sigma=(0.0, 2.0))))
