"""The hard cohort's simulator artefacts (docs/simulator.md#hard-cohort): each as documented, only when on."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage

from ctcid.config.base import ConfigError
from ctcid.config.loader import merge_overlay, parse_params, read_raw
from ctcid.config.simulate import ArtefactParams
from ctcid.contracts import CTC_LABEL
from ctcid.raw.fields import read_field
from ctcid.raw.simulate import artefacts, simulate_dataset
from ctcid.raw.simulate.cells import CD45, CEP8, DAPI, draw_cell
from ctcid.raw.simulate.cohort import Cell, NucleusShape
from factory import written_pixels

ROOT = Path(__file__).resolve().parents[2]
FIELD = 96


def params(**knobs: object):
    """Small fields with the named artefacts on (``simulate.artefacts``), the rest default."""
    return parse_params(
        {
            "seed": 5,
            "simulate": {
                "n_samples": 4,
                "field_size": 192,
                "fields_per_sample": [1, 1],
                "background_cells_mean": 25.0,
                "artefacts": knobs,
            },
        }
    )


def simulate(tmp_path: Path, **knobs: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Annotations and the artefacts.csv rows of a small run."""
    simulate_dataset(params(**knobs), tmp_path, workers=1, show_progress=False)
    truth = pd.concat(
        pd.read_csv(p, dtype={"field": str}) for p in sorted(tmp_path.glob("*/annotations.csv"))
    )
    tagged = [pd.read_csv(p).assign(sample=p.parent.name) for p in sorted(tmp_path.glob("*/artefacts.csv"))]
    tags = pd.concat(tagged) if tagged else pd.DataFrame(columns=["cell_id", "artefacts", "sample"])
    return truth, tags


def carrying(tags: pd.DataFrame, tag: str) -> pd.DataFrame:
    return tags[tags["artefacts"].str.split(";").map(lambda names: tag in names)]


def plain_cell(radius: float = 8.0, copies: int = 2, cd45: float = 0.0, **artefact: object) -> Cell:
    shape = NucleusShape(radius, 1.0, 0.0, np.zeros(5, np.float32), np.zeros(5, np.float32))
    cell = Cell("leukocyte", "positive" if cd45 else "negative", copies, shape, 1.4, 4000.0, cd45, 0.0)
    cell.x = cell.y = FIELD / 2
    for name, value in artefact.items():
        setattr(cell, name, value)
    return cell


def render(cell: Cell, **simulate: object) -> tuple[np.ndarray, np.ndarray, object]:
    p = params(**simulate).simulate
    specimen = np.zeros((3, FIELD, FIELD), np.float32)
    nuclei = np.zeros((FIELD, FIELD), bool)
    box = draw_cell(specimen, nuclei, cell, p, np.random.default_rng(0))
    return specimen, nuclei, box


def cohort_bytes(root: Path) -> dict[str, bytes]:
    """Pixels and annotations of every field and sample."""
    found = written_pixels(root)
    found.update({str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("annotations.csv"))})
    return found


