"""Imaging sites of the simulator: one patient cohort, several microscopes (docs/simulator.md#sites).

With ``simulate.sites = n``, sample ``k`` is imaged at site ``k % n``, named ``site{j}``. Site 0 is
``params.simulate`` exactly. Every other site draws its optics, camera and stain intensities once
from ``simulate.site_optics`` with a generator of its own, ``SeedSequence(seed, spawn_key=(SITE_STREAM,
j))``: a two-word spawn key, so it can never equal a sample's one-word key ``(k,)``. A site's
settings depend on the seed, ``site_optics`` and site 0's settings only, not on ``sites``: adding
sites later leaves the existing ones as they were.

A sample at site ``j >= 1`` keeps site 0's biology (:func:`specimen_params`): the same cohort of
cells per field (types, labels, CEP8 copies, CD45 states), only the CEP8 probe and the CD45 stain
brighter or dimmer; and it is imaged with the site's optics (:func:`site_params`). Its first field
is the same specimen as at site 0 down to every cell's position; later fields place the same cells
elsewhere, because the camera noise (its Poisson draws use as many random numbers as the light
asks) moves the sample generator on differently.
"""

from __future__ import annotations

import numpy as np

from ctcid.config.simulate import SimulateConfig, SimulateParams
from ctcid.errors import CtcidError

# First word of every site stream's spawn key; sample streams are (k,), one word long.
SITE_STREAM = 2**32 - 1
# The settings a site replaces, in the order site_optics_table reports them.
SITE_KEYS = (
    "blur_sigma",
    "exposure_range",
    "background_counts",
    "read_noise",
    "gain",
    "spot_brightness",
    "cd45_counts",
    "misregistration_px",
    "bleed_through",
)
# ... of which the stains: they change what the specimen emits, not how it is imaged.
STAIN_KEYS = ("spot_brightness", "cd45_counts")


def site_name(site: int) -> str:
    return f"site{site}"


def site_number(sample_number: int, sites: int) -> int:
    """The site sample ``sample_number`` is imaged at: round-robin over ``sites``."""
    return sample_number % sites


def site_rng(seed: int, site: int) -> np.random.Generator:
    """The generator site ``site`` draws its settings from (never a sample's stream)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SITE_STREAM, site)))


def site_params(p: SimulateParams, seed: int, site: int) -> SimulateParams:
    """``p`` with site ``site``'s optics, camera and stain intensities; ``p`` itself for site 0.

    Factors (``*_factor``) multiply site 0's range; the other knobs replace site 0's value. One
    uniform draw per knob, in :data:`SITE_KEYS` order.
    """
    if site == 0:
        return p
    ranges = p.site_optics
    if ranges.gain[0] <= 0:
        raise CtcidError(
            f"simulate.site_optics.gain = [{ranges.gain[0]:g}, {ranges.gain[1]:g}]: a camera gain must be "
            "above 0 counts per photo-electron; raise its lower end"
        )
    rng = site_rng(seed, site)

    def draw(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(*bounds))

    def scaled(values: tuple[float, float], bounds: tuple[float, float]) -> tuple[float, float]:
        factor = draw(bounds)
        return (values[0] * factor, values[1] * factor)

    update = {
        "blur_sigma": draw(ranges.blur_sigma),
        "exposure_range": scaled(p.exposure_range, ranges.exposure_factor),
        "background_counts": scaled(p.background_counts, ranges.background_factor),
        "read_noise": draw(ranges.read_noise),
        "gain": draw(ranges.gain),
        "spot_brightness": scaled(p.spot_brightness, ranges.spot_brightness_factor),
        "cd45_counts": scaled(p.cd45_counts, ranges.cd45_factor),
        "misregistration_px": draw(ranges.misregistration_px),
        "bleed_through": draw(ranges.bleed_through),
    }
    return p.model_copy(update=update)


def specimen_params(p: SimulateParams, imaging: SimulateParams) -> SimulateParams:
    """What a site's specimen is drawn with: site 0's biology, the site's stain intensities.

    Every other knob (including the ``blur_sigma`` that spaces FISH spots) stays site 0's, so the
    sample generator draws the same numbers for the specimen as at site 0.
    """
    if imaging is p:
        return p
    return p.model_copy(update={key: getattr(imaging, key) for key in STAIN_KEYS})


def site_optics_table(params: SimulateConfig) -> list[dict[str, object]]:
    """Each site's effective settings (:data:`SITE_KEYS`), site 0 first: for docs and reports."""
    p = params.simulate
    rows: list[dict[str, object]] = []
    for site in range(p.sites):
        effective = site_params(p, params.seed, site)
        rows.append({"site": site_name(site), **{key: getattr(effective, key) for key in SITE_KEYS}})
    return rows
