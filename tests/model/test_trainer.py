from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ctcid.model.backbones import build_classifier
from ctcid.model.dataset import CropBatches, LabelledCrops, Normalisation, augment, resize_crops
from ctcid.model.predict import ModelInfo, load_model, save_model, score_crops
from ctcid.model.trainer import FitOptions, fit, predict_scores, seed_everything
from factory import CROP_SIZE, INPUT_SIZE, draw_crops, tiny_params


def _crops(n: int, seed: int) -> tuple[np.ndarray, LabelledCrops]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2 == 1
    raw = draw_crops(labels, CROP_SIZE, rng)
    data = LabelledCrops(
        resize_crops(raw, INPUT_SIZE), torch.as_tensor(labels.astype(np.int64)), np.arange(n)
    )
    return raw, data


def _loss(model: torch.nn.Module, data: LabelledCrops) -> float:
    model.eval()
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(data.images), data.labels).item()


def _trained(backbone: str, data: LabelledCrops, seed: int, tmp_path: Path, **train: object):
    params = tiny_params(tmp_path, [backbone], **train)
    config = FitOptions.from_params(params.train, seed, params.channels)
    seed_everything(seed)
    model = build_classifier(backbone, Normalisation.fit(data.images), input_size=INPUT_SIZE)
    return model, config


def test_a_few_optimisation_steps_reduce_the_loss(tmp_path: Path) -> None:
    _, data = _crops(48, seed=0)
    model, config = _trained(
        "alexnet", data, 0, tmp_path, epochs=4, batch_size=12, augment=False, learning_rate=1e-3
    )
    before = _loss(model, data)
    fitted = fit(model, data, None, config, show_progress=False)
    assert len(fitted.history) == 4
    assert _loss(fitted.model, data) < 0.8 * before


def test_same_seed_gives_identical_weights(tmp_path: Path) -> None:
    _, data = _crops(32, seed=1)
    states = []
    for _ in range(2):
        model, config = _trained("resnet18", data, 5, tmp_path, epochs=1, batch_size=8)
        states.append(fit(model, data, None, config, show_progress=False).model.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_early_stopping_keeps_the_best_epoch_and_scores_validation(tmp_path: Path) -> None:
    _, train = _crops(32, seed=2)
    _, val = _crops(12, seed=3)
    model, config = _trained("alexnet", train, 0, tmp_path, epochs=3, patience=1, batch_size=8)
    seen = []
    fitted = fit(model, train, val, config, on_epoch=seen.append, show_progress=False)
    assert [m.epoch for m in seen] == [m.epoch for m in fitted.history]
    best = max(fitted.history, key=lambda m: (m.val_auc, -m.val_loss))
    assert fitted.best_epoch == best.epoch
    assert len(fitted.history) <= fitted.best_epoch + config.patience
    assert fitted.val_scores.shape == (12,)


def test_predictions_have_the_declared_shape_and_survive_save_and_load(tmp_path: Path) -> None:
    raw, data = _crops(10, seed=4)
    normalisation = Normalisation.fit(data.images)
    seed_everything(0)
    model = build_classifier("resnet18", normalisation, input_size=INPUT_SIZE).eval()
    scores = predict_scores(model, data.images, batch_size=4)
    assert scores.shape == (10,)
    assert ((scores >= 0) & (scores <= 1)).all()

    info = ModelInfo(
        "resnet18",
        "scratch",
        INPUT_SIZE,
        ("DAPI", "CEP8", "CD45"),
        normalisation,
        threshold=0.3,
        target_sensitivity=0.97,
        epochs=1,
        seed=0,
    )
    loaded = load_model(save_model(tmp_path / "model.pt", model, info))
    assert loaded.info == info
    np.testing.assert_allclose(score_crops(loaded, raw), scores, atol=1e-6)
    np.testing.assert_allclose(score_crops(loaded, raw, rows=np.array([7, 2])), scores[[7, 2]], atol=1e-6)


def test_augmentation_only_turns_flips_and_rescales_channels() -> None:
    images = torch.rand(64, 3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    turned = augment(images, generator, intensity_jitter=0.0)
    # a dihedral transform permutes pixels: per-channel sorted values are unchanged
    torch.testing.assert_close(turned.flatten(2).sort().values, images.flatten(2).sort().values)
    assert not torch.equal(turned, images)
    gain = augment(images, generator, intensity_jitter=0.1).flatten(2).sum(2) / images.flatten(2).sum(2)
    assert ((gain > 0.9 - 1e-5) & (gain < 1.1 + 1e-5)).all()


@pytest.mark.parametrize(("n", "batches"), [(33, 2), (34, 3), (10, 1)])
def test_training_batches_never_hold_a_single_crop(n: int, batches: int) -> None:
    data = LabelledCrops(torch.zeros(n, 3, 4, 4), torch.zeros(n, dtype=torch.int64), np.arange(n))
    loader = CropBatches(data, 16, training=True, generator=torch.Generator().manual_seed(0))
    sizes = [len(y) for _, y in loader]
    assert len(sizes) == len(loader) == batches
    assert min(sizes) > 1


def test_train_deterministic_false_frees_the_kernels_on_cuda_only() -> None:
    try:
        seed_everything(0, deterministic=False, device=torch.device("cpu"))
        assert torch.are_deterministic_algorithms_enabled()  # CPU runs repeat whatever it says
        seed_everything(0, deterministic=False, device=torch.device("cuda"))
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark
    finally:
        seed_everything(0)
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
