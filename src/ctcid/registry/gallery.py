"""Pictures of failure: crops where a model and the truth (or the rule) disagree, most confident first."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ctcid.raw.composite import false_colour

COLUMNS = 10  # crops per row: the most confident errors of each kind


def disagreements(predictions: pd.DataFrame, backbone: str, threshold: float) -> dict[str, np.ndarray]:
    """Crop indices of the test cells the model gets wrong, most confident first.

    ``predictions`` is ``reports/test_predictions.csv``: ``crop_index``, ``label``, ``in_test`` and one
    score column per backbone.
    """
    test = predictions[predictions["in_test"].astype(bool)]
    score, label = test[backbone].to_numpy(dtype=np.float64), test["label"].to_numpy(dtype=np.int64)
    crop_index = test["crop_index"].to_numpy(dtype=np.int64)
    missed = np.flatnonzero((label == 1) & (score < threshold))
    false_alarm = np.flatnonzero((label == 0) & (score >= threshold))
    return {
        "missed CTC": crop_index[missed[np.argsort(score[missed])]],
        "false positive": crop_index[false_alarm[np.argsort(-score[false_alarm])]],
    }


def draw(
    path: Path,
    predictions: pd.DataFrame,
    crops: np.ndarray,
    channels: Sequence[str],
    backbone: str,
    threshold: float,
) -> Path:
    """One row per kind of error, each crop titled with its score (DAPI blue, CEP8 orange, CD45 red)."""
    scores = predictions.set_index("crop_index")[backbone]
    return draw_rows(
        path,
        disagreements(predictions, backbone, threshold),
        crops,
        channels,
        lambda index: f"p={scores.loc[index]:.2f}",
        f"{backbone}: test cells it gets wrong at threshold {threshold:.3g}, most confident first",
    )


def draw_rows(
    path: Path,
    rows: dict[str, np.ndarray],
    crops: np.ndarray,
    channels: Sequence[str],
    caption: Callable[[int], str],
    title: str,
    columns: int = COLUMNS,
) -> Path:
    """A gallery: one row per named list of crop indices (the first ``columns``), each crop captioned."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.3 * columns, 1.6 * max(len(rows), 1)))
    axes = fig.subplots(max(len(rows), 1), columns, squeeze=False)
    for row, (name, chosen) in enumerate(rows.items()):
        shown = chosen[:columns]
        # one montage per row: its crops share one contrast stretch and stay comparable
        colour = (
            false_colour(np.concatenate([crops[i] for i in shown], axis=2), channels) if len(shown) else None
        )
        size = crops.shape[-1]
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if colour is not None and col < len(shown):
                ax.imshow(colour[:, col * size : (col + 1) * size])
                ax.set_title(caption(int(shown[col])), fontsize=6)
            elif col:
                ax.axis("off")
        axes[row][0].set_ylabel(f"{name}\n({len(chosen)})", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
