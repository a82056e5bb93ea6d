"""Behavioural tests of a trained CTC classifier: what it must do, whatever its AUC.

A small network is trained here, once per module, on a few hundred synthetic crops from the
test-data factory (CTCs, leukocytes and the two hard negatives: CD45-negative diploid cells and
CD45-positive aneuploid cells). It must then

* give a crop the same CTC score whichever way it is turned or mirrored (a cell on a slide has no
  orientation);
* score a CD45-negative, CTC-like cell lower once a CD45 membrane ring is added (a leukocyte
  marker excludes a cell, as in the paper);
* score a CD45-negative nucleus higher with 4-5 CEP8 spots than with 2 (aneuploidy is the
  tumour signal).

The checks live in :mod:`ctcid.registry.behaviour`, where the promotion gate runs them on probes
made from real test crops; here they run on synthetic probes. The directional checks ask for a
real effect, not just a sign, so a model that ignores the marker (an untrained one, say) fails
them; see :func:`test_an_untrained_model_fails_the_directional_checks`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ctcid.model.backbones import ModelSpec
from ctcid.model.dataset import LabelledCrops, Normalisation, resize_crops
from ctcid.model.trainer import FitOptions, fit, predict_scores, seed_everything
from ctcid.registry.behaviour import (
    Scorer,
    check_all,
    check_cd45_ring_lowers_score,
    check_dihedral_invariance,
    check_more_spots_raise_score,
)
from factory import CROP_SIZE, INPUT_SIZE, LOOKS, draw_crop, draw_crops

# --- probes: paired synthetic crops that differ in one property only ------------------------------

TRAINING_MIX = ("ctc", "leukocyte", "ctc", "diploid_cd45neg", "ctc", "aneuploid_cd45pos")


def draw_probes(n: int = 64, seed: int = 101, size: int = CROP_SIZE) -> dict[str, np.ndarray]:
    """Probe crops, each pair drawn from equally seeded generators (same nucleus, spots and noise).

    * ``mixed``: cells of every trained type, for the invariance check;
    * ``without_ring`` / ``with_ring``: CD45-negative CTC-like cells (3-5 spots), then the same
      cells inside a CD45 ring;
    * ``two_spots`` / ``more_spots``: CD45-negative CTC-sized nuclei with 2, then 4 or 5 spots.
    """
    rng = np.random.default_rng(seed)
    types = np.array([TRAINING_MIX[i % len(TRAINING_MIX)] for i in range(n)], dtype=object)
    probes: dict[str, list[np.ndarray]] = {
        "without_ring": [],
        "with_ring": [],
        "two_spots": [],
        "more_spots": [],
    }
    for _ in range(n):
        radius = rng.uniform(*LOOKS["ctc"].radius)
        copies, more = int(rng.integers(3, 6)), int(rng.integers(4, 6))
        pixels = int(rng.integers(2**32))  # one seed per cell: both crops of a pair share every draw
        for key, spots, cd45 in [
            ("without_ring", copies, False),
            ("with_ring", copies, True),
            ("two_spots", 2, False),
            ("more_spots", more, False),
        ]:
            pair_rng = np.random.default_rng(pixels)
            crop = draw_crop(size, cell_type="ctc", radius=radius, spots=spots, cd45=cd45, rng=pair_rng)
            probes[key].append(crop)
    return {"mixed": draw_crops(types, size, rng)} | {k: np.stack(v) for k, v in probes.items()}


def scorer(model: nn.Module) -> Scorer:
    """Raw crops in, CTC probabilities out, resized as the train stage resizes them."""
    return lambda crops: predict_scores(model, resize_crops(crops, INPUT_SIZE))


# --- a small trained model ------------------------------------------------------------------------

SEED = 0
N_TRAIN = 384  # half CTCs; the rest leukocytes and both hard negatives in equal parts
SPEC = ModelSpec("alexnet", input_size=INPUT_SIZE)
OPTIONS = FitOptions(
    epochs=10,
    patience=10,
    batch_size=32,
    learning_rate=1e-3,
    weight_decay=1e-4,
    augment=True,
    intensity_jitter=0.1,
    seed=SEED,
)


def labelled_crops(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw crops of the training mix and their labels (1 = CTC)."""
    rng = np.random.default_rng(seed)
    types = np.array([TRAINING_MIX[i % len(TRAINING_MIX)] for i in range(n)], dtype=object)
    return draw_crops(types, CROP_SIZE, rng), (types == "ctc").astype(np.int64)


def training_data(n: int, seed: int) -> LabelledCrops:
    crops, labels = labelled_crops(n, seed)
    return LabelledCrops(resize_crops(crops, INPUT_SIZE), torch.as_tensor(labels), np.arange(n))


@pytest.fixture(scope="module")
def trained_scorer() -> Scorer:
    torch.set_num_threads(1)  # module fixtures run before the per-test one-thread fixture
    data = training_data(N_TRAIN, SEED)
    seed_everything(SEED)
    model = SPEC.build(Normalisation.fit(data.images))
    return scorer(fit(model, data, None, OPTIONS, show_progress=False).model)


@pytest.fixture(scope="module")
def probes() -> dict[str, np.ndarray]:
    return draw_probes()


def test_the_trained_model_separates_ctcs_from_every_other_type(trained_scorer: Scorer) -> None:
    # the premise of the behavioural tests: the model learnt the task, hard negatives included
    crops, labels = labelled_crops(120, seed=SEED + 1)
    calls = trained_scorer(crops) >= 0.5
    assert np.mean(calls == labels.astype(bool)) >= 0.9


def test_flips_and_quarter_turns_leave_the_score(trained_scorer: Scorer, probes) -> None:
    outcome = check_dihedral_invariance(trained_scorer, probes["mixed"])
    assert outcome.passed, outcome


def test_a_cd45_ring_lowers_the_score(trained_scorer: Scorer, probes) -> None:
    outcome = check_cd45_ring_lowers_score(trained_scorer, probes["without_ring"], probes["with_ring"])
    assert outcome.passed, outcome


def test_more_cep8_spots_raise_the_score(trained_scorer: Scorer, probes) -> None:
    outcome = check_more_spots_raise_score(trained_scorer, probes["two_spots"], probes["more_spots"])
    assert outcome.passed, outcome


def test_an_untrained_model_fails_the_directional_checks(probes) -> None:
    # the checks can fail: a network that has learnt nothing ignores CD45 and CEP8 alike
    data = training_data(48, SEED)
    seed_everything(SEED)
    untrained = scorer(SPEC.build(Normalisation.fit(data.images)))
    outcomes = {o.name: o for o in check_all(untrained, probes)}
    assert not outcomes["CD45 ring lowers the score"].passed, outcomes
    assert not outcomes["more CEP8 spots raise the score"].passed, outcomes


def test_an_orientation_sensitive_scorer_fails_the_invariance_check(probes) -> None:
    # a scorer that reads CEP8 on the left half of the crop only: mirroring changes its answer
    def left_half_cep8(crops: np.ndarray) -> np.ndarray:
        signal = crops[:, 1, :, : crops.shape[3] // 2].astype(np.float64).mean(axis=(1, 2))
        return 1 / (1 + np.exp(-(signal - 300) / 30))

    assert not check_dihedral_invariance(left_half_cep8, probes["mixed"]).passed
