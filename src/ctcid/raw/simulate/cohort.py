"""Who is on the slide: the cells of one patient sample, their true state, and where they lie.

A sample is a patient's enriched blood after CD45 bead depletion: a heavy-tailed number of CTCs
(many patients none, a few hundreds), some arriving as clusters, among leukocytes that escaped
depletion, CD45-negative diploid cells, CD45+ cells with a third chromosome-8 copy, and debris.
Ground truth is the *true* state of each cell, before any optics; what the camera shows can differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ctcid.config.simulate import SimulateParams
from ctcid.contracts import CELL_TYPES, CTC_LABEL, NON_CTC_LABEL
from ctcid.raw.simulate import artefacts

LEUKOCYTE, CTC, DIPLOID_CD45NEG, ANEUPLOID_CD45POS, DEBRIS = CELL_TYPES

# Harmonics 2..6 of the nuclear outline; amplitude falls as 1/k so the outline stays smooth.
HARMONICS = np.arange(2, 7, dtype=np.float32)
# Outline irregularity of the non-CTC populations (CTCs use params.ctc_irregularity).
ROUND_IRREGULARITY = 0.04
DEBRIS_IRREGULARITY = 0.35
# Touching nuclei: centre distance as a fraction of the radius sum (< 1 overlaps a little).
TOUCH_DISTANCE = (0.8, 1.05)
PLACEMENT_TRIES = 60


def label_for(cd45_status: str, cep8_copies: int, cell_type: str) -> str:
    """The paper's criterion on the true state: DAPI+ (not debris), CD45-negative, CEP8 >= 3."""
    is_ctc = cd45_status == "negative" and cep8_copies >= 3 and cell_type != DEBRIS
    return CTC_LABEL if is_ctc else NON_CTC_LABEL


@dataclass(frozen=True)
class NucleusShape:
    """A star-shaped outline: an area-preserving ellipse modulated by a few radial harmonics."""

    radius: float
    aspect: float  # minor / major axis, <= 1
    orientation: float
    amplitudes: np.ndarray
    phases: np.ndarray

    @classmethod
    def draw(cls, radius: float, irregularity: float, rng: np.random.Generator) -> NucleusShape:
        return cls(
            radius=radius,
            aspect=float(rng.uniform(0.75, 1.0)),
            orientation=float(rng.uniform(0.0, math.pi)),
            amplitudes=(irregularity * rng.standard_normal(len(HARMONICS)) / HARMONICS).astype(np.float32),
            phases=rng.uniform(0.0, 2 * math.pi, len(HARMONICS)).astype(np.float32),
        )

    def radius_at(self, theta: np.ndarray) -> np.ndarray:
        major = self.radius / math.sqrt(self.aspect)
        minor = self.radius * math.sqrt(self.aspect)
        t = theta - self.orientation
        ellipse = major * minor / np.sqrt((minor * np.cos(t)) ** 2 + (major * np.sin(t)) ** 2)
        ripple = np.ones_like(theta)
        for k, amplitude, phase in zip(HARMONICS, self.amplitudes, self.phases, strict=True):
            ripple += amplitude * np.cos(k * theta + phase)
        return (ellipse * np.maximum(ripple, 0.4)).astype(np.float32)

    @property
    def max_radius(self) -> float:
        return self.radius / math.sqrt(self.aspect) * (1.0 + float(np.abs(self.amplitudes).sum()))


@dataclass(eq=False)
class Cell:
    """One true cell (or debris particle); ``x``/``y`` are set when it is placed in a field."""

    cell_type: str
    cd45_status: str  # positive, dim, negative
    cep8_copies: int
    shape: NucleusShape
    cytoplasm_ratio: float
    dapi_level: float
    cd45_level: float
    chromatin: float  # relative amplitude of the DAPI texture
    cluster: int = -1  # cluster number within the sample, -1 when single
    touching: bool = False  # place it against an already placed cell
    x: float = 0.0
    y: float = 0.0
    # the hard cohort's artefacts (raw/simulate/artefacts.py); the defaults draw a plain cell
    clump: bool = False  # a member of a clump: overlaps its neighbours
    fragments: list[tuple[float, float, float]] = field(default_factory=list)  # (dx, dy, radius)
    micronucleus: tuple[float, float, float] | None = None  # (dx, dy, radius) from the cell centre
    defocus: float = 0.0  # px of extra blur over the whole cell
    cd45_arc: tuple[float, float] | None = None  # (share kept, centre angle) of a partial CD45 ring
    tags: list[str] = field(default_factory=list)  # artefacts this cell carries

    @property
    def label(self) -> str:
        return label_for(self.cd45_status, self.cep8_copies, self.cell_type)

    @property
    def outer_radius(self) -> float:
        return self.shape.max_radius * self.cytoplasm_ratio


