"""A physically motivated simulator of imFISH fields with per-cell ground truth (docs/simulator.md).

It writes the raw-data contract (docs/architecture.md): ``<out>/<sample>/<field>.tif`` and
``<out>/<sample>/annotations.csv``, sample ``k`` named ``S<k:04d>`` (an external cohort's with
its own prefix, ``same_site-S0000``). Sample ``k`` draws all its randomness from
``SeedSequence(seed, spawn_key=(k,))``, so its files are byte-identical whatever batch it is made in
and however many workers share the work. With ``simulate.sites > 1`` sample ``k`` is imaged at site
``k % sites`` (:mod:`ctcid.raw.simulate.sites`); ``<out>/sites.csv`` records every sample's site.
A re-image of sample ``k``'s specimen (``image`` r >= 1, named ``S<k:04d>-r<r>``) draws its camera
noise from ``SeedSequence(seed, spawn_key=(k, r))`` and everything else as the original.
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctcid.config.simulate import SimulateConfig
from ctcid.contracts import ANNOTATION_COLUMNS, ANNOTATIONS_FILE, CTC_LABEL, DEFAULT_SITE, FIELD_SUFFIXES
from ctcid.errors import CtcidError
from ctcid.parallel import opencv_threads, parallel_map
from ctcid.raw.fields import write_field
from ctcid.raw.provenance import Record, sample_id
from ctcid.raw.simulate import artefacts
from ctcid.raw.simulate.cells import CD45, CEP8, DAPI, draw_cell, draw_speckles
from ctcid.raw.simulate.cohort import draw_cohort, label_for, place_field
from ctcid.raw.simulate.optics import Microscope
from ctcid.raw.simulate.sites import (
    site_name,
    site_number,
    site_optics_table,
    site_params,
    specimen_params,
)
from ctcid.raw.sites import read_sites, write_sites

__all__ = [
    "FieldSummary",
    "SampleSummary",
    "image_id",
    "image_rng",
    "label_for",
    "sample_id",
    "sample_rng",
    "simulate_dataset",
    "simulate_sample",
    "site_optics_table",
]

_STAIN_INDEX = {"DAPI": DAPI, "CEP8": CEP8, "CD45": CD45}


@dataclass(frozen=True)
class FieldSummary:
    field: str
    cells: int
    ctc: int


@dataclass(frozen=True)
class SampleSummary:
    sample: str
    fields: tuple[FieldSummary, ...]
    dropped: int  # cells that found no room in their field (only in crowded settings)
    site: str = DEFAULT_SITE  # where it was imaged (simulate.sites)

    @property
    def cells(self) -> int:
        return sum(f.cells for f in self.fields)

    @property
    def ctc(self) -> int:
        return sum(f.ctc for f in self.fields)


def sample_rng(seed: int, number: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(number,)))


def _clear_sample_dir(directory: Path) -> None:
    """Drop a previous run's files of this sample, so a smaller re-run leaves no stale fields."""
    if directory.is_dir():
        for path in directory.iterdir():
            truth = path.name in (ANNOTATIONS_FILE, artefacts.ARTEFACTS_FILE)
            if path.suffix.lower() in FIELD_SUFFIXES or truth:
                path.unlink()


def image_rng(seed: int, number: int, image: int) -> np.random.Generator:
    """The camera's generator of image ``image`` >= 1 of sample ``number`` (a re-image of its specimen)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(number, image)))


def image_id(number: int, prefix: str = "", image: int = 0) -> str:
    """Sample ``number``'s name in image ``image``: ``S0003`` for the original, ``S0003-r2`` re-imaged."""
    return sample_id(number, prefix) + (f"-r{image}" if image else "")


def simulate_sample(
    number: int, params: SimulateConfig, out: Path, prefix: str = "", image: int = 0
) -> SampleSummary:
    """Simulate and write every field of sample ``number``, with its annotations, as ``<prefix>S<number>``.

    At a site other than 0 the specimen is drawn with site 0's biology (its stains rescaled) and
    imaged with the site's optics (:mod:`ctcid.raw.simulate.sites`); all randomness still comes
    from the sample's generator.

    ``image`` >= 1 images the same specimen again, as ``<prefix>S<number>-r<image>``: the same cells,
    placement, speckles, haze and microscope (exposure, background, illumination, blur, channel
    shifts), with the camera's noise drawn from a generator of its own (:func:`image_rng`); the
    annotations are the original's but for the sample's name. Image 0 is the original.
    """
    if image < 0:
        raise CtcidError(f"image {image}: use 0 (the original) or a re-image number >= 1")
    site = site_number(number, params.simulate.sites)
    imaging = site_params(params.simulate, params.seed, site)
    p = specimen_params(params.simulate, imaging)
    rng = sample_rng(params.seed, number)
    camera = image_rng(params.seed, number, image) if image else None
    sample = image_id(number, prefix, image)
    cohort = draw_cohort(p, rng)
    microscope = Microscope.draw(imaging, rng)
    directory = out / sample
    _clear_sample_dir(directory)
    order = [_STAIN_INDEX[name] for name in params.channels]

    rows: list[list[object]] = []
    tagged: list[tuple[str, str]] = []
    summaries: list[FieldSummary] = []
    dropped = 0
    clusters: dict[int, str] = {}
    for field_number, groups in enumerate(cohort.groups_per_field):
        field = f"f{field_number:03d}"
        cells, lost = place_field(groups, p.field_size, rng, p.artefacts.clump_overlap)
        dropped += lost
        specimen = np.zeros((3, p.field_size, p.field_size), dtype=np.float32)
        nuclei = np.zeros((p.field_size, p.field_size), dtype=bool)
        haze = artefacts.field_haze(cells, p, rng)
        for cell_number, cell in enumerate(cells):
            box = draw_cell(specimen, nuclei, cell, p, rng)
            if cell.tags:
                tagged.append((f"{field}-c{cell_number:03d}", ";".join(dict.fromkeys(cell.tags))))
            cluster_id = ""
            if cell.cluster >= 0:
                cluster_id = clusters.setdefault(cell.cluster, f"k{len(clusters):03d}")
            rows.append(
                [
                    sample,
                    field,
                    f"{field}-c{cell_number:03d}",
                    f"{box.x:.2f}",
                    f"{box.y:.2f}",
                    box.x0,
                    box.y0,
                    box.x1,
                    box.y1,
                    cell.cell_type,
                    cell.label,
                    cell.cep8_copies,
                    cell.cd45_status,
                    cluster_id,
                ]
            )
        if haze is not None:
            specimen += haze
        draw_speckles(specimen, nuclei, p, rng)
        light = microscope.expose(specimen, imaging)
        # the sample's generator moves on exactly as for the original, so later fields hold its cells
        pixels = microscope.camera(light, imaging, rng)
        if camera is not None:
            pixels = microscope.camera(light, imaging, camera)
        write_field(directory / f"{field}.tif", pixels[order], params.channels)
        summaries.append(FieldSummary(field, len(cells), sum(c.label == CTC_LABEL for c in cells)))

    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ANNOTATIONS_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(ANNOTATION_COLUMNS)
        writer.writerows(rows)
    if p.artefacts.enabled:
        _write_artefacts(directory / artefacts.ARTEFACTS_FILE, tagged)
    return SampleSummary(sample, tuple(summaries), dropped, site_name(site))


