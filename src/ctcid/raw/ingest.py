"""Bring a lab's own images into the raw-data contract (``<out>/<sample>/<field>.tif``).

Two layouts are accepted, mixed freely in one folder:

* one multi-channel TIFF / OME-TIFF per field (channels in ``params.channels`` order, or in any
  order when the OME metadata names them);
* one single-plane TIFF or PNG per channel, grouped into fields by a channel map: a pattern per
  channel whose ``*`` (or, for a bare suffix, the rest of the file stem) is the field id.

A sample's ``annotations.csv`` is carried over when it has the contract's columns. A ``sites.csv``
(columns ``sample,site``: the microscope each sample was imaged on) in the source folder is checked
(a malformed one stops the run before anything is written) and merged into ``<out>/sites.csv`` for
the samples that were ingested (named by the source sub-folder or by their ingested name); samples
it does not list stay at the default site.

A file that cannot be used is listed in the quarantine report with the reason and a hint, and the
rest of the batch goes on. docs/simulator.md ("Bringing your own images") has the details.
"""

from __future__ import annotations

import csv
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile

from ctcid.contracts import ANNOTATION_COLUMNS, ANNOTATIONS_FILE, SITES_FILE
from ctcid.errors import CtcidError, FieldReadError
from ctcid.quarantine import QuarantineEntry, read_quarantine, write_quarantine
from ctcid.raw.fields import as_uint16, read_field, write_field
from ctcid.raw.sites import read_sites, write_sites

