"""The hard cohort's artefacts: what real imFISH slides show that the default cohort does not.

Every function here runs only when its knob in ``simulate.artefacts`` is on, so the default cohort
draws exactly the random numbers it drew before (byte-identical files). Each artefact leaves a tag
on the cells it touched; the simulator writes them to ``<sample>/artefacts.csv`` so that any
metric can be broken down by artefact (docs/simulator.md#hard-cohort).
"""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np

from ctcid.config.simulate import ArtefactParams, SimulateParams
from ctcid.raw.simulate import cohort  # which imports this module: both only use each other in functions

ARTEFACTS_FILE = "artefacts.csv"
ARTEFACT_COLUMNS = ("cell_id", "artefacts")
# Tags, one per artefact, in the order docs/simulator.md lists them.
CLUMP, DIM_NUCLEUS, PYKNOTIC, FRAGMENTED, MICRONUCLEUS = (
    "clump",
    "dim_nucleus",
    "pyknotic",
    "fragmented",
    "micronucleus",
)
DEFOCUS, UNEVEN_BACKGROUND, SPLIT_SIGNAL, OUT_OF_PLANE, SPECK = (
    "defocus",
    "uneven_background",
    "split_signal",
    "out_of_plane_signal",
    "cross_hyb_speck",
)
CD45_PARTIAL, LOOKALIKE, ENDOTHELIAL, POLYPLOID = (
    "cd45_partial",
    "cd45_dim_lookalike",
    "endothelial",
    "polyploid",
)
TAGS = (
    CLUMP,
    DIM_NUCLEUS,
    PYKNOTIC,
    FRAGMENTED,
    MICRONUCLEUS,
    DEFOCUS,
    UNEVEN_BACKGROUND,
    SPLIT_SIGNAL,
    OUT_OF_PLANE,
    SPECK,
    CD45_PARTIAL,
    LOOKALIKE,
    ENDOTHELIAL,
    POLYPLOID,
)

PYKNOTIC_RADIUS = (0.55, 0.7)  # x the nuclear radius: chromatin condenses
PYKNOTIC_DAPI = (1.8, 2.5)  # x the DAPI level: the same DNA in a smaller volume
FRAGMENT_RADIUS = (0.3, 0.45)  # x the nuclear radius, each fragment round
FRAGMENT_SPREAD = 0.75  # fragments' centres within this x the nuclear radius of the cell centre
MICRONUCLEUS_RADIUS = (1.0, 2.0)  # px (1/16 to 1/3 of the nuclear diameter, Fenech 2007)
MICRONUCLEUS_GAP = (0.5, 2.5)  # px between the nuclear edge and the micronucleus
OTHER_MICRONUCLEUS_SHARE = 0.2  # non-CTCs carry micronuclei at this x micronucleus_prob
ENDOTHELIAL_ASPECT = (0.3, 0.5)  # minor / major axis: elongated, spindle-like nuclei
ARC_EDGE = 0.25  # rad over which a partial CD45 ring fades out
HAZE_SCALE = 0.12  # smoothing sigma of the background haze, x the field side
SPLIT_BRIGHTNESS = (0.5, 0.7)  # each half of a split signal, x the copy's peak
# The haze is mostly DNA (lysed cells, free DNA): strongest in DAPI, a glow in the other channels.
HAZE_CHANNEL_SHARE = np.array([1.0, 0.4, 0.4], dtype=np.float32)[:, None, None]


def decorate(cell, a: ArtefactParams, rng: np.random.Generator) -> None:
    """Per-cell artefacts drawn when the cell is made: dim, apoptotic, micronucleus, defocus, CD45 arc."""
    if cell.cell_type == cohort.DEBRIS:
        return
    if a.dim_nucleus_prob and rng.random() < a.dim_nucleus_prob:
        cell.dapi_level *= float(rng.uniform(*a.dim_nucleus_scale))
        cell.tags.append(DIM_NUCLEUS)
    if a.apoptotic_prob and cell.cell_type == cohort.LEUKOCYTE and rng.random() < a.apoptotic_prob:
        _apoptose(cell, a, rng)
    share = 1.0 if cell.cell_type == cohort.CTC else OTHER_MICRONUCLEUS_SHARE
    if a.micronucleus_prob and not cell.fragments and rng.random() < share * a.micronucleus_prob:
        angle = float(rng.uniform(0.0, 2 * math.pi))
        radius = float(rng.uniform(*MICRONUCLEUS_RADIUS))
        reach = (
            float(cell.shape.radius_at(np.float32(angle))) + float(rng.uniform(*MICRONUCLEUS_GAP)) + radius
        )
        cell.micronucleus = (reach * math.cos(angle), reach * math.sin(angle), radius)
        cell.tags.append(MICRONUCLEUS)
    if a.defocus_prob and rng.random() < a.defocus_prob:
        cell.defocus = float(rng.uniform(*a.defocus_sigma))
        cell.tags.append(DEFOCUS)
    if a.cd45_partial_prob and cell.cd45_level > 0 and rng.random() < a.cd45_partial_prob:
        cell.cd45_arc = (float(rng.uniform(*a.cd45_arc)), float(rng.uniform(0.0, 2 * math.pi)))
        cell.tags.append(CD45_PARTIAL)


