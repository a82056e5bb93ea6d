"""CEP8 spot counts of a crop's centre nucleus, computed inside the network (``train.spot_features``).

The criterion counts CEP8 copies; trained on a few hundred crops for a few CPU epochs, the
backbones learn nuclear size and CD45 and barely read the 2-3 px spots (docs/results.md#levers-issue-29).
This layer hands the head what the segment step measures, with the segment step's own code: the
crop's nuclei by :func:`~ctcid.segmentation.nuclei.segment_nuclei`, the one at the centre, and its
spots by :func:`~ctcid.segmentation.spots.detect_cep8_spots` (difference of Gaussians, noise units,
the valley test between close maxima, the dim-spot filter), all with the training run's
``segment.*``. A large nucleus that fills the crop leaves the crop no background to threshold
against; then the nucleus is the DAPI region connected to the centre above a share of its level.

The same nucleus gives the CD45 membrane-ring score (:func:`~ctcid.segmentation.features.cd45_ring_score`,
background from the rest of the crop). Five features go beside the backbone's pooled features into
a linear spot head (which starts as the rule: ``CellClassifier``): the count less the
diploid two, whether it reaches ``segment.rule_min_spots``, the log CD45 score, whether it reaches
``segment.cd45_threshold``, and the rule's call on the crop (both). The head starts from nothing
and learns how far to trust each against the CNN, so the rule is a feature, not the answer.
A fusion model that takes crops alone, so it is registered, packaged
and served like any other version and ``/classify`` needs no segmentation; its counts follow the
pixels, so the gate's "more CEP8 spots" probe moves them as it would move the segment step's. The
counts are scale-free (raw or standardised crops alike) but need the crop's own pixels: a spot
model reads crops at native size (``train.input_size: native``). It has no weights.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from ctcid.config.segment import SegmentParams
from ctcid.segmentation.features import cd45_ring_score
from ctcid.segmentation.nuclei import segment_nuclei
from ctcid.segmentation.spots import detect_cep8_spots

N_FEATURES = 5
RULE_FEATURE = 4  # the rule's call on the crop: >= rule_min_spots and CD45-negative
# segment.* the layer's nucleus and spot detection read (and the rule's spot count): a spot model's metadata
SPOT_KEYS = (
    "background_radius", "dim_nuclei_snr", "gaussian_ksize", "max_area", "min_area",
    "min_peak_radius", "morph_iterations", "morph_ksize", "split_min_separation", "split_touching",
    "spot_margin", "spot_mass_sigma", "spot_merge_px", "spot_min_dip", "spot_min_distance",
    "spot_min_relative", "spot_sigma", "spot_snr", "threshold_min_snr", "threshold_scale",
    "watershed_min_distance", "rule_min_spots", "cd45_ring_gap", "cd45_ring_width", "cd45_sectors",
    "cd45_threshold",
)
DIPLOID = 2.0
MAX_COUNT = 8  # counts are clipped: 3 against 2 decides, 9 against 8 does not
CENTRE_PX = 2  # half-width of the centre window whose label is the crop's nucleus
FALLBACK_SHARE = 0.5  # fallback nucleus: DAPI above this share of its level at the centre
# Measurements remembered per process, oldest dropped first: evaluation, external cohorts and the
# gate score the same crops with five backbones, and validation scores the same crops every epoch;
# augmented training crops differ every time and are measured afresh. ~100 bytes an entry.
CACHE_SIZE = 500_000
_MEASURED: dict[tuple[object, bytes], tuple[int, float]] = {}
_LOCK = threading.Lock()


class SpotCounts(nn.Module):
    """``N x C x S x S`` crops in, ``N x 5`` features of the criterion out (see the module doc)."""

    def __init__(
        self, dapi: int = 0, cep8: int = 1, segment: Mapping[str, Any] | None = None, cd45: int = 2
    ) -> None:
        super().__init__()
        self.dapi, self.cep8, self.cd45 = dapi, cep8, cd45
        self.segment = SegmentParams.model_validate(dict(segment or {}))
        self._settings = (dapi, cep8, cd45, self.segment.model_dump_json())

    def measure(self, crop: np.ndarray) -> tuple[int, float]:
        """CEP8 spots and CD45 ring score of the centre nucleus of one ``C x S x S`` crop."""
        nucleus = self._nucleus(crop[self.dapi])
        if not nucleus.any():
            return 0, 0.0
        labels = nucleus.astype(np.int32)
        spots = detect_cep8_spots(crop[self.cep8], labels, self.segment)
        rows, cols = np.nonzero(nucleus)
        centre = np.array([[cols.mean(), rows.mean()]])
        score = float(cd45_ring_score(crop[self.cd45], labels, centre, self.segment)[0])
        return min(len(spots.rows), MAX_COUNT), score if np.isfinite(score) else 0.0

    def _nucleus(self, dapi: np.ndarray) -> np.ndarray:
        size = dapi.shape[-1]
        low, high = size // 2 - CENTRE_PX, size // 2 + CENTRE_PX
        labels = segment_nuclei(dapi, self.segment).labels
        centre = labels[low:high, low:high]
        if centre.any():
            return labels == np.bincount(centre[centre > 0]).argmax()
        bright = dapi > FALLBACK_SHARE * float(dapi[low:high, low:high].max())
        regions, _ = ndimage.label(bright)
        inside = regions[low:high, low:high]
        return regions == np.bincount(inside[inside > 0]).argmax() if inside.any() else bright

    def _measured(self, crop: np.ndarray) -> tuple[int, float]:
        """:meth:`measure`, remembered by the crop's bytes: every backbone scores the same crops."""
        key = (self._settings, hashlib.blake2b(crop.tobytes(), digest_size=16).digest())
        with _LOCK:
            found = _MEASURED.get(key)
        if found is None:
            found = self.measure(crop)
            with _LOCK:  # the service scores batches from several threads
                if len(_MEASURED) >= CACHE_SIZE:
                    _MEASURED.pop(next(iter(_MEASURED)))
                _MEASURED[key] = found
        return found

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        crops = np.ascontiguousarray(x.detach().float().cpu().numpy())
        measured = np.array([self._measured(crop) for crop in crops], dtype=np.float64).reshape(-1, 2)
        counts, cd45 = measured[:, 0], measured[:, 1]
        enough = counts >= self.segment.rule_min_spots
        positive = cd45 >= self.segment.cd45_threshold
        log_cd45 = np.log1p(np.clip(cd45, 0.0, None))
        features = np.stack([counts - DIPLOID, enough, log_cd45, positive, enough & ~positive], axis=1)
        return torch.from_numpy(features.astype(np.float32)).to(device=x.device, dtype=x.dtype)
