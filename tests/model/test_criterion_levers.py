"""Behaviour: with its levers on, a small CNN learns the CTC criterion (DAPI+, CD45-negative, >= 3 CEP8
copies) and not a stand-in for it.

The training cells come from the test-data factory: CTC-like CD45-negative nuclei with 4 CEP8 spots
(CTCs), the very same nuclei (same size, position, noise) with 2 spots (look-alikes, not CTCs), and
CD45-positive leukocytes. Only the spots tell a CTC from its look-alike, and no training cell has a
CTC-sized nucleus inside a CD45 ring. A ResNet-18 with the small stem is fitted on them with the
levers on: label-consistent counterfactuals (spots given to look-alikes, rings to CTCs), the
auxiliary heads (copies, CD45) and hard-negative epochs. Its CTC score must then rise when two spots
are added to a held-out CD45-negative two-spot cell, and fall when a ring is drawn around a
held-out CTC (the promotion gate's checks, :mod:`ctcid.registry.behaviour`, on probes made as the
gate makes them). The same network fitted without the levers, for contrast, ignores such a ring:
what it learnt of CD45 is the leukocyte's small ringed nucleus, not the criterion's marker.

Crops stay in camera counts here (no field standardisation), so the scorer only resizes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from ctcid.model.backbones import ModelSpec
from ctcid.model.counterfactual import CounterfactualSource
from ctcid.model.dataset import LabelledCrops, Normalisation, cell_facts, resize_crops
from ctcid.model.pixels import CropPixels
from ctcid.model.trainer import FitOptions, fit, predict_scores, seed_everything
from ctcid.registry.behaviour import (
    Scorer,
    check_cd45_ring_lowers_score,
    check_more_spots_raise_score,
    probes_from_crops,
)
from factory import CROP_SIZE, INPUT_SIZE, LOOKS, draw_crop, make_manifest

CHANNELS = ("DAPI", "CEP8", "CD45")
THRESHOLD = 0.15  # cd45_score of the factory: 0.5-1.5 on CD45-positive cells, below 0.05 elsewhere
SEED = 0  # seeds 1 and 2 passed too when written (spot check: mean shift 0.85-0.94, share 1.0)
PAIRS, LEUKOCYTES = 48, 48  # 48 CTCs, their 48 look-alikes, 48 leukocytes
SPEC = ModelSpec("resnet18", input_size=INPUT_SIZE, stem="small")
COUNTERFACTUALS = 1.0  # per training CTC: 24 given spots, 24 given a ring
LEVERS = FitOptions(
    epochs=4,
    patience=4,
    batch_size=16,
    learning_rate=1e-3,
    weight_decay=1e-4,
    augment=True,
    intensity_jitter=0.1,
    seed=SEED,
    negatives="hard",
    aux_weight=0.5,
)
PLAIN = replace(LEVERS, negatives="downsample", aux_weight=0.0)


def look_alike_pairs(pairs: int, leukocytes: int, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Raw crops and manifest: each CTC (4 spots) next to its 2-spot twin, then the leukocytes."""
    rng = np.random.default_rng(seed)
    rows, crops = [], []
    for _ in range(pairs):
        radius, pixels = rng.uniform(*LOOKS["ctc"].radius), int(rng.integers(2**32))
        for cell_type, spots in (("ctc", 4), ("diploid_cd45neg", 2)):
            twin = np.random.default_rng(pixels)  # both crops share nucleus, centre, spot places and noise
            crops.append(draw_crop(CROP_SIZE, cell_type=cell_type, radius=radius, spots=spots, rng=twin))
            rows.append((cell_type, radius, spots, False))
    for _ in range(leukocytes):
        radius = rng.uniform(*LOOKS["leukocyte"].radius)
        crops.append(draw_crop(CROP_SIZE, cell_type="leukocyte", radius=radius, rng=rng))
        rows.append(("leukocyte", radius, LOOKS["leukocyte"].spots[0], True))
    cells = pd.DataFrame(rows, columns=["cell_type", "radius", "spots", "cd45"])
    cells = cells.astype({"radius": np.float32, "spots": np.int16})
    return np.stack(crops), make_manifest(cells=cells, seed=seed)


def scorer(model: torch.nn.Module) -> Scorer:
    return lambda crops: predict_scores(model, resize_crops(crops, INPUT_SIZE))


def trained(options: FitOptions, counterfactuals: float) -> Scorer:
    torch.set_num_threads(1)  # module fixtures run before the per-test one-thread fixture
    crops, manifest = look_alike_pairs(PAIRS, LEUKOCYTES, SEED)
    rows = np.arange(len(manifest))
    labels = manifest["true_label"].to_numpy(dtype=np.int64)
    data = LabelledCrops(
        CropPixels.stored(crops, rows, INPUT_SIZE), torch.as_tensor(labels), rows,
        cell_facts(manifest, rows, labels, THRESHOLD),
    )
    if counterfactuals:
        source = CounterfactualSource(crops, manifest, None, CHANNELS, THRESHOLD, INPUT_SIZE, counterfactuals)
        data = source(data, SEED)
        assert len(data) == len(rows) + PAIRS * counterfactuals
    seed_everything(SEED)
    model = SPEC.build(Normalisation.fit(data.images))
    return scorer(fit(model, data, None, options, show_progress=False).model)


@pytest.fixture(scope="module")
def levered() -> Scorer:
    return trained(LEVERS, COUNTERFACTUALS)


@pytest.fixture(scope="module")
def plain() -> Scorer:
    return trained(PLAIN, 0.0)


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, pd.DataFrame]:
    return look_alike_pairs(40, 20, SEED + 1000)


@pytest.fixture(scope="module")
def probes(held_out) -> dict[str, np.ndarray]:
    """The gate's probes from held-out cells: two spots added to CD45-negative CTC-sized two-spot
    cells (the look-alikes), a ring drawn around CD45-negative cells with >= 3 spots (the CTCs)."""
    crops, manifest = held_out
    made = probes_from_crops(crops, manifest, list(CHANNELS), THRESHOLD, 64, SEED + 7)
    # every held-out CTC; the look-alikes at least as large as the smallest quarter of the CTCs
    assert len(made["without_ring"]) == 40 and len(made["two_spots"]) >= 20
    return made


def test_the_trained_model_tells_ctcs_from_their_look_alikes_and_leukocytes(levered, held_out) -> None:
    crops, manifest = held_out
    calls = levered(crops) >= 0.5
    assert np.mean(calls == manifest["true_label"].to_numpy(dtype=bool)) >= 0.9


def test_two_more_cep8_spots_raise_the_score_of_a_cd45_negative_two_spot_cell(levered, probes) -> None:
    outcome = check_more_spots_raise_score(
        levered, probes["two_spots"], probes["more_spots"], min_mean_shift=0.1, min_share=0.75
    )
    assert outcome.passed and outcome.measured["mean_shift"] > 0.1, outcome


def test_a_cd45_ring_lowers_the_score_of_a_ctc(levered, probes) -> None:
    outcome = check_cd45_ring_lowers_score(levered, probes["without_ring"], probes["with_ring"])
    assert outcome.passed, outcome


def test_without_the_levers_a_ring_around_a_ctc_goes_unnoticed(plain, probes) -> None:
    # the contrast: the ring check can fail, and it is the levers that make it pass
    outcome = check_cd45_ring_lowers_score(plain, probes["without_ring"], probes["with_ring"])
    assert not outcome.passed, outcome
