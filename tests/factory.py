"""The one source of synthetic test data: imFISH fields, single-cell crops, manifests, annotations.

Everything follows the contracts of :mod:`ctcid.contracts`, so a test states only what it cares
about and inherits the rest:

* **cells** are drawn like imFISH cells: a DAPI nucleus (anti-aliased disc or ellipse), Gaussian
  CEP8 spots inside it, a CD45 membrane ring (with a dim cytoplasm) on CD45-positive cells, a mild
  optical blur and camera noise over a constant background. Each of :data:`CELL_TYPES` has a
  :class:`Look` (nucleus radius, spot count, CD45); only ``ctc`` is labelled CTC, as in the paper:
  CD45-negative with three or more CEP8 copies.
* **fields** (:func:`draw_field`) place fully specified :class:`DrawnCell` s, so a segmentation test
  knows exactly what should be found.
* **crops** (:func:`draw_crop`, :func:`draw_crops`) render one cell with the same renderer, centred
  as the segment stage cuts it: ``N x 3 x S x S`` uint16, row ``i`` = manifest row ``crop_index i``.
* **manifests** (:func:`make_manifest`) always have exactly :data:`MANIFEST_SCHEMA`'s columns and
  dtypes; every column a test does not pass is derived consistently from the cells' types.
* **annotations** (:func:`make_annotations`) have exactly :data:`ANNOTATION_COLUMNS`.

Intensities are camera counts like the simulator's defaults.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import requests

from ctcid.config.loader import parse_params
from ctcid.config.params import Params
from ctcid.contracts import (
    ANNOTATION_COLUMNS,
    BACKGROUND_COLUMNS,
    CELL_TYPES,
    CTC_LABEL,
    DEFAULT_SITE,
    MANIFEST_SCHEMA,
    NON_CTC_LABEL,
    SCALE_COLUMNS,
)

# --- pixel levels and sizes -----------------------------------------------------------------------

BACKGROUND = 250.0
NOISE = 20.0
DAPI_LEVEL = 4000.0
SPOT_PEAK = 2000.0
SPOT_SIGMA = 1.0
CD45_LEVEL = 2000.0
BLUR_SIGMA = 0.8
# A manifest's default field scale per stain (DAPI, CEP8, CD45): about what ctcid.intensity finds in
# a field of draw_crops' leukocytes at CROP_SIZE (nucleus, a spot's brightest pixels, the CD45 ring)
FIELD_SCALE = (4000.0, 1300.0, 1950.0)

CROP_SIZE = 24  # crops of the model tests; the segment stage's default is 40
POSTGRES = "postgres@127.0.0.1:5432"  # the machine's PostgreSQL (trust auth): postgres_database fixture
INPUT_SIZE = 16  # the model tests' train.input_size
FIELD_SIZE = 512  # field_width / field_height of a manifest
MAX_SPOTS = 6  # spot positions drawn per crop, whatever the count (see draw_crop)
SPOT_REACH = 0.6  # random spots lie within this fraction of the nuclear radius
CENTRE_JITTER = 1.0  # px, each axis, when a crop is drawn with an rng

# --- cell types -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Look:
    """How a cell type is drawn: radius range (px), CEP8 spot count range (inclusive), CD45."""

    radius: tuple[float, float]
    spots: tuple[int, int]
    cd45: bool
    dapi: float = 1.0  # DAPI brightness relative to DAPI_LEVEL


# CTC-like nuclei are larger; the two "hard negatives" share the CTC's nucleus and differ from it
# only in spots (diploid) or CD45 (aneuploid), so a model must read those to tell them apart.
LOOKS: dict[str, Look] = {
    "leukocyte": Look((3.5, 5.0), (2, 2), cd45=True),
    "ctc": Look((6.0, 8.0), (3, 5), cd45=False),
    "diploid_cd45neg": Look((6.0, 8.0), (2, 2), cd45=False),
    "aneuploid_cd45pos": Look((6.0, 8.0), (3, 5), cd45=True),
    "debris": Look((2.0, 3.0), (0, 0), cd45=False, dapi=0.3),
}


def is_ctc(cell_type: str) -> bool:
    """The paper's label of a cell type: only CTCs are CD45-negative with >= 3 CEP8 copies."""
    look = LOOKS[cell_type]
    return not look.cd45 and look.spots[0] >= 3


