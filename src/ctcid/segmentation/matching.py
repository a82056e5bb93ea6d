"""Matching detected nuclei to annotated cells: one-to-one, by centre distance.

The Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) minimises the total centre
distance over all one-to-one pairings; pairs farther apart than ``max_distance`` are then dropped,
so a detection with no annotated cell nearby stays unmatched instead of stealing a far one. Pairs
beyond the limit are priced out of the assignment beforehand so that they cannot distort the
pairing of the close ones.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def match_centres(detections: np.ndarray, truths: np.ndarray, max_distance: float) -> np.ndarray:
    """For each detection (N x 2 array of x, y) the index of its annotated cell, or -1.

    ``truths`` is an M x 2 array of annotated centres in the same coordinates. Each annotated cell
    is used at most once; only pairs at most ``max_distance`` pixels apart are kept.
    """
    detections = np.asarray(detections, dtype=np.float64).reshape(-1, 2)
    truths = np.asarray(truths, dtype=np.float64).reshape(-1, 2)
    assignment = np.full(len(detections), -1, dtype=np.int64)
    if len(detections) == 0 or len(truths) == 0:
        return assignment
    distance = np.linalg.norm(detections[:, None, :] - truths[None, :, :], axis=-1)
    # A price above any feasible total keeps out-of-range pairs out unless nothing else is left.
    too_far = distance > max_distance
    cost = np.where(too_far, max_distance * (len(detections) + len(truths) + 1), distance)
    rows, cols = linear_sum_assignment(cost)
    keep = ~too_far[rows, cols]
    assignment[rows[keep]] = cols[keep]
    return assignment
