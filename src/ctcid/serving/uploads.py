"""Uploaded files -> checked arrays, or an :class:`InputRejected` that says what was wrong.

The service and ``ctcid predict`` both come through here, so a file is accepted or refused the
same way over HTTP and on the command line. Fields are read with the ingest step's readers (one
multi-channel TIFF / OME-TIFF, or one single-channel file per channel). Cheap checks run first: the
file size, then the image size from the TIFF header, so an oversized field is refused before a
pixel of it is decoded.

Status codes: 400 a request without the parts it needs, 413 too large, 415 not a TIFF or .npy,
422 readable but unusable (channels, pixel type, a dark or empty field, crops of the wrong size).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tifffile

from ctcid.config.segment import SegmentParams
from ctcid.config.serving import ServingParams
from ctcid.errors import CtcidError, FieldReadError, InputRejected
from ctcid.raw.ingest import parse_channel_map, read_multichannel, read_plane
from ctcid.segmentation.analysis import input_problem

BAD_REQUEST, TOO_LARGE, UNSUPPORTED, UNPROCESSABLE = 400, 413, 415, 422
_MB = 1024 * 1024
_TIFF_HINT = "Send a 16-bit (or 8-bit) unsigned multi-channel TIFF or OME-TIFF, as the microscope exports it"


def check_size(path: Path, name: str, limits: ServingParams) -> None:
    size = path.stat().st_size
    if size == 0:
        raise InputRejected(BAD_REQUEST, name, "is an empty file", _TIFF_HINT)
    if size > limits.max_upload_mb * _MB:
        raise InputRejected(
            TOO_LARGE,
            name,
            f"is {size / _MB:.1f} MB, more than serving.max_upload_mb {limits.max_upload_mb:g}",
            "Send fewer or smaller files per request",
        )


def check_tiff_header(path: Path, name: str, limits: ServingParams) -> None:
    """Refuse what is not a TIFF (415), or a field larger than ``max_field_px`` (413), unread."""
    try:
        with tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape if tif.series else ()
    except Exception as error:  # tifffile raises many types for what is not a TIFF
        raise InputRejected(
            UNSUPPORTED, name, f"is not a TIFF ({type(error).__name__}: {error})", _TIFF_HINT
        ) from None
    side = max(shape[-2:], default=0)
    if side > limits.max_field_px:
        raise InputRejected(
            TOO_LARGE,
            name,
            f"is a {' x '.join(map(str, shape))} image; its side of {side} px exceeds "
            f"serving.max_field_px {limits.max_field_px}",
            "Send one field (one camera frame) per file, not a stitched scan",
        )


def _read(name: str, read: Callable[[], np.ndarray]) -> np.ndarray:
    try:
        return read()
    except FieldReadError as error:  # the header was a TIFF's (checked first): damaged or unusable data
        raise InputRejected(UNPROCESSABLE, name, error.reason, error.hint) from None


def read_field_files(
    files: Mapping[str, Path], channels: Sequence[str], limits: ServingParams, channel_map: str | None = None
) -> np.ndarray:
    """One field from its files, keyed by file name: one multi-channel TIFF, or one file per channel.

    Single-channel files are matched to channels by ``channel_map`` (``ctcid ingest``'s syntax:
    ``DAPI=*_dapi.tif,...``; by default the stem ends in ``_dapi``, ``_cep8``, ``_cd45``).
    """
    if len(files) not in (1, len(channels)):
        raise InputRejected(
            BAD_REQUEST,
            "field",
            f"{len(files)} files",
            f"Send one multi-channel TIFF, or {len(channels)} single-channel files ({', '.join(channels)})",
        )
    for name, path in files.items():
        check_size(path, name, limits)
        check_tiff_header(path, name, limits)
    if len(files) == 1:
        name, path = next(iter(files.items()))
        return _read(name, lambda: read_multichannel(path, channels))
    by_channel = _match_channels(files, channels, channel_map)
    planes = {c: _read(by_channel[c][0], lambda c=c: read_plane(by_channel[c][1])) for c in channels}
    shapes = {c: plane.shape for c, plane in planes.items()}
    if len(set(shapes.values())) > 1:
        sizes = ", ".join(f"{c} {h}x{w}" for c, (h, w) in shapes.items())
        raise InputRejected(
            UNPROCESSABLE,
            "field",
            f"channel sizes differ: {sizes}",
            "All channels of a field must come from the same camera frame",
        )
    return np.stack([planes[c] for c in channels])


def _match_channels(
    files: Mapping[str, Path], channels: Sequence[str], channel_map: str | None
) -> dict[str, tuple[str, Path]]:
    try:
        patterns = parse_channel_map(channel_map, channels)
    except CtcidError as error:
        raise InputRejected(BAD_REQUEST, "channel_map", str(error)) from None
    found: dict[str, tuple[str, Path]] = {}
    for name, path in files.items():
        matches = [p.channel for p in patterns if p.field_id(name)]
        if len(matches) != 1 or matches[0] in found:
            wanted = ", ".join(f"{p.channel}={p.pattern}" for p in patterns)
            raise InputRejected(
                BAD_REQUEST,
                name,
                "matches no channel, or the same channel as another file",
                f"Name single-channel files to match the channel map ({wanted}), or send channel_map",
            )
        found[matches[0]] = (name, path)
    return found


def check_usable(image: np.ndarray, name: str, seg: SegmentParams, channels: Sequence[str]) -> None:
    """Refuse an empty (uniform), dark or saturated field with the segment stage's own checks."""
    if image.shape[1] < seg.crop_size or image.shape[2] < seg.crop_size:
        raise InputRejected(
            UNPROCESSABLE,
            name,
            f"is {image.shape[2]} x {image.shape[1]} px, smaller than one {seg.crop_size}-px cell crop",
            "Send a whole field",
        )
    problem = input_problem(image, seg, channels)
    if problem is not None:
        raise InputRejected(UNPROCESSABLE, name, *problem)


