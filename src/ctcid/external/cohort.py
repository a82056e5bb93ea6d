"""One external cohort on disk: its raw fields (simulated here, or a lab's folder) and their segmentation.

The ``external_cohort`` stage (one per ``external.cohorts`` entry) writes, under
``data/external/<name>/``: ``raw/`` (simulated cohorts only), ``segment/`` (``crops.npy`` and
``manifest.parquet``, exactly as the training data's segment stage writes them), ``reports/``
(segmentation against the truth, quarantined fields) and ``cohort.json``. The segmentation uses
today's ``segment`` settings, the ones the trained models' crops were cut with.

A simulated cohort with ``repeatability`` also gets ``repeats/``, laid out as the cohort itself
(``raw/``, ``segment/``, ``reports/``): images 1 .. images - 1 of its first ``specimens`` samples,
the same specimens re-imaged under new camera noise (``<name>-S0003-r2``); their image 0 is the
cohort's own sample (:class:`RepeatImages`).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctcid.config.external import ExternalParams, Repeatability
from ctcid.config.segment import SegmentParams
from ctcid.config.simulate import SimulateConfig, SimulateParams
from ctcid.config.stage import StageConfig, view
from ctcid.contracts import open_crops, read_manifest
from ctcid.errors import CtcidError
from ctcid.paths import (
    COHORT_RAW,
    COHORT_REPEATS,
    COHORT_REPORTS,
    COHORT_SEGMENT,
    CROPS_NAME,
    MANIFEST_NAME,
    QUARANTINE_NAME,
    SEGMENTATION_FILE,
    cohort_inputs,
)
from ctcid.quarantine import read_quarantine
from ctcid.raw.simulate import simulate_dataset
from ctcid.segmentation.stage import SegmentSummary, run_segment

COHORT_FILE = "cohort.json"


@dataclass(frozen=True)
class CohortInfo:
    """What ``cohort.json`` records of one prepared cohort."""

    name: str
    description: str
    source: str  # "simulated" or "folder"
    raw_dir: str
    seed: int | None
    fields: int
    fields_quarantined: int
    cells: int
    # repeatability: its first repeat_specimens samples imaged repeat_images times in all (0: none)
    repeat_specimens: int = 0
    repeat_images: int = 0

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path


# a re-image's sample name: the specimen's own, then -r<image> (ctcid.raw.simulate.image_id)
_REIMAGE = re.compile(r"(?P<specimen>.*S\d{4,})-r(?P<image>[1-9]\d*)")


@dataclass(frozen=True)
class RepeatImages:
    """A cohort's re-imaged specimens (``repeats/``), segmented as the cohort is.

    Its samples are images 1 .. ``images`` - 1 of the cohort's first ``specimens`` samples
    (``<name>-S0003-r2``); image 0 of each is the cohort's own sample (:meth:`specimen` names it).
    """

    manifest: pd.DataFrame
    crops: np.ndarray
    raw_dir: Path
    quarantined: frozenset[str]  # paths of fields segment could not use

    @staticmethod
    def specimen(sample: str) -> str:
        """The specimen a sample is an image of: ``holdout-S0003-r2`` -> ``holdout-S0003``; an
        unsuffixed name (an original) is its own."""
        match = _REIMAGE.fullmatch(sample)
        return match["specimen"] if match else sample

    @staticmethod
    def image(sample: str) -> int:
        """Which image of its specimen a sample is: 2 for ``holdout-S0003-r2``, 0 for the original."""
        match = _REIMAGE.fullmatch(sample)
        return int(match["image"]) if match else 0


@dataclass(frozen=True)
class Cohort:
    """A prepared cohort, read back for scoring."""

    info: CohortInfo
    directory: Path
    manifest: pd.DataFrame
    crops: np.ndarray
    quarantined: frozenset[str]  # paths of fields segment could not use

    @property
    def raw_dir(self) -> Path:
        return Path(self.info.raw_dir)

    @property
    def segmentation(self) -> dict[str, float]:
        path = self.directory / COHORT_REPORTS / SEGMENTATION_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    @functools.cached_property
    def repeats(self) -> RepeatImages | None:
        """Its re-imaged specimens, read on first use; None when it has none (no ``repeatability``)."""
        if not self.info.repeat_images:
            return None
        folder = self.directory / COHORT_REPEATS
        segment = folder / COHORT_SEGMENT
        if not (segment / MANIFEST_NAME).is_file():
            raise CtcidError(
                f"{self.directory}: cohort.json lists re-imaged specimens but {segment} holds none; "
                f"run 'ctcid external-cohort --cohort {self.info.name}' (dvc repro) again"
            )
        quarantined = frozenset(
            e.path for e in read_quarantine(folder / COHORT_REPORTS / QUARANTINE_NAME)
        )
        return RepeatImages(
            read_manifest(segment / MANIFEST_NAME),
            open_crops(segment / CROPS_NAME),
            folder / COHORT_RAW,
            quarantined,
        )


class CohortConfig(StageConfig):
    """What the external_cohort stage reads: its cohort, and the simulator and segment settings."""

    channels: list[str]
    simulate: SimulateParams
    segment: SegmentParams
    external: view(ExternalParams, "cohorts")  # type: ignore[valid-type]

    def simulation(self, name: str) -> SimulateConfig:
        """The simulator's config for simulated cohort ``name``: its own seed and overrides."""
        cohort = self.external.cohorts[name]
        simulate = cohort.simulation(self.simulate)
        return SimulateConfig(seed=cohort.seed, channels=self.channels, simulate=simulate)


