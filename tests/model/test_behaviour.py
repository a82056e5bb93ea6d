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

Each check is a plain function of a scoring callable (raw ``N x 3 x S x S`` crops in, CTC
probabilities out) and its probe crops, returning a :class:`Behaviour`, so that a promotion gate
can run the same checks on a candidate model. The directional checks ask for a real effect, not
just a sign, so a model that ignores the marker (an untrained one, say) fails them; see
:func:`test_an_untrained_model_fails_the_directional_checks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import nn

from ctcid.model.backbones import ModelSpec
from ctcid.model.dataset import LabelledCrops, Normalisation, resize_crops
from ctcid.model.trainer import FitOptions, fit, predict_scores, seed_everything
from factory import CROP_SIZE, INPUT_SIZE, LOOKS, draw_crop, draw_crops

Scorer = Callable[[np.ndarray], np.ndarray]  # raw uint16 crops N x C x S x S -> CTC scores (N,)

# --- the checks: reusable on any scorer -----------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    """The outcome of one behavioural check, with the numbers it was decided on."""

    name: str
    passed: bool
    measured: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        numbers = ", ".join(f"{key}={value:.3f}" for key, value in self.measured.items())
        return f"{self.name}: {'passed' if self.passed else 'FAILED'} ({numbers})"


# The seven non-identity symmetries of a square crop (axes 2 and 3 are rows and columns).
DIHEDRAL: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "flip_horizontal": lambda c: c[..., ::-1],
    "flip_vertical": lambda c: c[..., ::-1, :],
    "rotate_90": lambda c: np.rot90(c, 1, axes=(2, 3)),
    "rotate_180": lambda c: np.rot90(c, 2, axes=(2, 3)),
    "rotate_270": lambda c: np.rot90(c, 3, axes=(2, 3)),
    "transpose": lambda c: np.swapaxes(c, 2, 3),
    "anti_transpose": lambda c: np.rot90(np.swapaxes(c, 2, 3), 2, axes=(2, 3)),
}


def check_dihedral_invariance(
    score: Scorer,
    crops: np.ndarray,
    *,
    max_mean_change: float = 0.05,
    min_same_call: float = 0.9,
    threshold: float = 0.5,
) -> Behaviour:
    """Flips and quarter turns change the score little on average and the call rarely.

    Over every symmetry, the worst mean absolute score change must stay below
    ``max_mean_change`` and the worst share of unchanged calls at ``threshold`` reach
    ``min_same_call``.
    """
    base = score(crops)
    worst_change, worst_same = 0.0, 1.0
    for turn in DIHEDRAL.values():
        turned = score(np.ascontiguousarray(turn(crops)))
        worst_change = max(worst_change, float(np.mean(np.abs(turned - base))))
        worst_same = min(worst_same, float(np.mean((turned >= threshold) == (base >= threshold))))
    return Behaviour(
        "dihedral invariance",
        worst_change < max_mean_change and worst_same >= min_same_call,
        {"worst_mean_change": worst_change, "worst_same_call": worst_same},
    )


def check_direction(
    name: str,
    score: Scorer,
    before: np.ndarray,
    after: np.ndarray,
    direction: int,
    *,
    min_mean_shift: float = 0.1,
    min_share: float = 0.9,
) -> Behaviour:
    """Changing ``before`` into ``after`` (pairwise) moves the score in ``direction`` (+1 or -1).

    On average by at least ``min_mean_shift``, and strictly so for at least ``min_share`` of pairs.
    """
    shift = direction * (score(after) - score(before))
    mean_shift, share = float(np.mean(shift)), float(np.mean(shift > 0))
    return Behaviour(
        name, mean_shift >= min_mean_shift and share >= min_share, {"mean_shift": mean_shift, "share": share}
    )


def check_cd45_ring_lowers_score(
    score: Scorer, without_ring: np.ndarray, with_ring: np.ndarray, **limits: float
) -> Behaviour:
    return check_direction("CD45 ring lowers the score", score, without_ring, with_ring, -1, **limits)


def check_more_spots_raise_score(
    score: Scorer, two_spots: np.ndarray, more_spots: np.ndarray, **limits: float
) -> Behaviour:
    return check_direction("more CEP8 spots raise the score", score, two_spots, more_spots, +1, **limits)


def check_all(score: Scorer, probes: dict[str, np.ndarray]) -> list[Behaviour]:
    """Every check on one scorer, with probes as :func:`draw_probes` makes them."""
    return [
        check_dihedral_invariance(score, probes["mixed"]),
        check_cd45_ring_lowers_score(score, probes["without_ring"], probes["with_ring"]),
        check_more_spots_raise_score(score, probes["two_spots"], probes["more_spots"]),
    ]


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
