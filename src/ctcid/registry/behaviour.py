"""Behavioural checks of a CTC classifier: what it must do, whatever its AUC.

Each check is a plain function of a scorer (raw ``N x C x S x S`` crops in, CTC probabilities out)
and its probe crops, returning a :class:`Behaviour`:

* flips and quarter turns leave the score (a cell on a slide has no orientation);
* a CD45 membrane ring lowers the score of a CD45-negative, CTC-like cell (the leukocyte marker
  excludes a cell, as in the paper);
* extra CEP8 spots raise the score of a CD45-negative cell with two (aneuploidy is the signal).

The promotion gate runs them on probes made from the current test crops (:func:`probes_from_crops`):
real cells, changed in one property only, at intensities measured on the same data (drawn with
:mod:`ctcid.model.drawing`, as the training counterfactuals are). The tests run
them on synthetic probes from the test-data factory. The directional checks ask for a real effect,
not just a sign, so a model that ignores the marker fails them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ctcid.model.drawing import nuclear_radii, ring_image, signal_level, spot_image

Scorer = Callable[[np.ndarray], np.ndarray]  # raw crops N x C x S x S -> CTC scores (N,)

# Fewest probe pairs a directional check is decided on; with fewer it is reported, not decided.
MIN_PROBES = 8
ADDED_SPOTS = 2  # a diploid cell (2 copies) becomes a 4-copy, CTC-like one
SPOT_CHECK = "more CEP8 spots raise the score"


@dataclass(frozen=True)
class Behaviour:
    """The outcome of one behavioural check, with the numbers it was decided on.

    ``passed`` is None when there were too few probes to decide.
    """

    name: str
    passed: bool | None
    measured: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        numbers = ", ".join(f"{key}={value:.3f}" for key, value in self.measured.items())
        verdict = {True: "passed", False: "FAILED", None: "not decided (too few probes)"}[self.passed]
        return f"{self.name}: {verdict} ({numbers})"


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
    name = "dihedral invariance"
    if len(crops) < MIN_PROBES:
        return Behaviour(name, None, {"probes": float(len(crops))})
    base = score(crops)
    worst_change, worst_same = 0.0, 1.0
    for turn in DIHEDRAL.values():
        turned = score(np.ascontiguousarray(turn(crops)))
        worst_change = max(worst_change, float(np.mean(np.abs(turned - base))))
        worst_same = min(worst_same, float(np.mean((turned >= threshold) == (base >= threshold))))
    return Behaviour(
        name,
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
    if len(before) < MIN_PROBES:
        return Behaviour(name, None, {"probes": float(len(before))})
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
    return check_direction(SPOT_CHECK, score, two_spots, more_spots, +1, **limits)


def check_all(
    score: Scorer,
    probes: dict[str, np.ndarray],
    *,
    spot_min_shift: float | None = None,
    spot_min_share: float | None = None,
    **limits: float,
) -> list[Behaviour]:
    """Every check on one scorer; probes keyed as :func:`probes_from_crops` makes them.

    ``limits`` (``min_mean_shift``, ``min_share``) apply to the two directional checks;
    ``spot_min_shift`` and ``spot_min_share``, when given, replace them for the spot check alone.
    """
    spot_limits = dict(limits)
    if spot_min_shift is not None:
        spot_limits["min_mean_shift"] = spot_min_shift
    if spot_min_share is not None:
        spot_limits["min_share"] = spot_min_share
    return [
        check_dihedral_invariance(score, probes["mixed"]),
        check_cd45_ring_lowers_score(score, probes["without_ring"], probes["with_ring"], **limits),
        check_more_spots_raise_score(score, probes["two_spots"], probes["more_spots"], **spot_limits),
    ]


# --- probes from real crops -----------------------------------------------------------------------


def probes_from_crops(
    crops: np.ndarray,
    cells: pd.DataFrame,
    channels: list[str] | tuple[str, ...],
    cd45_threshold: float,
    n: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Probe crops from detected cells, each pair differing in one property only.

    ``cells`` are manifest rows (``crop_index``, ``area``, ``cd45_score``, ``cep8_spots``) of the
    cells to draw from; ``crops`` the crops array they index. At most ``n`` of each:

    * ``mixed``: any cells, for the invariance check;
    * ``without_ring`` / ``with_ring``: CD45-negative cells with 3 or more CEP8 spots (CTC-like by
      the rule), then the same crops with a CD45 ring at the level of this data's CD45+ cells;
    * ``two_spots`` / ``more_spots``: CD45-negative, CTC-sized cells (nuclear area at least the
      lower quartile of the CTC-like cells') with at most 2 spots, then the same crops with
      :data:`ADDED_SPOTS` more spots inside the nucleus, as bright as this data's spots. Only
      CTC-sized nuclei: a leukocyte-sized one with 4 spots looks like no CTC in the training data,
      so its score need not rise; a CTC-sized one differs from a CTC in its spots alone.
    """
    rng = np.random.default_rng(seed)
    cep8, cd45 = channels.index("CEP8"), channels.index("CD45")
    negative = cells["cd45_score"].to_numpy() < cd45_threshold
    spots = cells["cep8_spots"].to_numpy()

    def pick(mask: np.ndarray) -> pd.DataFrame:
        chosen = np.flatnonzero(mask)
        chosen = np.sort(rng.choice(chosen, size=min(n, chosen.size), replace=False))
        return cells.iloc[chosen]

    def read(rows: pd.DataFrame) -> np.ndarray:
        return np.asarray(crops[rows["crop_index"].to_numpy()], dtype=np.float32)

    ring_level = signal_level(read(pick(~negative)), cd45)
    spot_level = signal_level(read(pick(spots >= 1)), cep8)
    area = cells["area"].to_numpy()
    ctc_like_mask = negative & (spots >= 3)
    ctc_sized = area >= (np.percentile(area[ctc_like_mask], 25) if ctc_like_mask.any() else 0.0)
    ctc_like, diploid = pick(ctc_like_mask), pick(negative & (spots <= 2) & ctc_sized)
    without_ring, two_spots = read(ctc_like), read(diploid)
    with_ring, more_spots = without_ring.copy(), two_spots.copy()
    for crop, radius in zip(with_ring, nuclear_radii(ctc_like), strict=True):
        crop[cd45] += ring_level * ring_image(crop.shape[-1], radius)
    for crop, radius in zip(more_spots, nuclear_radii(diploid), strict=True):
        crop[cep8] += spot_level * spot_image(crop.shape[-1], radius, ADDED_SPOTS, rng)
    return {
        "mixed": read(pick(np.ones(len(cells), dtype=bool))),
        "without_ring": without_ring,
        "with_ring": with_ring,
        "two_spots": two_spots,
        "more_spots": more_spots,
    }