def cell_types(kinds: Sequence[str] | Sequence[bool] | np.ndarray) -> np.ndarray:
    """Cell types from types themselves or from CTC flags (True -> ``ctc``, False -> ``leukocyte``)."""
    kinds = np.asarray(kinds)
    if kinds.dtype.kind in "biuf":
        return np.where(kinds.astype(bool), "ctc", "leukocyte").astype(object)
    unknown = set(kinds.tolist()) - set(CELL_TYPES)
    if unknown:
        raise ValueError(f"unknown cell types {sorted(unknown)}; use contracts.CELL_TYPES")
    return kinds.astype(object)


def draw_cells(kinds: Sequence[str] | Sequence[bool] | np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """One row per cell: ``cell_type``, ``radius``, ``spots`` and ``cd45`` drawn from its :class:`Look`.

    The same table renders the crops (:func:`draw_crops`) and derives the manifest
    (:func:`make_manifest`), so pixels and features describe the same cells.
    """
    types = cell_types(kinds)
    looks = [LOOKS[t] for t in types]
    radius = np.array([k.radius for k in looks], dtype=np.float64).reshape(-1, 2)
    spots = np.array([k.spots for k in looks], dtype=np.int64).reshape(-1, 2)
    return pd.DataFrame(
        {
            "cell_type": types,
            "radius": rng.uniform(radius[:, 0], radius[:, 1]).astype(np.float32),
            "spots": rng.integers(spots[:, 0], spots[:, 1] + 1).astype(np.int16),
            "cd45": np.array([k.cd45 for k in looks], dtype=bool),
        }
    )


# --- rendering: fields and crops ------------------------------------------------------------------


@dataclass
class DrawnCell:
    """One cell of a drawn field, fully specified; positions and offsets in px."""

    x: float
    y: float
    radius: float
    spots: list[tuple[float, float]] = field(default_factory=list)  # offsets from the centre, px
    cd45: bool = False
    aspect: float = 1.0  # minor / major axis of the nucleus
    dapi: float = 1.0  # DAPI brightness relative to DAPI_LEVEL


def _gaussian(rows: np.ndarray, cols: np.ndarray, x: float, y: float, sigma: float) -> np.ndarray:
    return np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma * sigma))


def _render(cells: Sequence[DrawnCell], size: int, rng: np.random.Generator | None) -> np.ndarray:
    """3 x size x size uint16 (DAPI, CEP8, CD45): cells, blur, then noise from ``rng`` (none if None)."""
    scale = 8  # draw nuclei at 8x and shrink: anti-aliased edges like a real optical image
    dapi_big = np.zeros((size * scale, size * scale), dtype=np.float32)
    cep8 = np.zeros((size, size), dtype=np.float32)
    cd45 = np.zeros((size, size), dtype=np.float32)
    rows, cols = np.mgrid[:size, :size].astype(np.float32)
    for cell in cells:
        stretch = np.sqrt(cell.aspect)
        axes = (int(cell.radius / stretch * scale), int(cell.radius * stretch * scale))
        centre = (int((cell.x + 0.5) * scale), int((cell.y + 0.5) * scale))
        cv2.ellipse(dapi_big, centre, axes, 30, 0, 360, float(cell.dapi), thickness=-1)
        for dx, dy in cell.spots:
            cep8 += SPOT_PEAK * _gaussian(rows, cols, cell.x + dx, cell.y + dy, SPOT_SIGMA)
        if cell.cd45:
            distance = np.hypot(cols - cell.x, rows - cell.y)
            membrane = 1.4 * cell.radius
            cd45 += CD45_LEVEL * np.exp(-0.5 * (distance - membrane) ** 2)
            cd45 += 0.3 * CD45_LEVEL * (distance < membrane)
    dapi = DAPI_LEVEL * cv2.resize(dapi_big, (size, size), interpolation=cv2.INTER_AREA)
    image = np.stack([dapi, cep8, cd45]) + BACKGROUND
    image = np.stack([cv2.GaussianBlur(channel, (0, 0), BLUR_SIGMA) for channel in image])
    if rng is not None:
        image += rng.normal(0.0, NOISE, image.shape)
    return np.clip(np.rint(image), 0, 65535).astype(np.uint16)