STAGE = "ingest"
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png")
# Default channel map: a stem suffix per channel, e.g. 'f01_dapi.tif', 'f01_cep8.png'.
DEFAULT_CHANNEL_MAP = {"DAPI": "_dapi", "CEP8": "_cep8", "CD45": "_cd45"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class ChannelPattern:
    """Which files hold one channel, and which part of their name is the field id.

    ``*_dapi.tif`` is a glob on the whole file name whose ``*`` is the field id; a pattern without
    ``*`` such as ``_dapi`` is a suffix of the file stem, with any image extension. Case is ignored.
    """

    channel: str
    pattern: str

    @property
    def regex(self) -> re.Pattern[str]:
        if "*" in self.pattern:
            before, after = self.pattern.split("*")
            return re.compile(f"^{re.escape(before)}(.+){re.escape(after)}$", re.IGNORECASE)
        extensions = "|".join(re.escape(s) for s in IMAGE_SUFFIXES)
        return re.compile(f"^(.+){re.escape(self.pattern)}({extensions})$", re.IGNORECASE)

    def field_id(self, file_name: str) -> str | None:
        match = self.regex.match(file_name)
        return match.group(1) if match else None


def parse_channel_map(text: str | None, channels: Sequence[str]) -> list[ChannelPattern]:
    """``DAPI=*_dapi.tif,CEP8=*_cep8.tif,CD45=*_cd45.tif`` -> one pattern per channel."""
    if not text:
        return [ChannelPattern(name, DEFAULT_CHANNEL_MAP[name]) for name in channels]
    mapping: dict[str, str] = {}
    for item in text.split(","):
        name, sep, pattern = item.partition("=")
        name, pattern = name.strip(), pattern.strip()
        if not sep or not pattern:
            raise CtcidError(f"channel map entry {item!r} is not CHANNEL=PATTERN (e.g. DAPI=*_dapi.tif)")
        if pattern.count("*") > 1:
            raise CtcidError(
                f"channel map pattern {pattern!r} has more than one '*'; the '*' is the field id"
            )
        mapping[name] = pattern
    if sorted(mapping) != sorted(channels):
        raise CtcidError(f"channel map names {sorted(mapping)}, but params.channels are {list(channels)}")
    return [ChannelPattern(name, mapping[name]) for name in channels]


@dataclass
class IngestResult:
    written: list[Path] = field(default_factory=list)
    quarantined: list[QuarantineEntry] = field(default_factory=list)

    def reject(self, path: Path, reason: str, hint: str = "") -> None:
        self.quarantined.append(QuarantineEntry(str(path), STAGE, reason, hint))

    def summary(self, out: Path, quarantine: Path) -> str:
        """What ``ctcid ingest`` prints: fields and samples written, files quarantined."""
        samples = len({path.parent for path in self.written})
        return (
            f"ingested {len(self.written)} fields from {samples} sample(s) into {out}; "
            f"{len(self.quarantined)} files quarantined (listed in {quarantine})"
        )


def safe_field_id(name: str) -> str:
    """A file stem usable as a field id: letters, digits, '_', '.', '-' only."""
    if name.lower().endswith(".ome"):
        name = name[:-4]
    return _UNSAFE.sub("_", name).strip("_") or "field"


def _ome_channel_names(path: Path) -> list[str]:
    try:
        with tifffile.TiffFile(path) as tif:
            return re.findall(r'<Channel\b[^>]*\bName="([^"]*)"', tif.ome_metadata or "")
    except Exception:  # metadata is a bonus: the pixels were already read without it
        return []


def read_multichannel(path: Path, channels: Sequence[str]) -> np.ndarray:
    """A multi-channel field in ``channels`` order; OME channel names, when all present, set the order."""
    image = read_field(path, len(channels))
    names = _ome_channel_names(path)
    if sorted(names) == sorted(channels) and names != list(channels):
        image = image[[names.index(name) for name in channels]]
    return image


def read_plane(path: Path) -> np.ndarray:
    """One single-channel TIFF or PNG as an H x W uint16 plane, or FieldReadError."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            return read_field(path, n_channels=1)[0]
        except FieldReadError as error:
            if "channels" not in error.reason:
                raise
            raise FieldReadError(
                path,
                error.reason.replace("expected 1", "expected 1 plane per channel file"),
                "A per-channel file holds one channel; check the channel map",
            ) from None
    plane = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if plane is None:
        raise FieldReadError(
            path, "cannot be decoded as PNG", "Re-export the image; the file is damaged or not an image"
        )
    if plane.ndim != 2:
        raise FieldReadError(
            path,
            f"is a colour image ({plane.shape[2]} colour planes), expected greyscale",
            "Export each channel as a greyscale (raw intensity) image, not a coloured view",
        )
    return as_uint16(plane, path)


def _write(
    result: IngestResult, out: Path, sample: str, field_id: str, image: np.ndarray, channels: Sequence[str]
) -> None:
    target = out / sample / f"{field_id}.tif"
    write_field(target, image, channels)
    result.written.append(target)


def _ingest_per_channel(
    result: IngestResult,
    out: Path,
    sample: str,
    groups: Mapping[str, dict[str, Path]],
    patterns: Sequence[ChannelPattern],
    channels: Sequence[str],
) -> set[str]:
    written: set[str] = set()
    for field_id, files in sorted(groups.items()):
        missing = [p for p in patterns if p.channel not in files]
        if missing:
            wanted = ", ".join(f"{p.channel} ({p.pattern})" for p in missing)
            for path in files.values():
                result.reject(
                    path,
                    f"field '{field_id}' has no {wanted} file",
                    "Add the missing channel file or fix the channel map",
                )
            continue
        planes: list[np.ndarray] = []
        try:
            for name in channels:
                planes.append(read_plane(files[name]))
        except FieldReadError as error:
            result.reject(error.path, error.reason, error.hint)
            for path in files.values():
                if path != error.path:
                    result.reject(
                        path,
                        f"field '{field_id}' dropped: {error.path.name} is unusable",
                        "Fix or replace that channel file",
                    )
            continue
        shapes = {name: plane.shape for name, plane in zip(channels, planes, strict=True)}
        if len(set(shapes.values())) > 1:
            sizes = ", ".join(f"{name} {h}x{w}" for name, (h, w) in shapes.items())
            for path in files.values():
                result.reject(
                    path,
                    f"field '{field_id}' channel sizes differ: {sizes}",
                    "All channels of a field must come from the same camera frame",
                )
            continue
        _write(result, out, sample, field_id, np.stack(planes), channels)
        written.add(field_id)
    return written


def ingest_sample(
    result: IngestResult,
    source: Path,
    out: Path,
    sample: str,
    patterns: Sequence[ChannelPattern],
    channels: Sequence[str],
) -> None:
    """Ingest the image files directly inside ``source`` as the fields of ``sample``."""
    groups: dict[str, dict[str, Path]] = {}
    multichannel: list[Path] = []
    for path in sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        matches = [(p.channel, p.field_id(path.name)) for p in patterns if p.field_id(path.name)]
        if len(matches) > 1:
            result.reject(
                path,
                f"matches the patterns of several channels ({', '.join(c for c, _ in matches)})",
                "Make the channel map patterns distinct",
            )
        elif matches:
            channel, key = matches[0]
            group = groups.setdefault(safe_field_id(key or ""), {})
            if channel in group:
                result.reject(
                    path,
                    f"second {channel} file for field '{safe_field_id(key or '')}' "
                    f"(first: {group[channel].name})",
                    "Keep one file per channel and field",
                )
            else:
                group[channel] = path
        elif path.suffix.lower() in TIFF_SUFFIXES:
            multichannel.append(path)
        else:
            result.reject(
                path,
                "PNG matches no channel pattern; multi-channel fields must be TIFF",
                "Name per-channel files to match the channel map, or export a multi-channel TIFF",
            )

    done = _ingest_per_channel(result, out, sample, groups, patterns, channels)
    for path in multichannel:
        field_id = safe_field_id(path.stem)
        if field_id in done:
            result.reject(
                path,
                f"field id '{field_id}' is already taken by another file of this sample",
                "Rename one of the files",
            )
            continue
        try:
            image = read_multichannel(path, channels)
        except FieldReadError as error:
            result.reject(path, error.reason, error.hint)
            continue
        _write(result, out, sample, field_id, image, channels)
        done.add(field_id)
    _copy_annotations(result, source, out / sample, bool(done))


def _copy_annotations(result: IngestResult, source: Path, target: Path, any_field: bool) -> None:
    annotations = source / ANNOTATIONS_FILE
    if not annotations.is_file() or not any_field:
        return
    with annotations.open(newline="") as handle:
        header = next(csv.reader(handle), [])
    missing = [c for c in ANNOTATION_COLUMNS if c not in header]
    if missing:
        result.reject(
            annotations,
            f"lacks the annotation columns {missing}",
            "See docs/architecture.md for the annotations.csv columns; fields were ingested without it",
        )
        return
    shutil.copyfile(annotations, target / ANNOTATIONS_FILE)


def _copy_sites(
    sites: Mapping[str, str],
    earlier: Mapping[str, str],
    samples: Sequence[tuple[str, Path]],
    result: IngestResult,
    out: Path,
) -> None:
    """Write the ingested samples' sites into ``<out>/sites.csv``, keeping earlier batches' samples."""
    ingested = {path.parent.name for path in result.written}
    found: dict[str, str] = {}
    for name, folder in samples:
        site = sites.get(name) or sites.get(folder.name)
        if name in ingested and site:
            found[name] = site
    if found:
        write_sites(out, {**earlier, **found})


def find_samples(source: Path, sample: str | None) -> list[tuple[str, Path]]:
    """``source`` holds the images of one sample, or one sub-folder of images per sample."""
    if not source.is_dir():
        raise CtcidError(f"{source}: not a folder; point 'ctcid ingest' at the folder holding the images")

    def has_images(folder: Path) -> bool:
        return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())

    if has_images(source):
        return [(safe_field_id(sample or source.resolve().name), source)]
    folders = [d for d in sorted(source.iterdir()) if d.is_dir() and has_images(d)]
    if not folders:
        raise CtcidError(
            f"{source}: no .tif, .tiff or .png images found, neither in it nor in its sub-folders"
        )
    if sample:
        raise CtcidError(
            f"{source}: holds one sub-folder per sample ({len(folders)}); --sample names a single "
            "sample, so leave it out (the sub-folder names are used)"
        )
    return [(safe_field_id(d.name), d) for d in folders]


def ingest(
    source: Path,
    out: Path,
    channels: Sequence[str],
    sample: str | None = None,
    channel_map: str | None = None,
    quarantine: Path | None = None,
) -> IngestResult:
    """Ingest ``source`` into ``out``; the quarantine report (if given) keeps other stages' entries."""
    patterns = parse_channel_map(channel_map, channels)
    # before anything is written: a bad sites.csv (the lab's, or one of an earlier batch) stops the run
    sites = read_sites(Path(source))
    earlier = read_sites(Path(out)) if (Path(source) / SITES_FILE).is_file() else {}
    result = IngestResult()
    samples = find_samples(Path(source), sample)
    for name, folder in samples:
        ingest_sample(result, folder, Path(out), name, patterns, channels)
    if (Path(source) / SITES_FILE).is_file():
        _copy_sites(sites, earlier, samples, result, Path(out))
    if quarantine is not None:
        kept = [e for e in read_quarantine(quarantine) if e.stage != STAGE]
        write_quarantine(quarantine, kept + result.quarantined)
    return result
