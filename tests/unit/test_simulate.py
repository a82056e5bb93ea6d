"""The imFISH simulator: reproducible bytes, the label criterion, a plausible cohort, honest geometry."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from typer.testing import CliRunner

from ctcid.cli import app
from ctcid.config.loader import parse_params
from ctcid.contracts import ANNOTATION_COLUMNS, CELL_TYPES, SITES_FILE
from ctcid.errors import CtcidError
from ctcid.paths import SIMULATION_FILE
from ctcid.raw.fields import read_field
from ctcid.raw.provenance import Record
from ctcid.raw.simulate import image_id, label_for, simulate_dataset, simulate_sample, site_optics_table
from ctcid.raw.simulate import sites as simulated_sites
from ctcid.raw.sites import read_sites
from factory import small_cohort, written_pixels


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.*"))
    }


def load_annotations(root: Path) -> pd.DataFrame:
    frames = [
        pd.read_csv(p, dtype={"field": str, "cluster_id": str})
        for p in sorted(root.glob("*/annotations.csv"))
    ]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, list]:
    """A moderately sized run with the default cohort and optics, on smaller fields."""
    root = tmp_path_factory.mktemp("cohort")
    params = parse_params({"simulate": {"n_samples": 40, "field_size": 256, "fields_per_sample": [2, 3]}})
    summaries = simulate_dataset(params, root, workers=1, show_progress=False)
    return root, load_annotations(root), summaries


def test_same_seed_gives_identical_bytes_across_runs_workers_and_batches(tmp_path: Path) -> None:
    params = small_cohort()
    simulate_dataset(params, tmp_path / "a", workers=1, show_progress=False)
    simulate_dataset(params, tmp_path / "b", workers=2, show_progress=False)
    # a later batch S0001.. reproduces those samples exactly: seeds come from (seed, sample number)
    simulate_dataset(params, tmp_path / "c", n_samples=2, first_sample=1, workers=1, show_progress=False)

    first, second, batch = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert any(name.endswith(".tif") for name in first)
    assert first == second
    # sites.csv and simulation.json list the samples of each folder; every sample's files are equal
    fields = {name: h for name, h in first.items() if name not in (SITES_FILE, SIMULATION_FILE)}
    assert {name: h for name, h in batch.items() if name not in (SITES_FILE, SIMULATION_FILE)} == {
        name: h for name, h in fields.items() if not name.startswith("S0000")
    }
    assert read_sites(tmp_path / "c") == {"S0001": "site0", "S0002": "site0"}


def test_another_seed_gives_other_pixels(tmp_path: Path) -> None:
    simulate_dataset(small_cohort(n_samples=1), tmp_path / "a", workers=1, show_progress=False)
    other = parse_params({**small_cohort(n_samples=1).model_dump(by_alias=True), "seed": 8})
    simulate_dataset(other, tmp_path / "b", workers=1, show_progress=False)
    assert digest(tmp_path / "a")["S0000/f000.tif"] != digest(tmp_path / "b").get("S0000/f000.tif")


def test_rerun_with_fewer_fields_leaves_no_stale_files(tmp_path: Path) -> None:
    simulate_dataset(
        small_cohort(n_samples=1, fields_per_sample=[3, 3]), tmp_path, workers=1, show_progress=False
    )
    simulate_dataset(
        small_cohort(n_samples=1, fields_per_sample=[1, 1]), tmp_path, workers=1, show_progress=False
    )
    assert sorted(p.name for p in (tmp_path / "S0000").iterdir()) == ["annotations.csv", "f000.tif"]


def test_a_name_prefix_renames_the_samples_and_changes_nothing_else(tmp_path: Path) -> None:
    # an external cohort's names (ctcid.external.cohort.sample_prefix): sample k keeps its stream,
    # its site (k % sites) and, in a later batch, its number
    params = small_cohort(sites=2)
    plain = simulate_dataset(params, tmp_path / "plain", workers=1, show_progress=False)
    named = simulate_dataset(params, tmp_path / "named", workers=1, show_progress=False, prefix="lab_b-")
    later = {"n_samples": 1, "first_sample": 3, "workers": 1, "show_progress": False}
    simulate_dataset(params, tmp_path / "named", **later, prefix="lab_b-")
    assert [s.sample for s in named] == ["lab_b-S0000", "lab_b-S0001", "lab_b-S0002"]
    assert [(s.fields, s.site) for s in named] == [(s.fields, s.site) for s in plain]
    renamed = {f"lab_b-{name}": pixels for name, pixels in written_pixels(tmp_path / "plain").items()}
    assert {k: v for k, v in written_pixels(tmp_path / "named").items() if "S0003" not in k} == renamed
    before, after = load_annotations(tmp_path / "plain"), load_annotations(tmp_path / "named")
    assert after["sample"].unique().tolist() == [f"lab_b-S000{k}" for k in range(4)]
    after = after[after["sample"] != "lab_b-S0003"]
    pd.testing.assert_frame_equal(after.drop(columns="sample"), before.drop(columns="sample"))
    sites = {f"lab_b-S000{k}": f"site{k % 2}" for k in range(4)}  # sample k at site k % sites
    assert read_sites(tmp_path / "named") == sites


@pytest.mark.parametrize("prefix", ["../", "lab b-", "lab/"])
def test_a_prefix_that_is_no_folder_name_is_refused(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(CtcidError, match="sample name prefix"):
        simulate_dataset(small_cohort(n_samples=1), tmp_path, workers=1, show_progress=False, prefix=prefix)
    assert list(tmp_path.iterdir()) == []


# --- CPU independence (docs/reproducibility.md#another-cpu-type) ---------------------------------------

# numpy's and OpenCV's AVX-512 code paths switched off: what an x86-64 CPU without AVX-512 runs. On
# such a CPU the variables change nothing and the two runs below are trivially the same.
WITHOUT_AVX512 = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENCV_CPU_DISABLE": "AVX512-SKX,AVX512F",
}


def simulate_in_new_process(out: Path, params_file: Path, **env: str) -> dict[str, str]:
    ctcid = Path(sys.executable).parent / "ctcid"
    command = [str(ctcid), "simulate", "--params", str(params_file), "--out", str(out), "--samples", "3"]
    subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, **env})
    pixels = {name: hashlib.sha256(values).hexdigest() for name, values in written_pixels(out).items()}
    return {**pixels, **{k: v for k, v in digest(out).items() if k.endswith(".csv")}}


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="AVX-512 is an x86-64 extension")
def test_the_pixels_do_not_depend_on_the_avx512_code_paths(tmp_path: Path) -> None:
    # numpy's float32 arctan2 on AVX-512 (SVML) once changed 131 of the default cohort's 202 fields
    params_file = tmp_path / "params.yaml"
    params_file.write_text("simulate:\n  field_size: 256\n  fields_per_sample: [2, 2]\n  workers: 1\n")
    native = simulate_in_new_process(tmp_path / "native", params_file)
    assert sum(name.endswith(".tif") for name in native) == 6
    assert simulate_in_new_process(tmp_path / "without", params_file, **WITHOUT_AVX512) == native


# --- sites (docs/simulator.md#sites) --------------------------------------------------------------


def test_one_site_draws_nothing_from_a_site_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # sites: 1 (the default) is the simulator as it was: the sample generator alone, byte for byte
    def refuse(*args: object) -> None:
        raise AssertionError("a one-site run must not touch a site generator")

    monkeypatch.setattr(simulated_sites, "site_rng", refuse)
    params = small_cohort(n_samples=2, field_size=128)
    assert params.simulate.sites == 1
    summaries = simulate_dataset(params, tmp_path, workers=1, show_progress=False)
    assert [s.site for s in summaries] == ["site0", "site0"]
    assert (tmp_path / SITES_FILE).read_text() == "sample,site\nS0000,site0\nS0001,site0\n"


def test_site_zero_samples_are_the_one_site_bytes(tmp_path: Path) -> None:
    one = small_cohort(n_samples=4, field_size=128, fields_per_sample=[2, 2])
    three = small_cohort(n_samples=4, field_size=128, fields_per_sample=[2, 2], sites=3)
    simulate_dataset(one, tmp_path / "one", workers=1, show_progress=False)
    summaries = simulate_dataset(three, tmp_path / "three", workers=1, show_progress=False)
    assert [s.site for s in summaries] == ["site0", "site1", "site2", "site0"]
    expected = {"S0000": "site0", "S0001": "site1", "S0002": "site2", "S0003": "site0"}
    assert read_sites(tmp_path / "three") == expected
    first, other = digest(tmp_path / "one"), digest(tmp_path / "three")
    for sample in ("S0000", "S0003"):  # site 0: exactly the one-site files
        assert {k: v for k, v in other.items() if k.startswith(sample)} == {
            k: v for k, v in first.items() if k.startswith(sample)
        }
    # sites 1 and 2: the same patient, imaged with other optics: the first field is the same
    # specimen cell for cell; later fields hold the same cohort (placed elsewhere: the camera noise
    # moves the sample's generator on differently)
    summary = {s.sample: s for s in summaries}
    for sample in ("S0001", "S0002"):
        for field in ("f000", "f001"):
            assert other[f"{sample}/{field}.tif"] != first[f"{sample}/{field}.tif"]
        here, there = (load_annotations(tmp_path / name) for name in ("one", "three"))
        here, there = here[here["sample"] == sample], there[there["sample"] == sample]
        pd.testing.assert_frame_equal(
            here[here["field"] == "f000"].reset_index(drop=True),
            there[there["field"] == "f000"].reset_index(drop=True),
        )
        assert summary[sample].dropped == 0  # small fields, few cells: every one found room
        cohort = ["field", "cell_type", "label", "cep8_copies", "cd45_status"]
        assert sorted(map(tuple, here[cohort].to_numpy().tolist())) == sorted(
            map(tuple, there[cohort].to_numpy().tolist())
        )


def test_site_optics_lie_in_their_ranges_and_repeat() -> None:
    optics = {
        "blur_sigma": [0.5, 0.7],
        "exposure_factor": [1.5, 2.0],
        "gain": [3.0, 4.0],
        "cd45_factor": [0.5, 0.6],
    }
    params = small_cohort(sites=5, site_optics=optics)
    table = site_optics_table(params)
    assert [row["site"] for row in table] == [f"site{j}" for j in range(5)]
    base = params.simulate
    assert table[0] == {"site": "site0", **{key: getattr(base, key) for key in simulated_sites.SITE_KEYS}}
    ranges = base.site_optics
    for row in table[1:]:
        assert 0.5 <= row["blur_sigma"] <= 0.7 and 3.0 <= row["gain"] <= 4.0
        for key in ("read_noise", "misregistration_px", "bleed_through"):
            low, high = getattr(ranges, key)
            assert low <= row[key] <= high
        for key, factor in (
            ("exposure_range", ranges.exposure_factor),
            ("background_counts", ranges.background_factor),
            ("spot_brightness", ranges.spot_brightness_factor),
            ("cd45_counts", ranges.cd45_factor),
        ):
            ratios = np.divide(row[key], getattr(base, key))
            assert ratios[0] == pytest.approx(ratios[1])  # one factor scales both ends
            assert factor[0] <= ratios[0] <= factor[1]
    assert len({row["blur_sigma"] for row in table[1:]}) == 4  # every site draws its own
    # reproducible, and a site keeps its optics when more sites are added
    assert site_optics_table(params) == table
    assert site_optics_table(small_cohort(sites=3, site_optics=optics)) == table[:3]
    other_seed = parse_params({**params.model_dump(by_alias=True), "seed": 8})
    assert site_optics_table(other_seed)[1] != table[1]


def test_a_later_batch_adds_its_samples_to_sites_csv(tmp_path: Path) -> None:
    params = small_cohort(n_samples=1, field_size=128, fields_per_sample=[1, 1], sites=2)
    simulate_dataset(params, tmp_path, n_samples=2, workers=1, show_progress=False)
    simulate_dataset(params, tmp_path, n_samples=1, first_sample=3, workers=1, show_progress=False)
    assert read_sites(tmp_path) == {"S0000": "site0", "S0001": "site1", "S0003": "site1"}


def test_a_site_gain_of_zero_is_refused() -> None:
    params = small_cohort(sites=2, site_optics={"gain": [0.0, 1.0]})
    with pytest.raises(CtcidError, match=r"simulate\.site_optics\.gain"):
        site_optics_table(params)


@pytest.mark.parametrize(
    ("cd45", "copies", "cell_type", "expected"),
    [
        ("negative", 3, "ctc", "CTC"),
        ("negative", 8, "ctc", "CTC"),
        ("negative", 2, "diploid_cd45neg", "non-CTC"),
        ("positive", 3, "aneuploid_cd45pos", "non-CTC"),
        ("dim", 3, "aneuploid_cd45pos", "non-CTC"),
        ("negative", 0, "debris", "non-CTC"),
        ("negative", 4, "debris", "non-CTC"),
    ],
)
def test_label_criterion(cd45: str, copies: int, cell_type: str, expected: str) -> None:
    assert label_for(cd45, copies, cell_type) == expected


def test_annotations_follow_the_contract(cohort: tuple[Path, pd.DataFrame, list]) -> None:
    root, table, _ = cohort
    assert list(pd.read_csv(root / "S0000" / "annotations.csv").columns) == list(ANNOTATION_COLUMNS)
    assert set(table["cell_type"]) == set(CELL_TYPES)
    assert set(table["cd45_status"]) == {"positive", "dim", "negative"}
    assert not table.duplicated(["sample", "cell_id"]).any()
    assert ((table["x0"] < table["x1"]) & (table["y0"] < table["y1"])).all()
    assert (
        table["x"].between(table["x0"], table["x1"]).all()
        and table["y"].between(table["y0"], table["y1"]).all()
    )
    for sample, fields in table.groupby("sample"):
        on_disk = {p.stem for p in (root / sample).glob("*.tif")}
        assert set(fields["field"]) <= on_disk


def test_every_label_agrees_with_the_true_state(cohort: tuple[Path, pd.DataFrame, list]) -> None:
    _, table, _ = cohort
    rule = (
        (table["cd45_status"] == "negative") & (table["cep8_copies"] >= 3) & (table["cell_type"] != "debris")
    )
    assert (table["label"] == np.where(rule, "CTC", "non-CTC")).all()
    assert (table.loc[table["cell_type"] == "aneuploid_cd45pos", "cep8_copies"] >= 3).all()
    assert (table.loc[table["cell_type"] == "aneuploid_cd45pos", "label"] == "non-CTC").all()
    debris = table[table["cell_type"] == "debris"]
    assert (debris["label"] == "non-CTC").all() and (debris["cep8_copies"] == 0).all()
    assert (table.loc[table["cell_type"] == "leukocyte", "cep8_copies"] == 2).all()
    ctc = table[table["label"] == "CTC"]
    assert ctc["cep8_copies"].between(3, 8).all()
    assert (ctc["cep8_copies"] <= 4).mean() > 0.5  # skewed to 3-4 copies


def test_clusters_are_touching_ctcs(cohort: tuple[Path, pd.DataFrame, list]) -> None:
    _, table, _ = cohort
    clustered = table[table["cluster_id"].notna()]
    assert len(clustered) > 0
    assert (clustered["label"] == "CTC").all()
    for _, members in clustered.groupby(["sample", "cluster_id"]):
        assert 2 <= len(members) <= 4 and members["field"].nunique() == 1
        centres = members[["x", "y"]].to_numpy()
        gaps = np.hypot(*(centres[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(gaps, np.inf)
        assert (gaps.min(axis=1) < 2 * 14.0 * 1.05 + 1).all()  # each member touches another


def test_ctc_share_and_burden_look_like_a_cohort(cohort: tuple[Path, pd.DataFrame, list]) -> None:
    _, table, summaries = cohort
    share = (table["label"] == "CTC").mean()
    assert 0.02 <= share <= 0.10
    per_sample = [s.ctc for s in summaries]
    assert sum(n == 0 for n in per_sample) >= 10  # heavy tail: many patients without CTCs
    assert max(per_sample) >= 4 * np.mean(per_sample)  # ... and a few with many
    assert sum(s.dropped for s in summaries) < 0.02 * len(table)  # rejection sampling finds room
    assert sum(s.cells for s in summaries) == len(table)


def test_annotated_centres_fall_on_bright_dapi(cohort: tuple[Path, pd.DataFrame, list]) -> None:
    root, table, _ = cohort
    for (sample, field), cells in table.groupby(["sample", "field"]):
        dapi = read_field(root / sample / f"{field}.tif")[0].astype(np.float64)
        background = np.median(dapi)
        rows, cols = cells["y"].round().astype(int).to_numpy(), cells["x"].round().astype(int).to_numpy()
        assert (dapi[rows, cols] > 3 * background).all(), f"{sample}/{field}"


def test_channel_order_follows_params(tmp_path: Path) -> None:
    params = parse_params(
        {**small_cohort(n_samples=1).model_dump(by_alias=True), "channels": ["CD45", "DAPI", "CEP8"]}
    )
    simulate_dataset(params, tmp_path, workers=1, show_progress=False)
    path = tmp_path / "S0000" / "f000.tif"
    with tifffile.TiffFile(path) as tif:
        assert 'Name="CD45"' in tif.ome_metadata
    image = read_field(path)
    cells = load_annotations(tmp_path)
    cells = cells[cells["field"] == "f000"]
    centres = image[:, cells["y"].round().astype(int), cells["x"].round().astype(int)]
    assert np.median(centres[1]) > 3 * np.median(image[1])  # DAPI is now the second channel
    assert image.dtype == np.uint16 and image.shape == (3, 160, 160)


def test_crowded_field_reports_the_cells_left_out(tmp_path: Path) -> None:
    params = small_cohort(n_samples=1, field_size=64, fields_per_sample=[1, 1], background_cells_mean=150.0)
    [summary] = simulate_dataset(params, tmp_path, workers=1, show_progress=False)
    assert summary.dropped > 0
    assert summary.cells == len(load_annotations(tmp_path))


runner = CliRunner()


def test_cli_simulate_help_names_the_options() -> None:
    result = runner.invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0
    for option in ("--out", "--samples", "--first-sample", "--workers", "--preview", "--params"):
        assert option in result.output


def test_cli_simulate_bad_params_exit_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("simulate:\n  read_noise: -5\n")
    result = runner.invoke(app, ["simulate", "--params", str(bad), "--out", str(tmp_path / "raw")])
    assert result.exit_code == 2
    assert "simulate.read_noise" in result.output and "-5" in result.output
    assert not (tmp_path / "raw").exists()


def test_cli_simulate_writes_data_and_preview(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        "seed: 3\nsimulate: {n_samples: 2, field_size: 128, fields_per_sample: [1, 1],"
        " background_cells_mean: 10, ctc_burden_mean: 6}\n"
    )
    preview = tmp_path / "preview.png"
    result = runner.invoke(
        app,
        [
            "simulate",
            "--params",
            str(params),
            "--out",
            str(tmp_path / "raw"),
            "--workers",
            "1",
            "--preview",
            str(preview),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "simulated 2 samples" in result.output
    written = sorted(p.name for p in (tmp_path / "raw").iterdir())
    assert written == ["S0000", "S0001", SIMULATION_FILE, SITES_FILE]
    assert preview.stat().st_size > 1000


# --- re-imaging a specimen (external.cohorts.<name>.repeatability) -------------------------------------

REIMAGED = {"n_samples": 2, "fields_per_sample": [2, 2], "artefacts": {"clumps_mean": 1.0}}


def test_image_zero_is_the_original_byte_for_byte(tmp_path: Path) -> None:
    params = small_cohort(**REIMAGED)
    simulate_dataset(params, tmp_path / "plain", workers=1, show_progress=False)
    simulate_dataset(params, tmp_path / "zero", workers=1, show_progress=False, image=0)
    simulate_sample(1, params, tmp_path / "one", image=0)
    assert digest(tmp_path / "zero") == digest(tmp_path / "plain")
    single = {name: h for name, h in digest(tmp_path / "plain").items() if name.startswith("S0001/")}
    assert digest(tmp_path / "one") == single and len(single) == 4  # two fields, annotations, artefacts


def test_a_reimage_is_the_same_specimen_under_new_camera_noise(tmp_path: Path) -> None:
    params = small_cohort(**REIMAGED)
    simulate_dataset(params, tmp_path, workers=1, show_progress=False, prefix="lab-")
    again = simulate_dataset(params, tmp_path, workers=1, show_progress=False, prefix="lab-", image=1)
    assert [s.sample for s in again] == ["lab-S0000-r1", "lab-S0001-r1"]
    # the same cells, placed alike, in every field (the later ones too): only the name differs
    for k in range(2):
        original, repeat = tmp_path / f"lab-S000{k}", tmp_path / f"lab-S000{k}-r1"
        before = pd.read_csv(original / "annotations.csv", dtype={"field": str, "cluster_id": str})
        after = pd.read_csv(repeat / "annotations.csv", dtype={"field": str, "cluster_id": str})
        assert after["sample"].unique().tolist() == [repeat.name]
        pd.testing.assert_frame_equal(after.drop(columns="sample"), before.drop(columns="sample"))
        assert len(after) > 0
        assert (repeat / "artefacts.csv").read_bytes() == (original / "artefacts.csv").read_bytes()
        fields = sorted(p.name for p in original.glob("*.tif"))
        assert fields == sorted(p.name for p in repeat.glob("*.tif")) and len(fields) == 2
        for name in fields:
            first = read_field(original / name).astype(np.float64)
            second = read_field(repeat / name).astype(np.float64)
            assert not np.array_equal(first, second)  # the camera drew new noise
            difference = second - first
            # noise only: no change of level, a small spread beside the field's own structure
            assert abs(difference.mean()) < 2.0
            assert np.abs(difference).mean() < 0.2 * first.std()
            assert np.corrcoef(first.ravel(), second.ravel())[0, 1] > 0.99
            for channel in range(3):
                assert np.corrcoef(first[channel].ravel(), second[channel].ravel())[0, 1] > 0.9
    # the records list the re-images beside the originals, and read back
    assert read_sites(tmp_path) == {f"lab-S000{k}{r}": "site0" for k in range(2) for r in ("", "-r1")}
    record = Record.read(tmp_path)
    assert set(record.samples) == {"lab-S0000", "lab-S0000-r1", "lab-S0001", "lab-S0001-r1"}


def test_reimages_repeat_for_a_seed_and_differ_between_images(tmp_path: Path) -> None:
    params = small_cohort(n_samples=1, fields_per_sample=[1, 1])
    for folder, image in (("a", 1), ("b", 1), ("c", 2)):
        simulate_dataset(params, tmp_path / folder, workers=1, show_progress=False, image=image)
    first, second = written_pixels(tmp_path / "a"), written_pixels(tmp_path / "b")
    assert list(first) == ["S0000-r1/f000.tif"] and first == second
    third = written_pixels(tmp_path / "c")
    assert list(third) == ["S0000-r2/f000.tif"] and third["S0000-r2/f000.tif"] != first["S0000-r1/f000.tif"]
    assert image_id(3, "holdout-", 2) == "holdout-S0003-r2" and image_id(3, "holdout-") == "holdout-S0003"
    with pytest.raises(CtcidError, match="image -1"):
        simulate_dataset(params, tmp_path / "d", workers=1, show_progress=False, image=-1)