def _cell(
    p: SimulateParams,
    rng: np.random.Generator,
    cell_type: str,
    radius: float,
    irregularity: float,
    copies: int,
    cd45_status: str,
) -> Cell:
    shape = NucleusShape.draw(radius, irregularity, rng)
    cd45 = 0.0
    if cd45_status != "negative":
        cd45 = rng.uniform(*p.cd45_counts)
        if cd45_status == "dim":
            cd45 *= rng.uniform(*p.cd45_dim_fraction)
    dapi = rng.uniform(*p.dapi_counts)
    if cell_type == DEBRIS:
        dapi *= rng.uniform(1.5, 3.0)  # condensed, pyknotic DNA fragments are brighter than nuclei
    return Cell(
        cell_type=cell_type,
        cd45_status=cd45_status,
        cep8_copies=copies,
        shape=shape,
        cytoplasm_ratio=1.0 if cell_type == DEBRIS else float(rng.uniform(*p.cytoplasm_ratio)),
        dapi_level=float(dapi),
        cd45_level=float(cd45),
        # tumour chromatin is coarser than the condensed chromatin of leukocytes
        chromatin=0.22 if cell_type == CTC else 0.12,
    )


def _ctc_copies(p: SimulateParams, rng: np.random.Generator) -> int:
    low, high = p.ctc_cep8_copies
    copies = np.arange(low, high + 1)
    weights = p.ctc_cep8_decay ** (copies - low)
    return int(rng.choice(copies, p=weights / weights.sum()))


def _with_artefacts(cell: Cell, p: SimulateParams, rng: np.random.Generator) -> Cell:
    if p.artefacts.enabled:  # no draw at all otherwise: the default cohort keeps its bytes
        artefacts.decorate(cell, p.artefacts, rng)
    return cell


def make_ctc(p: SimulateParams, rng: np.random.Generator, cluster: int = -1) -> Cell:
    cell = _cell(p, rng, CTC, rng.uniform(*p.ctc_radius), p.ctc_irregularity, _ctc_copies(p, rng), "negative")
    cell.cluster = cluster
    return _with_artefacts(cell, p, rng)


def make_background_cell(p: SimulateParams, rng: np.random.Generator) -> Cell:
    """One non-CTC cell drawn from the population left after CD45 depletion."""
    lookalike = artefacts.extra_background_cell(p, rng)
    if lookalike is not None:
        return _with_artefacts(lookalike, p, rng)
    shares = np.array([p.hard_negative_share, p.cd45pos_aneuploid_share, p.debris_share])
    kinds = (DIPLOID_CD45NEG, ANEUPLOID_CD45POS, DEBRIS, LEUKOCYTE)
    kind = kinds[rng.choice(4, p=np.append(shares, 1.0 - shares.sum()))]
    if kind == DEBRIS:
        return _cell(p, rng, DEBRIS, rng.uniform(*p.debris_radius), DEBRIS_IRREGULARITY, 0, "negative")
    if kind == DIPLOID_CD45NEG:
        # CD45-negative diploid cells (endothelial, epithelial, stromal) are often as large as CTCs
        if rng.random() < p.hard_negative_large_prob:
            radius = rng.uniform(*p.ctc_radius)
        else:
            radius = rng.uniform(p.leukocyte_radius[0], max(p.ctc_radius[0], p.leukocyte_radius[1]))
        cell = _cell(p, rng, DIPLOID_CD45NEG, radius, p.ctc_irregularity / 2, 2, "negative")
        return _with_artefacts(cell, p, rng)
    cd45_status = "dim" if rng.random() < p.cd45_dim_share else "positive"
    copies = 3 if kind == ANEUPLOID_CD45POS else 2
    cell = _cell(p, rng, kind, rng.uniform(*p.leukocyte_radius), ROUND_IRREGULARITY, copies, cd45_status)
    if kind == ANEUPLOID_CD45POS:
        artefacts.polyploid(cell, p, rng)
    return _with_artefacts(cell, p, rng)


@dataclass
class SampleCohort:
    """The cells of one sample, grouped (a cluster is one group) and assigned to fields."""

    n_fields: int
    groups_per_field: list[list[list[Cell]]] = field(default_factory=list)


def draw_cohort(p: SimulateParams, rng: np.random.Generator) -> SampleCohort:
    k = p.ctc_burden_dispersion
    n_ctc = int(rng.negative_binomial(k, k / (k + p.ctc_burden_mean))) if p.ctc_burden_mean > 0 else 0
    n_ctc = min(n_ctc, p.ctc_burden_max)
    n_background = int(rng.poisson(p.background_cells_mean))

    groups: list[list[Cell]] = []
    clusters = 0
    remaining = n_ctc
    while remaining > 0:
        size = 1
        if remaining >= p.ctc_cluster_size[0] and rng.random() < p.ctc_cluster_prob:
            size = min(remaining, int(rng.integers(p.ctc_cluster_size[0], p.ctc_cluster_size[1] + 1)))
        cluster = clusters if size > 1 else -1
        clusters += size > 1
        groups.append([make_ctc(p, rng, cluster) for _ in range(size)])
        remaining -= size
    groups.extend([make_background_cell(p, rng)] for _ in range(n_background))
    for group in groups:
        if len(group) == 1 and rng.random() < p.touching_share:
            group[0].touching = True
    artefacts.draw_clumps(p, groups, rng)

    n_fields = int(rng.integers(p.fields_per_sample[0], p.fields_per_sample[1] + 1))
    cohort = SampleCohort(n_fields=n_fields, groups_per_field=[[] for _ in range(n_fields)])
    for group, target in zip(groups, rng.integers(0, n_fields, len(groups)), strict=True):
        cohort.groups_per_field[int(target)].append(group)
    return cohort