def _apoptose(cell, a: ArtefactParams, rng: np.random.Generator) -> None:
    """Half pyknotic (one small bright nucleus), half karyorrhectic (round fragments in the cell)."""
    if rng.random() < 0.5:
        radius = cell.shape.radius * float(rng.uniform(*PYKNOTIC_RADIUS))
        # the cell shrinks less than its nucleus: the CD45 ring stays about where it was
        cell.cytoplasm_ratio *= cell.shape.radius / radius
        cell.shape = cohort.NucleusShape.draw(radius, cohort.ROUND_IRREGULARITY, rng)
        cell.dapi_level *= float(rng.uniform(*PYKNOTIC_DAPI))
        cell.chromatin = 0.05
        cell.tags.append(PYKNOTIC)
        return
    count = int(rng.integers(a.fragments[0], a.fragments[1] + 1))
    fragments: list[tuple[float, float, float]] = []
    for _ in range(count):
        radius = cell.shape.radius * float(rng.uniform(*FRAGMENT_RADIUS))
        for _ in range(30):
            reach = cell.shape.radius * FRAGMENT_SPREAD * math.sqrt(rng.random())
            angle = rng.uniform(0.0, 2 * math.pi)
            dx, dy = reach * math.cos(angle), reach * math.sin(angle)
            if all(math.hypot(dx - fx, dy - fy) >= radius + fr + 0.5 for fx, fy, fr in fragments):
                break
        fragments.append((dx, dy, radius))
    cell.fragments = fragments
    cell.dapi_level *= 1.3  # condensed chromatin
    cell.chromatin = 0.05
    cell.tags.append(FRAGMENTED)


def extra_background_cell(p: SimulateParams, rng: np.random.Generator):
    """A look-alike drawn instead of an ordinary non-CTC cell, or None (then the usual populations)."""
    a = p.artefacts
    if not (a.lookalike_share or a.endothelial_share):
        return None
    draw = rng.random()
    if draw < a.lookalike_share:
        return _lookalike(p, rng)
    if draw < a.lookalike_share + a.endothelial_share:
        return _endothelial(p, rng)
    return None


def _lookalike(p: SimulateParams, rng: np.random.Generator):
    """CTC-sized, irregular, aneuploid and all but CD45-negative: a megakaryocyte-like cell."""
    cell = cohort._cell(
        p,
        rng,
        cohort.ANEUPLOID_CD45POS,
        rng.uniform(*p.ctc_radius),
        p.ctc_irregularity,
        cohort._ctc_copies(p, rng),
        "dim",
    )
    cell.cd45_level = float(rng.uniform(*p.cd45_counts) * rng.uniform(*p.artefacts.lookalike_cd45_fraction))
    cell.chromatin = 0.22  # as coarse as tumour chromatin
    cell.tags.append(LOOKALIKE)
    return cell


def _endothelial(p: SimulateParams, rng: np.random.Generator):
    """A circulating endothelial-like cell: CD45-negative, diploid, a large elongated nucleus."""
    cell = cohort._cell(
        p, rng, cohort.DIPLOID_CD45NEG, rng.uniform(*p.ctc_radius), p.ctc_irregularity / 2, 2, "negative"
    )
    cell.shape = replace(cell.shape, aspect=float(rng.uniform(*ENDOTHELIAL_ASPECT)))
    cell.tags.append(ENDOTHELIAL)
    return cell