def bypass_artefact_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every hook the simulator calls in the artefacts module, replaced by its 'nothing' result drawn
    without the generator; the hooks that only run for an artefact that is on must not run at all."""

    def never(*_: object, **__: object) -> None:
        raise AssertionError("an artefact hook ran with every artefact off")

    for name in ("decorate", "polyploid", "draw_clumps", "extra_background_cell", "field_haze"):
        monkeypatch.setattr(artefacts, name, lambda *_: None)  # None: no change, no look-alike, no haze
    for name in ("split_positions", "speck_positions", "arc_window"):
        monkeypatch.setattr(artefacts, name, never)


def test_with_every_artefact_off_the_artefact_code_draws_nothing_and_changes_no_pixel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Proven within this run, on whatever CPU it runs on: the same cohort with the artefact hooks
    # live and bypassed. Had a hook drawn one random number, every later draw of the sample would
    # have moved; had it touched the specimen, pixels would differ.
    assert not ArtefactParams().enabled
    simulate_dataset(params(), tmp_path / "live", workers=1, show_progress=False)
    with monkeypatch.context() as patched:
        bypass_artefact_hooks(patched)
        simulate_dataset(params(), tmp_path / "bypassed", workers=1, show_progress=False)
    assert not list(tmp_path.glob("*/*/artefacts.csv"))
    live, bypassed = cohort_bytes(tmp_path / "live"), cohort_bytes(tmp_path / "bypassed")
    assert len(live) == 4 + 4  # four one-field samples, each with its annotations
    assert live == bypassed


def test_the_bypass_would_see_an_artefact_that_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the check above can fail: one artefact on, and the bypassed run differs
    knobs = {"dim_nucleus_prob": 0.2}
    simulate_dataset(params(**knobs), tmp_path / "live", workers=1, show_progress=False)
    with monkeypatch.context() as patched:
        bypass_artefact_hooks(patched)
        simulate_dataset(params(**knobs), tmp_path / "bypassed", workers=1, show_progress=False)
    assert cohort_bytes(tmp_path / "live") != cohort_bytes(tmp_path / "bypassed")


# What params() drew when this test was written, as statistics that hold on every CPU: cell counts
# come from the generator alone; mean pixels move by far less than the tolerance when a CPU rounds
# the last bit of a float differently (docs/reproducibility.md#another-cpu-type).
DEFAULT_COHORT_CELLS = {"leukocyte": 85, "ctc": 8, "diploid_cd45neg": 5, "debris": 4, "aneuploid_cd45pos": 2}
DEFAULT_COHORT_MEAN_PIXEL = {"DAPI": 851.959, "CEP8": 476.377, "CD45": 734.065}


def test_the_default_cohort_keeps_its_statistics(tmp_path: Path) -> None:
    simulate_dataset(params(), tmp_path, workers=1, show_progress=False)
    truth = pd.concat(pd.read_csv(p) for p in sorted(tmp_path.glob("*/annotations.csv")))
    assert truth["cell_type"].value_counts().to_dict() == DEFAULT_COHORT_CELLS
    stack = np.stack([read_field(p) for p in sorted(tmp_path.rglob("*.tif"))]).astype(np.float64)
    means = dict(zip(params().channels, stack.mean(axis=(0, 2, 3)), strict=True))
    assert means == pytest.approx(DEFAULT_COHORT_MEAN_PIXEL, rel=1e-3)


def test_the_hard_preset_tags_every_artefact(tmp_path: Path) -> None:
    overlay = read_raw(ROOT / "configs" / "hard.yaml")
    hard = parse_params(merge_overlay(read_raw(ROOT / "params.yaml"), overlay))
    hard = hard.model_copy(update={"simulate": hard.simulate.model_copy(update={"n_samples": 12})})
    simulate_dataset(hard, tmp_path, workers=2, show_progress=False)
    tags = pd.concat(pd.read_csv(p) for p in tmp_path.glob("*/artefacts.csv"))
    seen = {name for joined in tags["artefacts"] for name in joined.split(";")}
    assert seen == set(artefacts.TAGS)
    truth = pd.concat(pd.read_csv(p) for p in tmp_path.glob("*/annotations.csv"))
    assert set(tags["cell_id"]) <= set(truth["cell_id"])


def test_clumps_are_three_or_more_overlapping_cells(tmp_path: Path) -> None:
    truth, tags = simulate(tmp_path, clumps_mean=2.0, clump_ctc_prob=1.0)
    clumped = truth.merge(carrying(tags, artefacts.CLUMP)[["sample", "cell_id"]], on=["sample", "cell_id"])
    assert len(clumped) >= 3
    for _, field in clumped.groupby(["sample", "field"]):
        xy = field[["x", "y"]].to_numpy()
        gaps = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(gaps, np.inf)
        assert len(field) >= 3
        assert (gaps.min(axis=1) < 2 * 14.0).all()  # each member within one CTC diameter of another


def test_dim_nuclei_are_dimmer(tmp_path: Path) -> None:
    truth, tags = simulate(tmp_path, dim_nucleus_prob=0.3)
    dim_rows = carrying(tags, artefacts.DIM_NUCLEUS)
    dim = set(zip(dim_rows["sample"], dim_rows["cell_id"], strict=True))
    levels = {True: [], False: []}
    for (sample, field), cells in truth[truth["cell_type"] != "debris"].groupby(["sample", "field"]):
        dapi = read_field(tmp_path / sample / f"{field}.tif")[0].astype(float)
        for _, cell in cells.iterrows():
            levels[(sample, cell["cell_id"]) in dim].append(dapi[int(cell["y"]), int(cell["x"])])
    assert len(levels[True]) >= 5
    assert np.median(levels[True]) < 0.6 * np.median(levels[False])


def test_pyknotic_and_fragmented_nuclei() -> None:
    a = ArtefactParams(apoptotic_prob=1.0)
    shapes = {}
    for seed in range(12):
        cell = plain_cell()
        artefacts._apoptose(cell, a, np.random.default_rng(seed))
        shapes[cell.tags[-1]] = cell
    pyknotic, fragmented = shapes[artefacts.PYKNOTIC], shapes[artefacts.FRAGMENTED]
    assert pyknotic.shape.radius < 0.75 * 8.0 and pyknotic.dapi_level > 4000.0 * 1.7
    assert 3 <= len(fragmented.fragments) <= 5
    _, nuclei, _ = render(fragmented)
    assert ndimage.label(nuclei)[1] >= 2  # separate pieces, one cell


def test_a_micronucleus_lies_beside_the_nucleus_outside_its_annotation() -> None:
    cell = plain_cell(micronucleus=(11.0, 0.0, 1.8))
    specimen, nuclei, box = render(cell)
    assert ndimage.label(nuclei)[1] == 2
    assert box.x1 <= FIELD / 2 + 9.5  # the annotation is the nucleus alone
    assert specimen[DAPI, FIELD // 2, FIELD // 2 + 11] > 0.5 * 4000.0


def test_a_defocused_cell_is_blurred_but_annotated_where_it_is() -> None:
    sharp, _, sharp_box = render(plain_cell(copies=3))
    soft, _, soft_box = render(plain_cell(copies=3, defocus=2.0))
    assert sharp_box == soft_box
    assert soft[CEP8].max() < 0.7 * sharp[CEP8].max()
    assert soft[DAPI].sum() == pytest.approx(sharp[DAPI].sum(), rel=0.02)  # blur moves light, keeps it


def test_uneven_background_varies_over_the_field(tmp_path: Path) -> None:
    simulate_dataset(params(), tmp_path / "flat", workers=1, show_progress=False)
    simulate_dataset(params(uneven_background=4.0), tmp_path / "hazy", workers=1, show_progress=False)

    def tile_spread(root: Path) -> float:
        dapi = read_field(root / "S0000" / "f000.tif")[0].astype(np.float32)
        tiles = [
            np.median(dapi[y : y + 32, x : x + 32]) for y in range(0, 192, 32) for x in range(0, 192, 32)
        ]
        return float(np.percentile(tiles, 90) - np.percentile(tiles, 10))

    assert tile_spread(tmp_path / "hazy") > 3 * tile_spread(tmp_path / "flat")


def local_maxima(plane: np.ndarray, floor: float) -> int:
    peaks = (plane >= cv2.dilate(plane, np.ones((3, 3), np.uint8))) & (plane > floor)
    return int(ndimage.label(peaks)[1])


def test_a_split_signal_is_two_spots_for_one_copy() -> None:
    cell = plain_cell(copies=1)
    single, _, _ = render(cell)
    # 3 px apart the halves are resolved in the specimen; the preset's 1.5-2.5 px often image as one
    # elongated spot after the optics, which is the point: a counter cannot tell them from one copy
    split, _, _ = render(plain_cell(copies=1), split_signal_prob=1.0, split_distance=[3.0, 3.0])
    assert local_maxima(single[CEP8], 100.0) == 1
    assert local_maxima(split[CEP8], 100.0) == 2


def test_out_of_plane_spots_are_tagged_and_wide() -> None:
    p = params().simulate.model_copy(update={"spot_dim_prob": 1.0})
    cell = plain_cell(copies=1)
    specimen = np.zeros((3, FIELD, FIELD), np.float32)
    draw_cell(specimen, np.zeros((FIELD, FIELD), bool), cell, p, np.random.default_rng(0))
    assert artefacts.OUT_OF_PLANE in cell.tags
    assert specimen[CEP8].max() < p.spot_dim_scale * p.spot_peak * p.spot_brightness[1] + 1


def test_cross_hybridisation_specks_are_faint_spots_inside_the_nucleus() -> None:
    cell = plain_cell(copies=0)
    specimen, nuclei, _ = render(cell, nuclear_speck_mean=6.0)
    assert artefacts.SPECK in cell.tags
    assert local_maxima(specimen[CEP8], 50.0) >= 2
    assert specimen[CEP8][~nuclei].max() < specimen[CEP8][nuclei].max()
    assert specimen[CEP8].max() < 0.5 * 3000.0  # dimmer than the dimmest in-focus signal (spot_brightness)


def test_a_partial_cd45_ring_leaves_part_of_the_membrane_dark() -> None:
    cell = plain_cell(cd45=3000.0, cd45_arc=(0.4, 0.0))
    specimen, _, _ = render(cell)
    rows, cols = np.mgrid[:FIELD, :FIELD]
    angle = np.arctan2(rows - FIELD / 2, cols - FIELD / 2)
    ring = np.abs(np.hypot(rows - FIELD / 2, cols - FIELD / 2) - 8.0 * 1.4) < 1.0
    kept = specimen[CD45][ring & (np.abs(angle) < 0.2)].mean()
    lost = specimen[CD45][ring & (np.abs(angle) > math.pi - 0.4)].mean()
    assert lost < 0.05 * kept


def test_look_alikes_endothelial_and_polyploid_cells(tmp_path: Path) -> None:
    truth, tags = simulate(tmp_path, lookalike_share=0.3, endothelial_share=0.3, polyploid_copies=[4, 4])
    truth = truth.merge(tags, on=["sample", "cell_id"], how="left").fillna({"artefacts": ""})
    lookalikes = truth[truth["artefacts"].str.contains(artefacts.LOOKALIKE)]
    assert len(lookalikes) >= 3
    assert set(lookalikes["cd45_status"]) == {"dim"} and (lookalikes["cep8_copies"] >= 3).all()
    assert (lookalikes["label"] != CTC_LABEL).all()  # CD45-dim is CD45-positive: not a CTC
    endothelial = truth[truth["artefacts"].str.contains(artefacts.ENDOTHELIAL)]
    assert len(endothelial) >= 3
    assert set(endothelial["cell_type"]) == {"diploid_cd45neg"} and set(endothelial["cep8_copies"]) == {2}
    elongation = (endothelial["x1"] - endothelial["x0"]) / (endothelial["y1"] - endothelial["y0"])
    assert (np.maximum(elongation, 1 / elongation) > 1.3).mean() > 0.5
    polyploid = truth[truth["artefacts"].str.contains(artefacts.POLYPLOID)]
    assert set(polyploid["cep8_copies"]) == {4} and set(polyploid["cell_type"]) == {"aneuploid_cd45pos"}


@pytest.mark.parametrize(
    ("knob", "value"),
    [
        ("clump_size", [2, 4]),
        ("dim_nucleus_scale", [0.5, 2.0]),
        ("polyploid_copies", [2, 4]),
        ("cd45_arc", [0.6, 0.3]),
    ],
)
def test_out_of_range_artefact_settings_are_refused_naming_their_key(knob: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"simulate.artefacts.{knob}"):
        parse_params({"simulate": {"artefacts": {knob: value}}})


def test_the_hard_overlay_states_only_known_keys() -> None:
    overlay = yaml.safe_load((ROOT / "configs" / "hard.yaml").read_text())
    hard = parse_params(merge_overlay(read_raw(ROOT / "params.yaml"), overlay))
    assert hard.simulate.artefacts.enabled
    assert hard.segment.background_radius > 0 and hard.segment.spot_merge_px > 0


def test_the_simulate_command_says_when_the_artefacts_are_on(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ctcid.cli import app

    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params(defocus_prob=0.5).model_dump(mode="json")))
    result = CliRunner().invoke(
        app, ["simulate", "--params", str(params_file), "--out", str(tmp_path / "raw"), "--samples", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "artefacts.csv" in result.output
    assert (tmp_path / "raw" / "S0000" / "artefacts.csv").is_file()