class _Layout:
    """Cells already placed in one field, for vectorised overlap checks."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.cells: list[Cell] = []
        self.xy = np.empty((0, 2))
        self.outer = np.empty(0)

    def inside(self, cell: Cell, x: float, y: float) -> bool:
        margin = cell.outer_radius + 1.0
        return margin <= x <= self.size - margin and margin <= y <= self.size - margin

    def clear_of(self, cell: Cell, x: float, y: float, exempt: set[int]) -> bool:
        """No cell other than ``exempt`` within the sum of outer (cytoplasm) radii."""
        if not self.cells:
            return True
        distance = np.hypot(self.xy[:, 0] - x, self.xy[:, 1] - y)
        clash = distance < self.outer + cell.outer_radius
        if exempt:
            clash[list(exempt)] = False
        return not clash.any()

    def add(self, cell: Cell, x: float, y: float) -> int:
        cell.x, cell.y = float(x), float(y)
        self.cells.append(cell)
        self.xy = np.vstack([self.xy, [x, y]])
        self.outer = np.append(self.outer, cell.outer_radius)
        return len(self.cells) - 1

    def place_free(self, cell: Cell, rng: np.random.Generator) -> int | None:
        margin = cell.outer_radius + 1.0
        if margin * 2 >= self.size:
            return None
        for _ in range(PLACEMENT_TRIES):
            x, y = rng.uniform(margin, self.size - margin, 2)
            if self.clear_of(cell, x, y, set()):
                return self.add(cell, x, y)
        return None

    def place_touching(
        self,
        cell: Cell,
        partners: list[int],
        group: set[int],
        rng: np.random.Generator,
        touch: tuple[float, float] = TOUCH_DISTANCE,
    ) -> int | None:
        """Against one of ``partners``; may also touch the rest of its own ``group`` (a cluster).

        ``touch`` is the centre distance as a fraction of the two nuclear radii (clumps overlap more).
        """
        for _ in range(PLACEMENT_TRIES):
            partner_index = partners[int(rng.integers(len(partners)))]
            partner = self.cells[partner_index]
            distance = (partner.shape.radius + cell.shape.radius) * rng.uniform(*touch)
            angle = rng.uniform(0.0, 2 * math.pi)
            x, y = partner.x + distance * math.cos(angle), partner.y + distance * math.sin(angle)
            if not self.inside(cell, x, y):
                continue
            exempt = group | {partner_index}
            if not self.clear_of(cell, x, y, exempt):
                continue
            members = list(exempt)
            nuclear = np.array([self.cells[i].shape.radius for i in members]) + cell.shape.radius
            gaps = np.hypot(self.xy[members, 0] - x, self.xy[members, 1] - y)
            if (gaps >= touch[0] * nuclear).all():
                return self.add(cell, x, y)
        return None


def place_field(
    groups: list[list[Cell]],
    size: int,
    rng: np.random.Generator,
    clump_overlap: tuple[float, float] = TOUCH_DISTANCE,
) -> tuple[list[Cell], int]:
    """Lay the groups out in a ``size`` x ``size`` field; returns the placed cells and how many did not fit.

    Cells keep clear of each other's cytoplasm (rejection sampling) except clusters and cells
    flagged ``touching``, whose nuclei abut or overlap a neighbour's, and clumps, whose members
    lie ``clump_overlap`` x their radius sum apart (over each other).
    """
    layout = _Layout(size)
    # clusters first: they need the most room
    order = sorted(rng.permutation(len(groups)), key=lambda i: -len(groups[i]))
    dropped = 0
    for index in order:
        group = groups[index]
        first = group[0]
        placed: int | None = None
        if first.touching and layout.cells:
            candidates = [i for i, c in enumerate(layout.cells) if c.cell_type != DEBRIS]
            if candidates:
                placed = layout.place_touching(first, candidates, set(), rng)
        if placed is None:
            placed = layout.place_free(first, rng)
        if placed is None:
            dropped += len(group)
            continue
        members = {placed}
        touch = clump_overlap if first.clump else TOUCH_DISTANCE
        for cell in group[1:]:
            index_placed = layout.place_touching(cell, sorted(members), members, rng, touch)
            if index_placed is None:
                dropped += 1
            else:
                members.add(index_placed)
        if len(members) == 1:
            first.cluster = -1  # a cluster whose partners found no room is a single CTC
    return layout.cells, dropped
