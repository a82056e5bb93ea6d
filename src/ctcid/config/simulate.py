"""The ``simulate`` section: the imFISH field simulator (docs/simulator.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from ctcid.config.base import (
    OPERATIONAL,
    IntRange,
    NonNegative,
    PositiveInt,
    Probability,
    Range,
    Section,
    ordered,
    within,
)
from ctcid.config.stage import StageConfig

# Physically sensible limits of each [low, high] knob of the simulator.
_SIMULATE_RANGE_BOUNDS: dict[str, tuple[float, float]] = {
    "leukocyte_radius": (2.0, 100.0),
    "ctc_radius": (2.0, 100.0),
    "debris_radius": (0.5, 20.0),
    "cytoplasm_ratio": (1.0, 3.0),
    "spot_sigma": (0.3, 5.0),
    "spot_brightness": (0.01, 10.0),
    "speckle_brightness": (0.01, 10.0),
    "dapi_counts": (1.0, 60000.0),
    "cd45_counts": (1.0, 60000.0),
    "cd45_dim_fraction": (0.0, 1.0),
    "background_counts": (0.0, 60000.0),
    "exposure_range": (0.01, 10.0),
}


class SiteOptics(Section):
    """Ranges from which each simulated site other than site 0 draws its microscope, camera and stain.

    Factors multiply the corresponding ``simulate.*`` setting of site 0; the others replace it.
    """

    blur_sigma: Range = (0.6, 1.6)  # px, replaces simulate.blur_sigma
    exposure_factor: Range = (0.6, 1.8)  # x simulate.exposure_range
    background_factor: Range = (0.8, 2.0)  # x simulate.background_counts
    read_noise: Range = (8.0, 35.0)  # counts, replaces simulate.read_noise
    gain: Range = (1.5, 5.0)  # counts per photo-electron, replaces simulate.gain
    spot_brightness_factor: Range = (0.6, 1.1)  # x simulate.spot_brightness (the CEP8 probe)
    cd45_factor: Range = (0.5, 1.1)  # x simulate.cd45_counts (the CD45 stain)
    misregistration_px: Range = (0.5, 2.5)  # px, replaces simulate.misregistration_px
    bleed_through: Range = (0.0, 0.08)  # replaces simulate.bleed_through

    @field_validator("*")
    @classmethod
    def _site_ranges(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] < 0:
            raise ValueError(f"range must not be negative, got [{v[0]:g}, {v[1]:g}]")
        return ordered(v)


class ArtefactParams(Section):
    """The hard cohort's failure modes of real imFISH slides (docs/simulator.md#hard-cohort), all off.

    With every knob at its default the simulator draws no extra random number, so the default
    cohort stays byte-identical; ``configs/hard.yaml`` turns them on.
    """

    # clumps of >= 3 touching or overlapping cells, drawn on top of the sample's cells
    clumps_mean: Annotated[float, Field(ge=0.0, le=50.0)] = 0.0  # per sample, Poisson
    clump_size: IntRange = (3, 6)
    clump_ctc_prob: Probability = 0.5  # a clump forms around one of the sample's single CTCs
    clump_overlap: Range = (0.8, 1.0)  # centre distance of clump neighbours / their nuclear radius sum
    # nuclei
    dim_nucleus_prob: Probability = 0.0  # weakly stained or hypochromatic nuclei
    dim_nucleus_scale: Range = (0.25, 0.5)  # their DAPI level, x the normal one
    apoptotic_prob: Probability = 0.0  # leukocytes: half pyknotic (small, bright), half fragmented
    fragments: IntRange = (3, 5)  # nuclear fragments of a fragmented (karyorrhectic) nucleus
    micronucleus_prob: Probability = 0.0  # a micronucleus beside the nucleus (CTCs; other cells a fifth)
    # focus and background
    defocus_prob: Probability = 0.0  # cells lying out of the focal plane: the whole cell blurred
    defocus_sigma: Range = (1.2, 2.2)  # px, their extra blur
    uneven_background: Annotated[float, Field(ge=0.0, le=20.0)] = 0.0  # haze peak, x the slide background
    # FISH
    split_signal_prob: Probability = 0.0  # per CEP8 copy: imaged as two close spots (sister chromatids)
    split_distance: Range = (2.0, 3.0)  # px between the two halves (below the distinct-copy spacing)
    nuclear_speck_mean: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0  # cross-hybridisation specks/nucleus
    nuclear_speck_brightness: Range = (0.08, 0.25)  # their peak, x spot_peak
    # CD45 and look-alikes
    cd45_partial_prob: Probability = 0.0  # CD45+ cells whose ring covers only an arc
    cd45_arc: Range = (0.3, 0.6)  # share of the ring that stays
    lookalike_share: Probability = 0.0  # of non-CTC cells: CTC-sized, >= 3 copies, CD45 faint
    lookalike_cd45_fraction: Range = (0.06, 0.15)  # their CD45 level, x cd45_counts
    endothelial_share: Probability = 0.0  # of non-CTC cells: large elongated CD45-negative, 2 copies
    polyploid_copies: IntRange = (3, 3)  # copies of aneuploid_cd45pos cells; [3, 4] = polyploid, larger

    @field_validator(
        "clump_overlap", "dim_nucleus_scale", "defocus_sigma", "split_distance",
        "nuclear_speck_brightness", "cd45_arc", "lookalike_cd45_fraction",
    )
    @classmethod
    def _artefact_ranges(cls, v: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        return within(v, *_ARTEFACT_RANGE_BOUNDS[info.field_name])

    @field_validator("clump_size", "fragments", "polyploid_copies")
    @classmethod
    def _artefact_int_ranges(cls, v: tuple[int, int], info: ValidationInfo) -> tuple[int, int]:
        bounds = {"clump_size": (3, 12), "fragments": (2, 8), "polyploid_copies": (3, 8)}
        return within(v, *bounds[info.field_name])

    @field_validator("endothelial_share")
    @classmethod
    def _shares_fit(cls, v: float, info: ValidationInfo) -> float:
        total = v + info.data.get("lookalike_share", 0.0)
        if total > 1.0:
            raise ValueError(f"lookalike_share + endothelial_share must be <= 1, got {total:g}")
        return v

    @property
    def enabled(self) -> bool:
        """Whether any artefact is on (the simulator then also writes artefacts.csv)."""
        return self != ArtefactParams()


_ARTEFACT_RANGE_BOUNDS: dict[str, tuple[float, float]] = {
    "clump_overlap": (0.3, 1.1),
    "dim_nucleus_scale": (0.05, 1.0),
    "defocus_sigma": (0.3, 6.0),
    "split_distance": (0.5, 6.0),
    "nuclear_speck_brightness": (0.01, 2.0),
    "cd45_arc": (0.05, 1.0),
    "lookalike_cd45_fraction": (0.0, 1.0),
}


class SimulateParams(Section):
    """Knobs of the imFISH field simulator; docs/simulator.md explains the physics of each.

    Intensities are camera counts (16-bit) at exposure 1.0 and full illumination, above the camera
    offset. Radii and distances are pixels.
    """

    # cohort
    n_samples: PositiveInt = 100
    fields_per_sample: IntRange = (1, 3)
    field_size: Annotated[int, Field(ge=64, le=4096)] = 512
    # CTCs per patient ~ NegBin(mean, dispersion), capped: many patients at 0, a few with hundreds
    ctc_burden_mean: NonNegative = 5.0
    ctc_burden_dispersion: Annotated[float, Field(gt=0.0)] = 0.2
    ctc_burden_max: Annotated[int, Field(ge=0)] = 318
    ctc_cluster_prob: Probability = 0.15
    ctc_cluster_size: IntRange = (2, 4)
    # non-CTC cells per patient ~ Poisson(mean) left after CD45 bead depletion, and their make-up
    background_cells_mean: Annotated[float, Field(gt=0.0)] = 80.0
    hard_negative_share: Probability = 0.06
    hard_negative_large_prob: Probability = 0.35
    cd45_dim_share: Probability = 0.08
    cd45pos_aneuploid_share: Probability = 0.03
    debris_share: Probability = 0.05
    touching_share: Probability = 0.08
    # nuclei and cells
    leukocyte_radius: Range = (6.0, 8.0)
    ctc_radius: Range = (9.0, 14.0)
    debris_radius: Range = (1.5, 3.5)
    ctc_irregularity: Annotated[float, Field(ge=0.0, le=0.5)] = 0.18
    cytoplasm_ratio: Range = (1.25, 1.6)
    ctc_cep8_copies: IntRange = (3, 8)
    ctc_cep8_decay: Annotated[float, Field(gt=0.0, le=1.0)] = 0.6
    # FISH spots
    spot_sigma: Range = (0.8, 1.2)
    spot_peak: Annotated[float, Field(gt=0.0, le=60000.0)] = 3000.0
    spot_brightness: Range = (0.5, 1.4)
    spot_dim_prob: Probability = 0.08
    spot_dim_scale: Annotated[float, Field(gt=0.0, le=1.0)] = 0.3
    spot_overlap_prob: Probability = 0.05
    spot_edge_prob: Probability = 0.15
    speckle_density: Annotated[float, Field(ge=0.0, le=0.01)] = 2.0e-4
    speckle_brightness: Range = (0.15, 0.6)
    # stains and imaging
    dapi_counts: Range = (3000.0, 7000.0)
    cd45_counts: Range = (1500.0, 4000.0)
    cd45_dim_fraction: Range = (0.12, 0.3)
    debris_autofluorescence: Probability = 0.15
    background_counts: Range = (150.0, 350.0)
    camera_offset: Annotated[float, Field(ge=0.0, le=10000.0)] = 100.0
    exposure_range: Range = (0.7, 1.3)
    illumination_falloff: Annotated[float, Field(ge=0.0, le=0.7)] = 0.25
    gain: Annotated[float, Field(gt=0.0, le=100.0)] = 2.0
    read_noise: Annotated[float, Field(ge=0.0, le=1000.0)] = 12.0
    blur_sigma: Annotated[float, Field(ge=0.0, le=5.0)] = 0.8
    misregistration_px: Annotated[float, Field(ge=0.0, le=5.0)] = 1.0
    bleed_through: Annotated[float, Field(ge=0.0, le=0.5)] = 0.03
    workers: Annotated[int, Field(ge=0), OPERATIONAL] = 0  # 0 = one per CPU core
    # multi-site training data (docs/simulator.md#sites): sample k is imaged at site k % sites; site 0
    # is the optics above, every other site draws its own optics from site_optics (domain
    # randomisation). 1 = one site, as before.
    sites: Annotated[int, Field(ge=1, le=64)] = 1
    site_optics: SiteOptics = Field(default_factory=lambda: SiteOptics())
    # the hard cohort's artefacts (docs/simulator.md#hard-cohort), all off by default; configs/hard.yaml
    artefacts: ArtefactParams = Field(default_factory=lambda: ArtefactParams())

    @field_validator(*_SIMULATE_RANGE_BOUNDS)
    @classmethod
    def _ranges(cls, v: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        return within(v, *_SIMULATE_RANGE_BOUNDS[info.field_name])

    @field_validator("fields_per_sample", "ctc_cluster_size", "ctc_cep8_copies")
    @classmethod
    def _int_ranges(cls, v: tuple[int, int], info: ValidationInfo) -> tuple[int, int]:
        lowest = {"fields_per_sample": 1, "ctc_cluster_size": 2, "ctc_cep8_copies": 3}[info.field_name]
        if v[0] < lowest:
            raise ValueError(f"{info.field_name} must start at {lowest} or more, got [{v[0]}, {v[1]}]")
        ordered(v)
        return v

    @field_validator("debris_share")
    @classmethod
    def _shares_fit(cls, v: float, info: ValidationInfo) -> float:
        # checked on the last share so that the error names a key, not the whole section
        shares = v + info.data.get("hard_negative_share", 0.0) + info.data.get("cd45pos_aneuploid_share", 0.0)
        if shares > 1.0:
            raise ValueError(
                "hard_negative_share + cd45pos_aneuploid_share + debris_share must be <= 1 "
                f"(the rest are leukocytes), got {shares:g}"
            )
        return v




class SimulateConfig(StageConfig):
    """What the simulator reads: the seed every sample's random stream derives from, the channel
    order of the files it writes, and its own section."""

    seed: int
    channels: list[str]
    simulate: SimulateParams