def read_crops_file(path: Path, channels: int, crop_size: int, limits: ServingParams) -> np.ndarray:
    """An ``N x C x S x S`` .npy of crops as float32, checked from its header before it is loaded."""
    name = "crops"
    check_size(path, name, limits)
    with path.open("rb") as handle:
        try:
            major, _ = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(handle)
        except Exception as error:  # not an .npy, or a header numpy cannot parse
            raise InputRejected(
                UNSUPPORTED,
                name,
                f"is not a NumPy .npy file ({error})",
                "Save the crops with numpy.save(path, crops), shaped N x C x S x S",
            ) from None
    expected = f"N x {channels} x {crop_size} x {crop_size}"
    if dtype.kind not in "uif":
        raise InputRejected(
            UNPROCESSABLE,
            name,
            f"has dtype {dtype}, expected numbers",
            "Send raw intensities as integers or floats",
        )
    if len(shape) != 4 or tuple(shape[1:]) != (channels, crop_size, crop_size):
        raise InputRejected(
            UNPROCESSABLE,
            name,
            f"has shape {tuple(shape)}, expected {expected}",
            "Cut crops the size the served model was trained on (GET /model: crop_size)",
        )
    if shape[0] == 0:
        raise InputRejected(UNPROCESSABLE, name, "holds no crops", f"Send at least one crop, {expected}")
    if shape[0] > limits.max_crops:
        raise InputRejected(
            TOO_LARGE,
            name,
            f"holds {shape[0]} crops, more than serving.max_crops {limits.max_crops}",
            "Split them over several requests",
        )
    try:
        crops = np.load(path, allow_pickle=False)
    except Exception as error:  # truncated data
        raise InputRejected(UNPROCESSABLE, name, f"cannot be read ({error})", "Save the file again") from None
    crops = crops.astype(np.float32, copy=False)
    if not np.isfinite(crops).all():
        raise InputRejected(UNPROCESSABLE, name, "holds NaN or infinite values", "Send finite intensities")
    return crops