def sample_prefix(name: str) -> str:
    """What a simulated cohort's sample names start with: ``same_site-S0000``, never a training name.

    The training cohort's simulated samples are ``S0000, S0001, ...``; an external cohort draws its
    sample ``k`` from its own seed but would get the same name, so that a name no longer told two
    patients apart (the name-based leakage check, docs/tuning.md). The cohort's name (letters,
    digits, '_' and '-') and a '-' make its names distinct from the training cohort's and from
    every other cohort's.
    """
    return f"{name}-"


def prepare_cohort(params: CohortConfig, name: str, out: Path, show_progress: bool = True) -> CohortInfo:
    """Simulate (if the cohort is simulated) and segment one cohort into ``out``."""
    params = CohortConfig.project(params)  # only its keys, whatever the caller holds
    if name not in params.external.cohorts:
        known = ", ".join(sorted(params.external.cohorts)) or "none"
        raise CtcidError(f"no external cohort {name!r} in params (external.cohorts: {known})")
    cohort = params.external.cohorts[name]
    out = Path(out)
    shutil.rmtree(out / COHORT_REPEATS, ignore_errors=True)  # none stale, whatever repeatability says
    if cohort.simulated:
        raw = out / COHORT_RAW
        shutil.rmtree(raw, ignore_errors=True)  # a smaller cohort must leave no stale samples
        simulate_dataset(
            params.simulation(name), raw, show_progress=show_progress, prefix=sample_prefix(name)
        )
    else:
        raw = Path(str(cohort.folder))
        if not raw.is_dir():
            raise CtcidError(
                f"external cohort {name!r}: folder {raw} not found; put the lab's fields there as "
                "<sample>/<field>.tif ('ctcid ingest' converts other layouts)"
            )
    summary = run_segment(
        raw, out / COHORT_SEGMENT, out / COHORT_REPORTS, params.segment, params.channels, show_progress
    )
    repeats = cohort.repeatability  # simulated cohorts only (config)
    if repeats is not None:
        _prepare_repeats(params, name, repeats, out / COHORT_REPEATS, show_progress)
    info = CohortInfo(
        name=name,
        description=cohort.description,
        source="simulated" if cohort.simulated else "folder",
        raw_dir=str(raw),
        seed=cohort.seed,
        fields=summary.n_fields,
        fields_quarantined=len(summary.quarantined),
        cells=summary.n_cells,
        repeat_specimens=repeats.specimens if repeats is not None else 0,
        repeat_images=repeats.images if repeats is not None else 0,
    )
    info.write(out / COHORT_FILE)
    return info


def _prepare_repeats(
    params: CohortConfig, name: str, repeats: Repeatability, out: Path, show_progress: bool
) -> SegmentSummary:
    """Re-image the cohort's first ``repeats.specimens`` samples into ``out/raw`` and segment them."""
    raw = out / COHORT_RAW
    for image in range(1, repeats.images):
        simulate_dataset(
            params.simulation(name),
            raw,
            n_samples=repeats.specimens,
            show_progress=show_progress,
            prefix=sample_prefix(name),
            image=image,
        )
    return run_segment(
        raw, out / COHORT_SEGMENT, out / COHORT_REPORTS, params.segment, params.channels, show_progress
    )


def load_cohort(directory: Path) -> Cohort:
    """A cohort ``prepare_cohort`` wrote, or a message saying how to make it."""
    directory = Path(directory)
    try:
        info = CohortInfo(**json.loads((directory / COHORT_FILE).read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as error:
        raise CtcidError(
            f"{directory}: no prepared external cohort ({error}); run "
            f"'ctcid external-cohort --cohort {directory.name}' (dvc repro)"
        ) from None
    quarantined = frozenset(e.path for e in read_quarantine(directory / COHORT_REPORTS / QUARANTINE_NAME))
    files = cohort_inputs(directory.parent, directory.name)
    return Cohort(info, directory, read_manifest(files.manifest), open_crops(files.crops), quarantined)
