"""Train/test split, class balancing and cross-validation folds over the manifest.

Two ways to split (``split.by``, see docs/evaluation.md):

* ``cell`` reproduces Guo et al. exactly: a stratified 80/20 split of the crops, then the
  majority class of the training set down-sampled to the size of the minority class.
  Cells of one patient end up on both sides, so test metrics are optimistic.
* ``sample`` (default) keeps every patient's cells on one side with a stratified *group* split,
  so the test set measures what matters clinically: performance on patients never seen.

Two ways to fold the training cells (``split.cv``): ``samples`` (default), ``n_folds`` folds of whole
patients; ``sites``, leave-one-site-out: one fold per site of the training patients (the manifest's
``site`` column), each validating on one site's patients with a model trained on the other sites',
so that model selection rewards what holds on an unseen microscope.

Everything here is a pure function of the labels, the groups and the parameters; indices are
manifest row numbers, which the segment step guarantees equal ``crop_index``. :func:`split_view`
is what ``ctcid split`` prints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from rich.console import Group
from rich.table import Table
from sklearn.model_selection import StratifiedKFold, train_test_split

from ctcid.config.split import SplitParams
from ctcid.config.stage import StageConfig
from ctcid.contracts import DEFAULT_SITE, LABEL_COLUMNS, LabelSource, cell_labels, read_manifest
from ctcid.errors import CtcidError
from ctcid.metrics import prior_shift_threshold
from ctcid.paths import SPLIT_NAME


@dataclass(frozen=True)
class Fold:
    """One CV fold: its patients' rows of ``train_balanced`` and of all of ``train``."""

    train: np.ndarray  # balanced: what the paper's down-sampled fit trains on
    val: np.ndarray  # balanced: early stopping
    train_all: np.ndarray  # every training cell of the fold's training patients (class_weight, resample)
    val_all: np.ndarray  # every training cell of its validation patients: out-of-fold predictions
    site: str | None = None  # split.cv: sites: the site whose patients it validates on


