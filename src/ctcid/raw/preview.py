"""A look at one raw field: the false-colour composite with the annotated CTCs outlined and labelled."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ctcid.contracts import ANNOTATIONS_FILE, CTC_LABEL
from ctcid.errors import CtcidError
from ctcid.raw.composite import false_colour
from ctcid.raw.fields import read_field

OUTLINE_COLOUR = (255, 255, 255)  # RGB; white reads on blue, orange and red alike
NON_CTC_COLOUR = (110, 110, 110)


def render_preview(
    image: np.ndarray,
    channels: Sequence[str],
    cells: pd.DataFrame | None = None,
    scale: int = 2,
    crop: tuple[int, int, int, int] | None = None,
    show_all: bool = False,
) -> np.ndarray:
    """RGB uint8 composite of a C x H x W field, enlarged ``scale`` times, CTC boxes drawn on it.

    ``cells`` holds annotation rows of this field (columns of annotations.csv); true CTCs get a
    white box and their CEP8 copy number, other cells a thin grey box when ``show_all``.
    ``crop`` is ``(x, y, width, height)`` in field pixels.
    """
    x_off, y_off = 0, 0
    if crop is not None:
        x_off, y_off, width, height = crop
        image = image[:, y_off : y_off + height, x_off : x_off + width]
        if image.size == 0:
            raise CtcidError(f"crop {crop} lies outside the field")
    rgb = false_colour(image, channels)
    rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if cells is None or cells.empty:
        return rgb
    for row in cells.itertuples(index=False):
        is_ctc = row.label == CTC_LABEL
        if not (is_ctc or show_all):
            continue
        top_left = ((row.x0 - x_off) * scale - 2, (row.y0 - y_off) * scale - 2)
        bottom_right = ((row.x1 - x_off) * scale + 1, (row.y1 - y_off) * scale + 1)
        colour = OUTLINE_COLOUR if is_ctc else NON_CTC_COLOUR
        cv2.rectangle(rgb, top_left, bottom_right, colour, 1, cv2.LINE_AA)
        if is_ctc:
            text = f"CTC {row.cep8_copies}"
            cv2.putText(
                rgb,
                text,
                (top_left[0], top_left[1] - 3),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35 * scale / 2,
                colour,
                1,
                cv2.LINE_AA,
            )
    return rgb


def write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise CtcidError(f"{path}: cannot write PNG (check the directory and the .png suffix)")


def preview_field(
    field_path: Path,
    channels: Sequence[str],
    out: Path,
    annotations: Path | None = None,
    scale: int = 2,
    crop: tuple[int, int, int, int] | None = None,
    show_all: bool = False,
) -> int:
    """Write the preview PNG of one raw field; returns the number of CTCs outlined.

    Annotations default to ``annotations.csv`` beside the field, when there is one.
    """
    field_path = Path(field_path)
    image = read_field(field_path, len(channels))
    annotations = annotations or field_path.parent / ANNOTATIONS_FILE
    cells = None
    if annotations.exists():
        table = pd.read_csv(annotations, dtype={"field": str})
        cells = table[table["field"] == field_path.stem]
        if crop is not None:
            x, y, width, height = crop
            inside = (
                (cells["x1"] > x) & (cells["x0"] < x + width) & (cells["y1"] > y) & (cells["y0"] < y + height)
            )
            cells = cells[inside]
    write_png(out, render_preview(image, channels, cells, scale, crop, show_all))
    return 0 if cells is None else int((cells["label"] == CTC_LABEL).sum())