def draw_field(cells: Sequence[DrawnCell], size: int = 96, seed: int = 0) -> np.ndarray:
    """3 x size x size uint16 field (DAPI, CEP8, CD45) with mild blur and Gaussian noise."""
    return _render(cells, size, np.random.default_rng(seed))


def _spot_layout(n: int, radius: float) -> list[tuple[float, float]]:
    """``n`` spots evenly on a circle of half the nuclear radius (one spot: the centre)."""
    if n == 1:
        return [(0.0, 0.0)]
    angles = 2 * np.pi * np.arange(n) / max(n, 1) + np.pi / 4
    return [(0.5 * radius * float(np.cos(a)), 0.5 * radius * float(np.sin(a))) for a in angles]


def draw_crop(
    size: int = CROP_SIZE,
    *,
    cell_type: str = "ctc",
    radius: float | None = None,
    spots: int | None = None,
    cd45: bool | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One ``3 x size x size`` uint16 crop of one cell, centred as the segment stage cuts it.

    ``cell_type`` (one of :data:`CELL_TYPES`) gives the defaults, its :class:`Look`'s mid radius,
    fewest spots and CD45; ``radius``, ``spots`` and ``cd45`` override them. Without ``rng`` the crop
    is exact: centred, spots on a fixed layout, no noise. With ``rng`` the centre moves by up to
    :data:`CENTRE_JITTER` px, spots fall at random inside the nucleus and camera noise is added;
    the draws never depend on ``spots`` or ``cd45``, so two calls with equally seeded generators
    give the same nucleus, the same first spots and the same noise, differing only where asked.
    """
    look = LOOKS[cell_type]
    radius = float(np.mean(look.radius)) if radius is None else float(radius)
    spots = look.spots[0] if spots is None else int(spots)
    cd45 = look.cd45 if cd45 is None else bool(cd45)
    if not 0 <= spots <= MAX_SPOTS:
        raise ValueError(f"spots must lie in [0, {MAX_SPOTS}], got {spots}")
    x = y = size / 2
    if rng is None:
        offsets = _spot_layout(spots, radius)
    else:
        dx, dy = rng.uniform(-CENTRE_JITTER, CENTRE_JITTER, 2)
        x, y = x + float(dx), y + float(dy)
        angle = rng.uniform(0.0, 2 * np.pi, MAX_SPOTS)
        reach = rng.uniform(0.0, SPOT_REACH, MAX_SPOTS) * radius
        offsets = [(float(r * np.cos(a)), float(r * np.sin(a))) for a, r in zip(angle, reach, strict=True)]
        offsets = offsets[:spots]
    cell = DrawnCell(x, y, radius, spots=offsets, cd45=cd45, dapi=look.dapi)
    return _render([cell], size, rng)


def draw_crops(
    cells: pd.DataFrame | Sequence[str] | Sequence[bool] | np.ndarray,
    size: int = CROP_SIZE,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``N x 3 x size x size`` uint16 crops, one per cell, following the crops contract.

    ``cells`` is a :func:`draw_cells` table, or cell types / CTC flags whose properties are then
    drawn from their :class:`Look` with ``rng`` (which also jitters each crop; see :func:`draw_crop`).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    if not isinstance(cells, pd.DataFrame):
        cells = draw_cells(cells, rng)
    crops = np.empty((len(cells), 3, size, size), dtype=np.uint16)
    for i, cell in enumerate(cells.itertuples(index=False)):
        crops[i] = draw_crop(
            size, cell_type=cell.cell_type, radius=cell.radius, spots=cell.spots, cd45=cell.cd45, rng=rng
        )
    return crops


def written_pixels(root: Path) -> dict[str, bytes]:
    """The pixels of every field under ``root``, by relative path: pixels, not file bytes, because
    zlib builds may compress the same pixels differently."""
    from ctcid.raw.fields import read_field

    return {str(p.relative_to(root)): read_field(p).tobytes() for p in sorted(root.rglob("*.tif"))}


# --- tables: the manifest and annotations ---------------------------------------------------------

CD45_STATUS = {True: "positive", False: "negative"}


def _rows(n: int | None, cells: object, columns: dict[str, object], allowed, what: str) -> int:
    """The table's length, from ``n``, ``cells`` and the array-valued columns, which must agree."""
    unknown = set(columns) - set(allowed)
    if unknown:
        raise TypeError(f"not {what} columns: {sorted(unknown)}")
    lengths = {len(v) for v in columns.values() if np.ndim(v) > 0}
    lengths |= {len(cells)} if cells is not None else set()
    lengths |= {n} if n is not None else set()
    if len(lengths) != 1:
        raise ValueError(f"give n, cells or column arrays of one length; got lengths {sorted(lengths)}")
    return lengths.pop()


def make_manifest(
    n: int | None = None,
    *,
    cells: pd.DataFrame | None = None,
    seed: int = 0,
    field_size: int = FIELD_SIZE,
    **columns: object,
) -> pd.DataFrame:
    """A manifest with exactly :data:`MANIFEST_SCHEMA`'s columns, in order, with its dtypes.

    Pass any manifest column (an array of ``n`` values or one scalar) to fix it; the rest follow:

    * the cells: ``cells`` (a :func:`draw_cells` table), else drawn with ``seed`` from
      ``true_cell_type``, else from ``true_label`` (1 -> ``ctc``, 0 or NA -> ``leukocyte``),
      else all leukocytes;
    * ``matched``: where ``true_label`` (else ``true_cell_type``) is known, else everywhere; the
      ``true_*`` columns are NA where a row is unmatched;
    * one sample ``S00`` and field ``f000``; ``cell_idx`` counts within a field, ``cell_uid`` is
      ``sample/field/cell_idx`` and ``crop_index`` the row number;
    * centres spread over a ``field_size`` field with each cell's box around its nucleus;
    * features from the cells (area and perimeter of the nuclear disc, CD45 score high on
      CD45-positive types, ``cep8_spots`` its spot count) and ``rule_label`` by the paper's rule.
    """
    n = _rows(n, cells, columns, MANIFEST_SCHEMA, "manifest")
    rng = np.random.default_rng(seed)

    def given(name: str) -> pd.Series | None:
        if name not in columns:
            return None
        value = columns[name]
        return pd.Series(value if np.ndim(value) > 0 else [value] * n).reset_index(drop=True)

    label, kind = given("true_label"), given("true_cell_type")
    if cells is None:
        if kind is not None:
            types = kind.astype(object).where(kind.notna(), "leukocyte")
        elif label is not None:
            types = np.where(label.astype("Float64").fillna(0).to_numpy(dtype=float) == 1, "ctc", "leukocyte")
        else:
            types = np.full(n, "leukocyte", dtype=object)
        cells = draw_cells(types, rng)
    cells = cells.reset_index(drop=True)
    types = cells["cell_type"].astype(object)
    if "matched" in columns:
        matched = given("matched").astype(bool)
    elif label is not None:
        matched = label.notna()
    elif kind is not None:
        matched = kind.notna()
    else:
        matched = pd.Series(np.ones(n, dtype=bool))
    known = matched.to_numpy()

    table: dict[str, object] = {}
    table["sample"] = given("sample") if "sample" in columns else pd.Series(["S00"] * n)
    table["site"] = given("site") if "site" in columns else pd.Series([DEFAULT_SITE] * n)
    table["field"] = given("field") if "field" in columns else pd.Series(["f000"] * n)
    keys = pd.DataFrame({"sample": table["sample"], "field": table["field"]})
    cell_idx = given("cell_idx") if "cell_idx" in columns else keys.groupby(["sample", "field"]).cumcount()
    table["cell_idx"] = cell_idx
    table["cell_uid"] = (
        keys["sample"].astype(str) + "/" + keys["field"].astype(str) + "/" + pd.Series(cell_idx).astype(str)
    )
    table["crop_index"] = np.arange(n)

    radius = cells["radius"].to_numpy(dtype=np.float32)
    margin = 2 * float(radius.max(initial=0.0)) + 2
    x, y = rng.uniform(margin, field_size - margin, (2, n))
    table["x"] = given("x") if "x" in columns else x
    table["y"] = given("y") if "y" in columns else y
    centre_x = np.asarray(table["x"], dtype=np.float32)
    centre_y = np.asarray(table["y"], dtype=np.float32)
    table |= {
        "x0": np.floor(centre_x - radius),
        "y0": np.floor(centre_y - radius),
        "x1": np.ceil(centre_x + radius) + 1,
        "y1": np.ceil(centre_y + radius) + 1,
        "field_height": field_size,
        "field_width": field_size,
    }

    area = np.pi * radius**2
    dapi_mean = rng.uniform(3000, 5000, n) * np.array([LOOKS[t].dapi for t in types])
    positive = cells["cd45"].to_numpy(dtype=bool)
    table |= {
        "area": area,
        "perimeter": 2 * np.pi * radius,
        "circularity": rng.uniform(0.8, 1.05, n),
        "solidity": rng.uniform(0.85, 1.0, n),
        "dapi_mean": dapi_mean,
        "dapi_integrated": area * dapi_mean,
        "cd45_score": np.where(positive, rng.uniform(0.5, 1.5, n), rng.uniform(0.0, 0.05, n)),
        "cep8_spots": cells["spots"].to_numpy(),
        # the levels ctcid.intensity.estimate_levels finds in draw_crops' cells
        **dict.fromkeys(BACKGROUND_COLUMNS, BACKGROUND),
        **dict(zip(SCALE_COLUMNS, FIELD_SCALE, strict=True)),
    }
    table |= {name: given(name) for name in columns}  # the test's columns win from here on
    spots = pd.Series(table["cep8_spots"]).to_numpy(dtype=np.int64)
    if "rule_label" not in columns:
        cd45_score = pd.Series(table["cd45_score"]).to_numpy(dtype=float)
        table["rule_label"] = ((cd45_score < 0.15) & (spots >= 3)).astype(np.int8)
    table["matched"] = known

    def truth(values: object) -> pd.Series:
        return pd.Series(values).astype(object).where(known, None)

    derived = {
        "true_cell_id": truth(table["field"].astype(str) + "-c" + pd.Series(cell_idx).map("{:03d}".format)),
        "true_cell_type": truth(types),
        "true_cd45": truth(cells["cd45"].map(CD45_STATUS)),
        "true_cep8": truth(spots),
        "true_label": truth(types.map(is_ctc).astype(int)),
    }
    table |= {name: value for name, value in derived.items() if name not in columns}
    frame = pd.DataFrame({name: table[name] for name in MANIFEST_SCHEMA}, index=pd.RangeIndex(n))
    return frame.astype(MANIFEST_SCHEMA)


def make_annotations(
    n: int | None = None,
    *,
    cells: Sequence[DrawnCell] | None = None,
    sample: str = "S0000",
    field: str = "f000",
    **columns: object,
) -> pd.DataFrame:
    """An ``annotations.csv`` table with exactly :data:`ANNOTATION_COLUMNS`, in order.

    ``cells`` (drawn field cells) give centres and boxes; ``cell_type`` defaults to ``ctc`` for a
    CD45-negative cell with >= 3 spots, else ``leukocyte`` (CD45-positive) or ``diploid_cd45neg``;
    ``label``, ``cep8_copies`` and ``cd45_status`` follow the type unless given.
    """
    n = _rows(n, cells, columns, ANNOTATION_COLUMNS, "annotation")
    table = pd.DataFrame(index=range(n))
    for name, value in columns.items():
        table[name] = list(value) if np.ndim(value) > 0 else value
    if cells is not None:
        found = {
            "x": [c.x for c in cells],
            "y": [c.y for c in cells],
            "x0": [c.x - int(c.radius) for c in cells],
            "y0": [c.y - int(c.radius) for c in cells],
            "x1": [c.x + int(c.radius) + 1 for c in cells],
            "y1": [c.y + int(c.radius) + 1 for c in cells],
            "cep8_copies": [len(c.spots) for c in cells],
            "cd45_status": [CD45_STATUS[c.cd45] for c in cells],
        }
        for name, value in found.items():
            if name not in table:
                table[name] = value
        if "cell_type" not in table:
            table["cell_type"] = [
                "leukocyte" if c.cd45 else "ctc" if len(c.spots) >= 3 else "diploid_cd45neg" for c in cells
            ]
    defaults: dict[str, object] = {
        "sample": sample,
        "field": field,
        "cell_id": [f"{field}-c{i:03d}" for i in range(n)],
        "x": 20.0,
        "y": 20.0,
        "cell_type": "leukocyte",
    }
    for name, value in defaults.items():
        if name not in table:
            table[name] = value
    for name in ("x0", "y0"):
        if name not in table:
            table[name] = table[name[0]] - 5
    for name in ("x1", "y1"):
        if name not in table:
            table[name] = table[name[0]] + 6
    looks = [LOOKS[t] for t in table["cell_type"]]
    if "label" not in table:
        table["label"] = [CTC_LABEL if is_ctc(t) else NON_CTC_LABEL for t in table["cell_type"]]
    if "cep8_copies" not in table:
        table["cep8_copies"] = [look.spots[0] for look in looks]
    if "cd45_status" not in table:
        table["cd45_status"] = [CD45_STATUS[look.cd45] for look in looks]
    if "cluster_id" not in table:
        table["cluster_id"] = ""
    return table[list(ANNOTATION_COLUMNS)]


# --- servers ------------------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on (for the real servers the tests start)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ok(process: subprocess.Popen, url: str, timeout_s: float, log: Path) -> None:
    """Poll ``url`` until it answers 2xx; fail with the server's log if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server behind {url} did not start:\n{log.read_text()[-4000:]}")


# --- parameters -----------------------------------------------------------------------------------


def tiny_params(tmp_path: Path, backbones: list[str], **train: object) -> Params:
    """Parameters of a seconds-long CPU training run, tracked to an MLflow under ``tmp_path``."""
    return parse_params(
        {
            "seed": 3,
            "train": {
                "backbones": backbones,
                "input_size": INPUT_SIZE,
                "epochs": 1,
                "patience": 1,
                "batch_size": 16,
                "bootstrap": 50,
                "threads": 0,
                "device": "cpu",
                **train,
            },
            "mlflow": {
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "artifact_location": str(tmp_path / "mlruns"),
                "experiment": "ctcid-test",
            },
        }
    )


def small_cohort(**simulate: object) -> Params:
    """Params of a few small simulated fields with every population present; overrides go into
    the simulate section (a nested mapping such as ``artefacts`` replaces that sub-section)."""
    section = {"n_samples": 3, "field_size": 160, "fields_per_sample": [1, 2], "background_cells_mean": 20.0}
    section.update(simulate)
    return parse_params({"seed": 7, "simulate": section})