def _write_artefacts(path: Path, tagged: list[tuple[str, str]]) -> None:
    """``artefacts.csv``: the tags of every cell that carries one (docs/simulator.md#hard-cohort)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(artefacts.ARTEFACT_COLUMNS)
        writer.writerows(tagged)


def simulate_dataset(
    params: SimulateConfig,
    out: Path,
    n_samples: int | None = None,
    first_sample: int = 0,
    workers: int | None = None,
    show_progress: bool = True,
    prefix: str = "",
    image: int = 0,
) -> list[SampleSummary]:
    """Simulate samples ``first_sample .. first_sample + n_samples - 1`` into ``out``, in parallel.

    Sample ``k`` is named ``<prefix>S<k:04d>``: the training cohort has no prefix, an external
    cohort its own (:func:`ctcid.external.cohort.sample_prefix`), so that no two cohorts share a
    patient's name. The prefix changes the names (folders, the annotations' ``sample``, sites.csv)
    and nothing else: sample ``k``'s pixels and cells are the same with any prefix.
    ``image`` >= 1 re-images each sample's specimen under new camera noise, as
    ``<prefix>S<k:04d>-r<image>`` (:func:`simulate_sample`); 0, the default, is the original.
    Also writes ``<out>/sites.csv``: the site of every sample made here, plus the rows an earlier
    file lists for other samples (a later batch appends to it), and records the settings they were
    drawn with in ``<out>/simulation.json`` (:mod:`ctcid.raw.provenance`).
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]*", prefix):
        raise CtcidError(
            f"sample name prefix {prefix!r}: use letters, digits, '_' and '-' (it names folders)"
        )
    if image < 0:
        raise CtcidError(f"image {image}: use 0 (the original) or a re-image number >= 1")
    params = SimulateConfig.project(params)  # only its keys, whatever the caller holds
    out = Path(out)
    count = params.simulate.n_samples if n_samples is None else n_samples
    numbers = list(range(first_sample, first_sample + count))
    known = read_sites(out)  # read first: a broken file fails before the work, not after
    record = Record.read(out)
    task = functools.partial(simulate_sample, params=params, out=out, prefix=prefix, image=image)
    n_workers = params.simulate.workers if workers is None else workers
    # parallelism is across samples; OpenCV's own threads would only contend
    with opencv_threads(1):
        summaries = parallel_map(task, numbers, "simulating samples", n_workers, show_progress)
    write_sites(out, {**known, **{s.sample: s.site for s in summaries}})
    record.add(params, [s.sample for s in summaries], first_sample)
    record.write(out)
    return summaries


def dataset_summary(summaries: list[SampleSummary], out: Path, seconds: float, artefacts: bool) -> str:
    """What ``ctcid simulate`` prints: samples, sites, fields, cells and CTCs, then any warning."""
    cells, ctc = sum(s.cells for s in summaries), sum(s.ctc for s in summaries)
    fields = sum(len(s.fields) for s in summaries)
    sites = len({s.site for s in summaries})
    lines = [
        f"simulated {len(summaries)} samples at {sites} site{'s' * (sites != 1)}, {fields} fields, "
        f"{cells} cells, {ctc} CTC ({100 * ctc / max(cells, 1):.1f} %) into {out} in {seconds:.1f} s"
    ]
    dropped = sum(s.dropped for s in summaries)
    if dropped:
        lines.append(f"[yellow]warning:[/yellow] {dropped} cells found no room in a field")
    if artefacts:
        lines.append(
            "hard-cohort artefacts on (simulate.artefacts): each sample's artefacts.csv tags its cells"
        )
    return "\n".join(lines)


def busiest_field(summaries: list[SampleSummary]) -> tuple[str, FieldSummary]:
    """The sample and field with the most CTCs (the one ``ctcid simulate --preview`` draws)."""
    return max(((s.sample, f) for s in summaries for f in s.fields), key=lambda sf: sf[1].ctc)
