"""Polar angles that are the same on every x86-64 CPU (docs/reproducibility.md#another-cpu-type).

numpy's ``arctan2`` runs Intel SVML on CPUs with AVX-512 and other routines elsewhere. In float32
the two disagree in the last 1-3 bits for about 40 % of angles (float64: in the last bit), so the
simulator's pixels and, at sector edges, the CD45 ring scores depended on the CPU. libm's scalar
``atan2`` takes no SIMD path; called element by element it costs about 0.1 us an angle.
"""

from __future__ import annotations

import math

import numpy as np

_LIBM_ATAN2 = np.frompyfunc(math.atan2, 2, 1)


def polar_angle(dy: np.ndarray, dx: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """``arctan2(dy, dx)`` (broadcast) in ``dtype``, computed by libm in double precision."""
    angle = _LIBM_ATAN2(np.asarray(dy, dtype=np.float64), np.asarray(dx, dtype=np.float64))
    return np.asarray(angle, dtype=np.float64).astype(dtype, copy=False)