def polyploid(cell, p: SimulateParams, rng: np.random.Generator) -> None:
    """More copies for a CD45+ aneuploid cell if ``polyploid_copies`` allows; the nucleus grows too."""
    low, high = p.artefacts.polyploid_copies
    if (low, high) == (3, 3):
        return
    cell.cep8_copies = int(rng.integers(low, high + 1))
    growth = math.sqrt(cell.cep8_copies / 2)  # nuclear area ~ DNA content
    cell.shape = replace(cell.shape, radius=cell.shape.radius * growth)
    cell.tags.append(POLYPLOID)


def draw_clumps(p: SimulateParams, groups: list, rng: np.random.Generator) -> None:
    """Add Poisson(clumps_mean) clumps of 3+ overlapping cells; some take one of the sample's single CTCs."""
    a = p.artefacts
    if not a.clumps_mean:
        return
    for _ in range(int(rng.poisson(a.clumps_mean))):
        size = int(rng.integers(a.clump_size[0], a.clump_size[1] + 1))
        members = []
        singles = [g for g in groups if len(g) == 1 and g[0].cell_type == cohort.CTC and g[0].cluster < 0]
        if singles and rng.random() < a.clump_ctc_prob:
            chosen = singles[int(rng.integers(len(singles)))]
            groups.remove(chosen)
            members.append(chosen[0])  # placed first: the leukocytes lie against and over it
        while len(members) < size:
            members.append(cohort.make_background_cell(p, rng))
        for cell in members:
            cell.clump = True
            cell.touching = False
            cell.tags.append(CLUMP)
        groups.append(members)


def field_haze(cells: list, p: SimulateParams, rng: np.random.Generator) -> np.ndarray | None:
    """A field's uneven background (3 x H x W, to add to the specimen), or None when it is off.

    Smooth haze (lysed cells, free DNA, out-of-focus debris) from 0 to ``uneven_background`` x the
    slide background; the cells under which it at least doubles the background are tagged.
    """
    a = p.artefacts
    if not a.uneven_background:
        return None
    level = float(np.mean(p.background_counts))
    shape = (p.field_size, p.field_size)
    noise = rng.standard_normal(shape).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), HAZE_SCALE * p.field_size, borderType=cv2.BORDER_REFLECT)
    smooth -= smooth.min()
    smooth /= max(float(smooth.max()), 1e-6)
    plane = (a.uneven_background * level * smooth**2).astype(np.float32)
    for cell in cells:
        if plane[int(cell.y), int(cell.x)] >= level:
            cell.tags.append(UNEVEN_BACKGROUND)
    return plane[None] * HAZE_CHANNEL_SHARE


def arc_window(theta: np.ndarray, arc: tuple[float, float]) -> np.ndarray:
    """1 on the kept share ``arc[0]`` of the ring centred at angle ``arc[1]``, fading to 0 off it."""
    share, centre = arc
    off = np.abs((theta - centre + np.pi) % (2 * np.pi) - np.pi)  # angular distance to the centre
    return np.clip((share * np.pi - off) / ARC_EDGE + 0.5, 0.0, 1.0)


def split_positions(
    x: float, y: float, peak: float, a: ArtefactParams, rng: np.random.Generator
) -> list[tuple[float, float, float]]:
    """The two halves (x, y, peak) of one copy imaged as a split signal, about its true position."""
    distance = float(rng.uniform(*a.split_distance)) / 2
    angle = float(rng.uniform(0.0, 2 * math.pi))
    dx, dy = distance * math.cos(angle), distance * math.sin(angle)
    shares = rng.uniform(*SPLIT_BRIGHTNESS, 2)
    return [(x + dx, y + dy, peak * float(shares[0])), (x - dx, y - dy, peak * float(shares[1]))]


def speck_positions(cell, a: ArtefactParams, p: SimulateParams, rng: np.random.Generator) -> list[tuple]:
    """Cross-hybridisation specks (x, y, sigma, peak) inside the nucleus: dim, FISH-like, no copy."""
    count = int(rng.poisson(a.nuclear_speck_mean))
    specks = []
    for _ in range(count):
        angle = float(rng.uniform(0.0, 2 * math.pi))
        reach = 0.85 * math.sqrt(rng.random()) * float(cell.shape.radius_at(np.float32(angle)))
        sigma = float(rng.uniform(*p.spot_sigma))
        peak = p.spot_peak * float(rng.uniform(*a.nuclear_speck_brightness))
        specks.append((cell.x + reach * math.cos(angle), cell.y + reach * math.sin(angle), sigma, peak))
    return specks