@dataclass(frozen=True)
class Split:
    """The content of split.json; all index arrays hold manifest row numbers (== crop_index)."""

    by: Literal["sample", "cell"]
    label_source: LabelSource
    seed: int
    test_size: float
    train: np.ndarray
    test: np.ndarray
    train_balanced: np.ndarray
    folds: tuple[Fold, ...]
    # loss weights for labels (0, 1) = (non_ctc, ctc), computed on train_balanced as
    # n / (2 * n_class): (1.0, 1.0) after down-sampling.
    class_weights: Mapping[str, float]
    counts: Mapping[str, Any]
    excluded: Mapping[str, int] = field(default_factory=dict)

    @property
    def label_column(self) -> str:
        return LABEL_COLUMNS[self.label_source]

    def class_weight_vector(self) -> np.ndarray:
        """Weights indexed by label (0 non-CTC, 1 CTC), ready for a weighted loss."""
        return np.array([self.class_weights["non_ctc"], self.class_weights["ctc"]], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "label_source": self.label_source,
            "seed": self.seed,
            "test_size": self.test_size,
            "train": _ints(self.train),
            "test": _ints(self.test),
            "train_balanced": _ints(self.train_balanced),
            "folds": [
                {"train": _ints(f.train), "val": _ints(f.val), "train_all": _ints(f.train_all),
                 "val_all": _ints(f.val_all), **({} if f.site is None else {"site": f.site})}
                for f in self.folds
            ],
            "class_weights": dict(self.class_weights),
            "counts": self.counts,
            "excluded": dict(self.excluded),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Split:
        def arr(values: Sequence[int]) -> np.ndarray:
            return np.asarray(values, dtype=np.int64)

        return cls(
            by=data["by"],
            label_source=data["label_source"],
            seed=int(data["seed"]),
            test_size=float(data.get("test_size", 0.2)),
            train=arr(data["train"]),
            test=arr(data["test"]),
            train_balanced=arr(data["train_balanced"]),
            folds=tuple(_fold(f, arr) for f in data["folds"]),
            class_weights=dict(data.get("class_weights", {"non_ctc": 1.0, "ctc": 1.0})),
            counts=data.get("counts", {}),
            excluded=dict(data.get("excluded", {})),
        )


def _fold(data: Mapping[str, Any], arr: Any) -> Fold:
    if "train_all" not in data:
        raise CtcidError(
            f"{SPLIT_NAME} predates folds over all training cells; re-run 'ctcid split' (dvc repro)"
        )
    site = data.get("site")
    return Fold(
        arr(data["train"]),
        arr(data["val"]),
        arr(data["train_all"]),
        arr(data["val_all"]),
        None if site is None else str(site),
    )


def _ints(values: np.ndarray) -> list[int]:
    return [int(v) for v in values]


def class_counts(labels: np.ndarray) -> dict[str, int]:
    labels = np.asarray(labels)
    ctc = int((labels == 1).sum())
    return {"ctc": ctc, "non_ctc": int(labels.size - ctc)}


def _check_two_classes(labels: np.ndarray, what: str, minimum: int) -> None:
    counts = class_counts(labels)
    if counts["ctc"] < minimum or counts["non_ctc"] < minimum:
        raise CtcidError(
            f"{what}: {counts['ctc']} CTC and {counts['non_ctc']} non-CTC labelled cells; at least "
            f"{minimum} of each are needed. Add samples with CTCs or check split.label_source."
        )


def split_cells(labels: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's stratified cell-level split; returns positions (train, test), each sorted."""
    labels = np.asarray(labels)
    _check_two_classes(labels, "split by cell", 2)
    train, test = train_test_split(
        np.arange(labels.size), test_size=test_size, stratify=labels, random_state=seed
    )
    return np.sort(train), np.sort(test)


def group_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Assign whole groups (samples) to ``n_folds`` folds, balancing CTC and non-CTC counts.

    A greedy "largest first" partition: samples with CTCs, most CTCs first, each go to the fold
    with the fewest CTCs so far (then fewest cells); then CTC-free samples, largest first, each go
    to the fold with the fewest non-CTC cells. Unlike StratifiedGroupKFold, which balances class
    *shares* and can leave a fold without a single CTC when CTC burden is heavy-tailed, this
    guarantees a CTC-positive sample in every fold whenever there are at least ``n_folds`` of them.
    The seed orders samples of equal size. Returns the fold number of every position.
    """
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    positive = np.asarray(labels) == 1
    pos = np.bincount(inverse, weights=positive, minlength=names.size)
    neg = np.bincount(inverse, weights=~positive, minlength=names.size)
    shuffled = np.random.default_rng(seed).permutation(names.size)
    fold_pos = np.zeros(n_folds)
    fold_neg = np.zeros(n_folds)
    fold_of_group = np.empty(names.size, dtype=np.int64)
    by_ctc = shuffled[np.argsort(-pos[shuffled], kind="stable")]
    for g in by_ctc[pos[by_ctc] > 0]:
        fold = np.lexsort((fold_pos + fold_neg, fold_pos))[0]
        fold_of_group[g] = fold
        fold_pos[fold] += pos[g]
        fold_neg[fold] += neg[g]
    by_size = shuffled[np.argsort(-neg[shuffled], kind="stable")]
    for g in by_size[pos[by_size] == 0]:
        fold = np.lexsort((fold_pos, fold_neg))[0]
        fold_of_group[g] = fold
        fold_neg[fold] += neg[g]
    return fold_of_group[inverse]


def split_samples(
    labels: np.ndarray, groups: np.ndarray, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified group split: every sample's cells on one side; returns positions (train, test).

    :func:`group_folds` partitions the samples into ``round(1 / test_size)`` folds of similar CTC
    and non-CTC counts. CTC burden is heavy-tailed (a few patients carry most CTCs), so the folds
    still differ; the test set is the fold whose cell count and CTC count are together closest to
    ``test_size`` of the total.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    _check_two_classes(labels, "split by sample", 2)
    positive_samples = np.unique(groups[labels == 1])
    n_splits = max(2, round(1.0 / test_size))
    if positive_samples.size < 2:
        raise CtcidError(
            f"split by sample: only {positive_samples.size} sample(s) contain CTC-labelled cells; "
            "at least 2 are needed so that both train and test hold CTCs. Add CTC-positive samples "
            "or set split.by: cell (the paper's cell-level split)."
        )
    n_groups = np.unique(groups).size
    if n_groups < n_splits:
        raise CtcidError(
            f"split by sample: {n_groups} samples cannot form a test set of {test_size:.0%} of "
            f"the samples ({n_splits} groups needed); add samples or use split.by: cell"
        )
    folds = group_folds(labels, groups, n_splits, seed)
    n_pos = int((labels == 1).sum())
    best: tuple[float, int] | None = None
    for fold in range(n_splits):
        test = folds == fold
        test_pos = int((labels[test] == 1).sum())
        if not (0 < test_pos < n_pos) or np.all(labels[test] == 1) or np.all(labels[~test] == 1):
            continue
        cost = abs(test.mean() - test_size) + abs(test_pos / n_pos - test_size)
        if best is None or cost < best[0]:
            best = (cost, fold)
    if best is None:
        raise CtcidError(
            f"split by sample: no grouping of the {n_groups} samples puts both classes on both "
            f"sides ({positive_samples.size} CTC-positive samples). Add samples or use split.by: cell."
        )
    return np.flatnonzero(folds != best[1]), np.flatnonzero(folds == best[1])


def downsample_majority(labels: np.ndarray, seed: int) -> np.ndarray:
    """Positions keeping every minority-class cell and an equal random draw of the majority class."""
    labels = np.asarray(labels)
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels != 1)
    minority, majority = (pos, neg) if pos.size <= neg.size else (neg, pos)
    rng = np.random.default_rng(seed)
    kept = rng.choice(majority, size=minority.size, replace=False)
    return np.sort(np.concatenate([minority, kept]))


def balanced_class_weights(labels: np.ndarray) -> dict[str, float]:
    """sklearn's 'balanced' weights n / (2 * n_class), so each class contributes half the loss."""
    counts = class_counts(labels)
    n = counts["ctc"] + counts["non_ctc"]
    return {
        name: (n / (2.0 * c) if c else 0.0)
        for name, c in (("non_ctc", counts["non_ctc"]), ("ctc", counts["ctc"]))
    }


def make_folds(
    labels: np.ndarray, groups: np.ndarray | None, n_folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified CV folds, by :func:`group_folds` when ``groups`` is given; positions (train, val)."""
    labels = np.asarray(labels)
    n_pos = int((labels == 1).sum())
    n_neg = int(labels.size - n_pos)
    if groups is None:
        if min(n_pos, n_neg) < n_folds:
            raise CtcidError(
                f"cross-validation: {n_pos} CTC and {n_neg} non-CTC training cells cannot fill "
                f"{n_folds} folds; lower split.n_folds or add labelled CTCs"
            )
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        folds = splitter.split(np.zeros(labels.size), labels)
    else:
        groups = np.asarray(groups)
        pos_samples = np.unique(groups[labels == 1]).size
        if pos_samples < n_folds:
            raise CtcidError(
                f"cross-validation by sample: only {pos_samples} training samples contain CTCs, "
                f"fewer than split.n_folds={n_folds}, so some validation folds would hold no CTC; "
                "lower split.n_folds, add CTC-positive samples or use split.by: cell"
            )
        fold_of = group_folds(labels, groups, n_folds, seed)
        folds = ((np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(n_folds))
    result = []
    for number, (train, val) in enumerate(folds):
        for part, idx in (("train", train), ("val", val)):
            _check_fold_part(labels[idx], number, part)
        result.append((np.sort(train), np.sort(val)))
    return result


_FOLDS_HINT = "Lower split.n_folds or add CTC-positive samples."
_SITES_HINT = "Add CTC-positive samples to the sites short of them or set split.cv: samples."


def _natural(name: str) -> tuple[object, ...]:
    """Sort key putting site2 before site10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def site_folds(
    labels: np.ndarray, sites: np.ndarray
) -> tuple[list[str], list[tuple[np.ndarray, np.ndarray]]]:
    """Leave-one-site-out folds: one per site in ``sites``, in natural order; positions (train, val).

    Fold ``k`` validates on every cell of site ``k`` and trains on the other sites' cells. Every
    site's cells need both classes (its fold's validation) and there must be two sites at least.
    """
    labels = np.asarray(labels)
    sites = np.asarray(sites)
    names = sorted({str(site) for site in sites}, key=_natural)
    if len(names) < 2:
        found = names[0] if names else "none"
        raise CtcidError(
            f"split.cv: sites: the training samples come from {len(names)} site ({found}); "
            "leave-one-site-out needs 2 at least. List each sample's site in <raw>/sites.csv (the "
            "simulator writes it with simulate.sites >= 2) and re-run 'ctcid segment', or set "
            "split.cv: samples"
        )
    folds = []
    for number, name in enumerate(names):
        val = np.flatnonzero(sites == name)
        counts = class_counts(labels[val])
        if not counts["ctc"] or not counts["non_ctc"]:
            raise CtcidError(
                f"split.cv: sites: the training patients of site {name!r} hold {counts['ctc']} CTC and "
                f"{counts['non_ctc']} non-CTC cells, so its fold cannot measure both sensitivity and "
                f"specificity; add CTC-positive samples of site {name!r} (simulated: more samples), "
                "or set split.cv: samples"
            )
        train = np.flatnonzero(sites != name)
        _check_fold_part(labels[train], number, "train", _SITES_HINT)
        folds.append((train, val))
    return names, folds


def _check_fold_part(labels: np.ndarray, number: int, part: str, hint: str = _FOLDS_HINT) -> None:
    counts = class_counts(labels)
    if not counts["ctc"] or not counts["non_ctc"]:
        raise CtcidError(
            f"cross-validation fold {number} {part} holds {counts['ctc']} CTC and "
            f"{counts['non_ctc']} non-CTC cells; both classes are needed. {hint}"
        )


def _sample_sites(manifest: pd.DataFrame, labelled: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The ``site`` of every labelled row, checked to be one site per sample."""
    if "site" not in manifest.columns:
        raise CtcidError(
            "manifest has no 'site' column needed by split.cv: sites; re-run 'ctcid segment' "
            "(it reads <raw>/sites.csv) or set split.cv: samples"
        )
    site = manifest["site"].astype(object).fillna(DEFAULT_SITE).astype(str).to_numpy()[labelled]
    per_sample = pd.Series(site).groupby(groups).nunique()
    mixed = per_sample.index[per_sample > 1].tolist()
    if mixed:
        raise CtcidError(
            f"manifest: samples {mixed[:5]} have cells of several sites; a sample is imaged at one "
            "site. Fix <raw>/sites.csv and re-run 'ctcid segment'"
        )
    return site


def make_split(manifest: pd.DataFrame, params: SplitParams, seed: int) -> Split:
    """Split the labelled rows of ``manifest`` as ``params`` asks (see module docstring)."""
    if "crop_index" in manifest.columns and not np.array_equal(
        manifest["crop_index"].to_numpy(), np.arange(len(manifest))
    ):
        raise CtcidError("manifest crop_index does not equal the row number; re-run 'ctcid segment'")
    if params.by == "sample" and "sample" not in manifest.columns:
        raise CtcidError("manifest has no 'sample' column needed by split.by: sample")
    if params.cv == "sites" and params.by != "sample":
        raise CtcidError(
            "split.cv: sites holds out whole sites of patients, so it needs split.by: sample "
            "(split.by: cell puts a patient's cells on both sides); set split.by: sample or split.cv: samples"
        )
    all_labels = cell_labels(manifest, params.label_source)
    labelled = np.flatnonzero(all_labels.notna().to_numpy())
    labels = all_labels.iloc[labelled].to_numpy(dtype=np.int64)
    groups = manifest["sample"].astype(str).to_numpy()[labelled] if params.by == "sample" else None
    sites = None if params.cv != "sites" or groups is None else _sample_sites(manifest, labelled, groups)

    if groups is None:
        train_pos, test_pos = split_cells(labels, params.test_size, seed)
    else:
        train_pos, test_pos = split_samples(labels, groups, params.test_size, seed)

    # Folds are drawn over all training cells, so every strategy of train.negatives sees the same
    # patients in each fold and out-of-fold predictions cover every training cell; the balanced
    # view of a fold is its patients' share of the one-off down-sampled set.
    balanced_pos = train_pos[downsample_majority(labels[train_pos], seed)]
    fold_sites: list[str | None]
    if sites is None:
        folds_pos = make_folds(
            labels[train_pos], None if groups is None else groups[train_pos], params.n_folds, seed
        )
        fold_sites = [None] * len(folds_pos)
        hint = _FOLDS_HINT
    else:  # leave-one-site-out: split.n_folds does not apply
        names, folds_pos = site_folds(labels[train_pos], sites[train_pos])
        fold_sites = list(names)
        hint = _SITES_HINT
    in_balanced = np.isin(train_pos, balanced_pos)

    def rows(positions: np.ndarray) -> np.ndarray:
        return labelled[positions].astype(np.int64)

    folds = []
    for number, ((tr, va), site) in enumerate(zip(folds_pos, fold_sites, strict=True)):
        bal_tr, bal_va = train_pos[tr][in_balanced[tr]], train_pos[va][in_balanced[va]]
        for part, idx in (("train", bal_tr), ("val", bal_va)):
            _check_fold_part(labels[idx], number, f"balanced {part}", hint)
        folds.append(Fold(rows(bal_tr), rows(bal_va), rows(train_pos[tr]), rows(train_pos[va]), site))
    counts: dict[str, Any] = {
        "train": class_counts(labels[train_pos]),
        "test": class_counts(labels[test_pos]),
        "train_balanced": class_counts(labels[balanced_pos]),
        "folds": [
            {
                "train": class_counts(labels[train_pos[tr]]),
                "val": class_counts(labels[train_pos[va]]),
                "train_balanced": class_counts(labels[train_pos[tr][in_balanced[tr]]]),
                "val_balanced": class_counts(labels[train_pos[va][in_balanced[va]]]),
            }
            for tr, va in folds_pos
        ],
    }
    if groups is not None:
        counts["samples"] = {
            "train": int(np.unique(groups[train_pos]).size),
            "test": int(np.unique(groups[test_pos]).size),
        }
    if sites is not None:
        assert groups is not None
        counts["cv"] = "sites"  # leave-one-site-out: one fold per training site, split.n_folds ignored
        for entry, site in zip(counts["folds"], fold_sites, strict=True):
            entry["site"] = site
        counts["sites"] = {
            part: {
                name: int(np.unique(groups[positions][sites[positions] == name]).size)
                for name in sorted(set(sites[positions]), key=_natural)
            }
            for part, positions in (("train", train_pos), ("test", test_pos))
        }  # samples per site on each side
    return Split(
        by=params.by,
        label_source=params.label_source,
        seed=seed,
        test_size=params.test_size,
        train=rows(train_pos),
        test=rows(test_pos),
        train_balanced=rows(balanced_pos),
        folds=tuple(folds),
        class_weights=balanced_class_weights(labels[balanced_pos]),
        counts=counts,
        excluded={"unlabelled": int(len(manifest) - labelled.size), "total_rows": int(len(manifest))},
    )


def write_split(split: Split, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one top-level key per line, each index list on one line: diffable without 10^4 lines
    body = ",\n".join(f" {json.dumps(key)}: {json.dumps(value)}" for key, value in split.to_dict().items())
    path.write_text("{\n" + body + "\n}\n")
    return path


def split_view(split: Split, path: str | Path) -> Group:
    """What ``ctcid split`` prints: each set's classes, then what was left out and the folds."""
    table = Table(title=f"split by {split.by} ({split.label_source} labels) -> {path}")
    for column in ("set", "CTC", "non-CTC"):
        table.add_column(column, justify="right" if column != "set" else "left")
    for name in ("train", "test", "train_balanced"):
        table.add_row(name, str(split.counts[name]["ctc"]), str(split.counts[name]["non_ctc"]))
    excluded = split.excluded
    return Group(
        table,
        f"{excluded['unlabelled']} of {excluded['total_rows']} cells unlabelled and excluded; "
        f"{len(split.folds)} CV folds",
    )


def read_split(path: str | Path) -> Split:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise CtcidError(f"{path}: cannot read split file ({error.strerror}); run 'ctcid split'") from None
    except json.JSONDecodeError as error:
        raise CtcidError(f"{path}: not valid JSON ({error}); re-run 'ctcid split'") from None
    return Split.from_dict(data)


class SplitConfig(StageConfig):
    """What the split stage reads: its section and the seed of every draw."""

    seed: int
    split: SplitParams


def split_stage(manifest_path: str | Path, out: str | Path, params: SplitConfig) -> Split:
    """The ``split`` stage: the manifest's labelled cells split as ``split.*`` asks, written to ``out``."""
    params = SplitConfig.project(params)
    split = make_split(read_manifest(manifest_path), params.split, params.seed)
    write_split(split, out)
    return split


def counting_threshold(split: Split) -> float:
    """Cut-off for counting CTCs per patient: the training population's prevalence, prior-corrected.

    The operating threshold is chosen for sensitivity on balanced out-of-fold predictions; applied
    to every detection of a patient, where CTCs are a few per cent, it over-counts by the false
    positives of thousands of leukocytes. Counting wants the fewest errors at the real prevalence.
    """
    train = split.counts.get("train", {})
    ctc, non_ctc = int(train.get("ctc", 0)), int(train.get("non_ctc", 0))
    if ctc == 0 or non_ctc == 0:
        return 0.5
    return prior_shift_threshold(ctc / (ctc + non_ctc))
