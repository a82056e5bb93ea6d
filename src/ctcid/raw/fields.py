"""Reading and writing raw imFISH fields: one multi-channel 16-bit TIFF per field.

This is the raw-data contract of the pipeline (``data/raw/<sample>/<field>.tif``). Every step that
touches raw images goes through :func:`read_field`, so a corrupt file, a wrong channel count or an
unusable field is reported the same way everywhere: a :class:`FieldReadError` naming the file, the
reason and what to do.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from ctcid.contracts import FIELD_SUFFIXES
from ctcid.errors import FieldReadError


@dataclass(frozen=True)
class FieldRef:
    """Where one raw field lives: ``<root>/<sample>/<field>.tif``."""

    sample: str
    field: str
    path: Path


def write_field(path: Path, image: np.ndarray, channels: Sequence[str]) -> None:
    """Write a C x H x W uint16 field as an OME-TIFF whose channel names follow ``channels``.

    No timestamp is written, so the same pixels always give the same bytes (DVC hashes stay put).
    """
    if image.ndim != 3 or image.shape[0] != len(channels):
        raise ValueError(f"expected {len(channels)} x H x W image, got shape {image.shape}")
    if image.dtype != np.uint16:
        raise ValueError(f"raw fields are 16-bit, got {image.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # tifffile would put a time-based UUID into the OME-XML; one derived from the content keeps the
    # bytes reproducible and still identifies the image
    digest = hashlib.sha256(image.tobytes() + "/".join(channels).encode()).hexdigest()
    content_uuid = uuid.uuid5(uuid.NAMESPACE_OID, digest)
    tifffile.imwrite(
        path,
        image,
        photometric="minisblack",
        ome=True,
        metadata={"axes": "CYX", "Channel": {"Name": list(channels)}, "UUID": f"urn:uuid:{content_uuid}"},
        compression="zlib",
        # level 1: six times faster than the default on noisy 16-bit data, for 2 % more bytes
        compressionargs={"level": 1},
    )


def _to_cyx(image: np.ndarray, n_channels: int, path: Path) -> np.ndarray:
    """Bring a channel axis to the front; accepts CYX, YXC and singleton Z/T axes around them."""
    image = np.squeeze(image)
    if image.ndim == 2:
        if n_channels == 1:  # a single-channel plane, as 'ctcid ingest' reads per-channel files
            return image[None]
        raise FieldReadError(
            path, f"has 1 channel, expected {n_channels}",
            "Save the channels together as one multi-channel TIFF, or use 'ctcid ingest' with a channel map",
        )
    if image.ndim != 3:
        raise FieldReadError(
            path, f"has {image.ndim} dimensions {image.shape}, expected channels x height x width"
        )
    if image.shape[0] == n_channels:
        return image
    if image.shape[-1] == n_channels:
        return np.moveaxis(image, -1, 0)
    found = min(image.shape)
    raise FieldReadError(
        path, f"has {found} channels (shape {image.shape}), expected {n_channels}",
        "Check the 'channels' list in params.yaml against how the microscope exported the file",
    )


def read_field(path: Path, n_channels: int = 3) -> np.ndarray:
    """Read one field as a C x H x W uint16 array, or raise FieldReadError with the reason."""
    path = Path(path)
    try:
        image = tifffile.imread(path)
    except FileNotFoundError:
        raise FieldReadError(path, "file not found") from None
    except Exception as error:  # tifffile raises many types for damaged files
        raise FieldReadError(
            path, f"cannot be decoded as TIFF ({type(error).__name__}: {error})",
            "Re-export the field from the microscope software; the file is damaged or not a TIFF",
        ) from None
    image = np.asarray(image)
    if image.size == 0:  # tifffile tolerates some broken headers and returns nothing
        raise FieldReadError(
            path, "holds no image data", "Re-export the field from the microscope software; it is damaged"
        )
    return as_uint16(_to_cyx(image, n_channels, path), path)


def as_uint16(image: np.ndarray, path: Path) -> np.ndarray:
    """Pixels as uint16: 8-bit stretched to the 16-bit range, float or signed data refused."""
    if image.dtype != np.uint16:
        if image.dtype == np.uint8:
            image = image.astype(np.uint16) * 257  # stretch to the 16-bit range the thresholds assume
        else:
            raise FieldReadError(
                path, f"has pixel type {image.dtype}, expected 16-bit (or 8-bit) unsigned integers",
                "Export raw 16-bit intensities, not floating-point or signed data",
            )
    return np.ascontiguousarray(image)


def iter_fields(root: Path) -> Iterator[FieldRef]:
    """All ``<root>/<sample>/<field>.tif`` files in a stable (sorted) order."""
    root = Path(root)
    for sample_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(sample_dir.iterdir()):
            if path.suffix.lower() in FIELD_SUFFIXES:
                yield FieldRef(sample=sample_dir.name, field=path.stem, path=path)
