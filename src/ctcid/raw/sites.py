"""Where each sample was imaged: the optional ``<raw>/sites.csv`` of the raw-data contract.

Two columns, ``sample`` and ``site``. The simulator writes it (``simulate.sites``); a lab adds it
by hand when its training data come from several microscopes, so that ``split.cv: sites`` can
hold out one site per fold. Samples it does not list, and every sample of a folder without it,
belong to :data:`ctcid.contracts.DEFAULT_SITE`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ctcid.contracts import DEFAULT_SITE, SITES_FILE
from ctcid.errors import CtcidError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def write_sites(raw_dir: Path, sites: Mapping[str, str]) -> Path:
    """``sites.csv`` of ``raw_dir``: one row per sample, sorted by sample."""
    path = Path(raw_dir) / SITES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(sites.items())
    path.write_text("sample,site\n" + "".join(f"{sample},{site}\n" for sample, site in rows))
    return path


def read_sites(raw_dir: Path) -> dict[str, str]:
    """Sample -> site from ``raw_dir/sites.csv``; empty when there is none (every sample at DEFAULT_SITE)."""
    path = Path(raw_dir) / SITES_FILE
    if not path.is_file():
        return {}
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise CtcidError(f"{path}: cannot read the sites table ({error}); columns: sample,site") from None
    if list(table.columns) != ["sample", "site"]:
        raise CtcidError(f"{path}: columns must be 'sample,site', got {','.join(table.columns)}")
    bad = [site for site in table["site"] if not _NAME.match(site)]
    if bad:
        raise CtcidError(
            f"{path}: site names must be letters, digits, '_', '.' or '-', got {bad[:3]}; "
            "fix or delete the file"
        )
    repeated = table["sample"][table["sample"].duplicated()].tolist()
    if repeated:
        raise CtcidError(f"{path}: samples listed twice: {repeated[:5]}; give each sample one site")
    return dict(zip(table["sample"], table["site"], strict=True))


def site_of(sites: Mapping[str, str], sample: str) -> str:
    return sites.get(sample, DEFAULT_SITE)
