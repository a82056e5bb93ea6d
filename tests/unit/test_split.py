import json

import numpy as np
import pandas as pd
import pytest

from ctcid.config.split import SplitParams
from ctcid.errors import CtcidError
from ctcid.split import (
    class_counts,
    downsample_majority,
    group_folds,
    make_split,
    read_split,
    split_cells,
    write_split,
)
from factory import make_manifest


def paper_labels(seed: int = 0) -> np.ndarray:
    labels = np.zeros(14_166, dtype=np.int64)
    labels[:694] = 1
    return np.random.default_rng(seed).permutation(labels)


def cohort(n_samples: int = 60, seed: int = 1, unlabelled: int = 0) -> pd.DataFrame:
    """A manifest with a heavy-tailed CTC burden per patient, like the simulator's; ``unlabelled``
    detections match no annotated cell (truth NA), though the rule still labels them."""
    rng = np.random.default_rng(seed)
    samples, labels = [], []
    for number in range(n_samples):
        n_cells = int(rng.integers(40, 120))
        n_ctc = min(int(rng.negative_binomial(0.5, 0.5 / (0.5 + 4.0))), n_cells // 2)
        samples += [f"S{number:03d}"] * n_cells
        labels += [1] * n_ctc + [0] * (n_cells - n_ctc)
    truth = np.array(labels, dtype=np.float64)
    if unlabelled:
        truth[rng.choice(len(truth), unlabelled, replace=False)] = np.nan
    return make_manifest(sample=samples, true_label=truth, rule_label=labels, seed=seed)


def labels_of(table: pd.DataFrame, rows) -> np.ndarray:
    return table["true_label"].iloc[rows].to_numpy(dtype=np.int64)


def test_cell_split_reproduces_paper_table_2():
    labels = paper_labels()
    train, test = split_cells(labels, 0.2, seed=42)
    assert class_counts(labels[train]) == {"ctc": 555, "non_ctc": 10_777}
    assert class_counts(labels[test]) == {"ctc": 139, "non_ctc": 2_695}
    balanced = train[downsample_majority(labels[train], seed=42)]
    assert class_counts(labels[balanced]) == {"ctc": 555, "non_ctc": 555}


def test_make_split_by_cell_counts_and_folds():
    table = make_manifest(true_label=paper_labels())
    split = make_split(table, SplitParams(by="cell"), seed=42)
    assert split.counts["train"] == {"ctc": 555, "non_ctc": 10_777}
    assert split.counts["test"] == {"ctc": 139, "non_ctc": 2_695}
    assert split.counts["train_balanced"] == {"ctc": 555, "non_ctc": 555}
    assert not set(split.train) & set(split.test)
    assert set(split.train_balanced) <= set(split.train)
    assert len(split.folds) == 5
    vals = np.concatenate([f.val for f in split.folds])
    assert sorted(vals) == sorted(split.train_balanced)  # every balanced cell validated once
    every = np.concatenate([f.val_all for f in split.folds])
    assert sorted(every) == sorted(split.train)  # every training cell predicted out of fold once
    for fold in split.folds:
        assert not set(fold.train) & set(fold.val)
        assert not set(fold.train_all) & set(fold.val_all)
        assert set(fold.train) <= set(fold.train_all) and set(fold.val) <= set(fold.val_all)
        assert class_counts(labels_of(table, fold.val))["ctc"] in (111, 110, 112)


def test_by_sample_keeps_patients_on_one_side_and_ctc_share():
    table = cohort()
    split = make_split(table, SplitParams(by="sample"), seed=42)
    samples = table["sample"].to_numpy()
    assert not set(samples[split.train]) & set(samples[split.test])
    for fold in split.folds:
        assert not set(samples[fold.train]) & set(samples[fold.val])
        assert not set(samples[fold.train_all]) & set(samples[fold.val_all])
        # the balanced view of a fold holds its own patients' cells only
        assert set(samples[fold.val]) <= set(samples[fold.val_all])
        assert labels_of(table, fold.val).sum() > 0
    overall = table["true_label"].astype(float).mean()
    test_share = labels_of(table, split.test).mean()
    assert 0.5 * overall < test_share < 1.5 * overall
    assert 0.1 < len(split.test) / len(table) < 0.3
    assert split.counts["samples"]["train"] + split.counts["samples"]["test"] == 60


def test_downsample_gives_equal_classes_and_keeps_every_cell_in_the_folds():
    table = cohort()
    down = make_split(table, SplitParams(by="sample"), seed=3)
    assert down.counts["train_balanced"]["ctc"] == down.counts["train_balanced"]["non_ctc"]
    assert down.class_weights == {"non_ctc": 1.0, "ctc": 1.0}
    assert sum(len(f.val_all) for f in down.folds) == len(down.train)
    for counts in down.counts["folds"]:
        assert counts["val"]["ctc"] == counts["val_balanced"]["ctc"]  # every CTC is kept
        assert counts["val"]["non_ctc"] > counts["val_balanced"]["non_ctc"]


def test_split_balance_moved_to_train_negatives():
    with pytest.raises(ValueError, match="train.negatives"):
        SplitParams.model_validate({"balance": "class_weight"})


def test_an_old_split_file_asks_for_a_new_split(tmp_path):
    split = make_split(cohort(), SplitParams(by="sample"), seed=3)
    data = split.to_dict()
    data["folds"] = [{"train": f["train"], "val": f["val"]} for f in data["folds"]]
    path = tmp_path / "split.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CtcidError, match="re-run 'ctcid split'"):
        read_split(path)


def test_unlabelled_rows_excluded_and_counted():
    table = cohort(unlabelled=25)
    split = make_split(table, SplitParams(by="cell"), seed=0)
    unlabelled = set(np.flatnonzero(table["true_label"].isna().to_numpy()))
    used = set(split.train) | set(split.test)
    assert not used & unlabelled
    assert len(used) == len(table) - 25
    assert split.excluded == {"unlabelled": 25, "total_rows": len(table)}


def test_rule_label_source_reads_rule_label():
    table = cohort()
    table["true_label"] = pd.array([pd.NA] * len(table), dtype="Int8")
    split = make_split(table, SplitParams(by="cell", label_source="rule"), seed=0)
    assert split.counts["test"]["ctc"] > 0
    assert split.label_column == "rule_label"


def test_too_few_positive_samples_for_a_sample_split():
    table = cohort()
    burden = table.groupby("sample")["true_label"].sum()
    positive = table["sample"] == burden.idxmax()
    table.loc[~positive, "true_label"] = 0
    with pytest.raises(CtcidError, match="only 1 sample"):
        make_split(table, SplitParams(by="sample"), seed=0)


def test_fewer_positives_than_folds():
    labels = np.zeros(400, dtype=np.int64)
    labels[:6] = 1  # 4 or 5 CTCs end up in training: fewer than 10 folds
    table = make_manifest(true_label=labels)
    with pytest.raises(CtcidError, match="cannot fill 10 folds"):
        make_split(table, SplitParams(by="cell", n_folds=10), seed=0)


def test_fewer_positive_samples_than_folds():
    table = cohort()
    burden = table.groupby("sample")["true_label"].sum()
    keep = burden[burden > 0].index[:5]  # 5 CTC-positive samples, at least one goes to test
    table.loc[~table["sample"].isin(keep), "true_label"] = 0
    with pytest.raises(CtcidError, match="fewer than split.n_folds=5"):
        make_split(table, SplitParams(by="sample", n_folds=5), seed=0)


def test_group_folds_put_a_positive_sample_in_every_fold():
    # one patient with most CTCs, four with one each, many without: the heavy tail in miniature
    groups = np.repeat([f"P{i}" for i in range(20)], 30)
    labels = np.zeros(groups.size, dtype=np.int64)
    labels[:25] = 1
    for patient in range(1, 5):
        labels[patient * 30] = 1
    for seed in range(5):
        folds = group_folds(labels, groups, 5, seed)
        for k in range(5):
            assert labels[folds == k].sum() >= 1
            assert len(set(groups[folds == k]) & set(groups[folds != k])) == 0


def test_crop_index_must_equal_row_number():
    table = cohort()
    table["crop_index"] = table["crop_index"][::-1].to_numpy()
    with pytest.raises(CtcidError, match="crop_index"):
        make_split(table, SplitParams(), seed=0)


def test_split_json_round_trip_follows_the_contract(tmp_path):
    split = make_split(cohort(), SplitParams(), seed=7)
    path = write_split(split, tmp_path / "split" / "split.json")
    data = json.loads(path.read_text())
    assert {"by", "label_source", "seed", "train", "test", "train_balanced", "folds", "counts"} <= set(data)
    assert set(data["counts"]) >= {"train", "test", "train_balanced"}
    assert set(data["folds"][0]) == {"train", "val", "train_all", "val_all"}
    assert all(isinstance(i, int) for i in data["test"])
    again = read_split(path)
    assert np.array_equal(again.test, split.test)
    assert np.array_equal(again.folds[2].val, split.folds[2].val)
    assert again.class_weight_vector().tolist() == [1.0, 1.0]


def test_split_is_deterministic_for_a_seed():
    table = cohort()
    one = make_split(table, SplitParams(), seed=11)
    two = make_split(table, SplitParams(), seed=11)
    assert one.to_dict() == two.to_dict()


def test_split_command_writes_split_json_and_prints_counts(tmp_path):
    from typer.testing import CliRunner

    from ctcid.cli import app

    manifest = tmp_path / "manifest.parquet"
    cohort(unlabelled=5).to_parquet(manifest)
    params = tmp_path / "params.yaml"
    params.write_text("split: {by: sample, n_folds: 3}\n")
    out = tmp_path / "split" / "split.json"
    args = ["split", "--manifest", str(manifest), "--out", str(out), "--params", str(params)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "train_balanced" in result.output
    assert len(read_split(out).folds) == 3
    missing = CliRunner().invoke(app, [*args[:2], str(tmp_path / "none.parquet"), *args[3:]])
    assert missing.exit_code == 1


# --- split.cv: sites (leave-one-site-out) ---------------------------------------------------------


def with_sites(table: pd.DataFrame, n_sites: int = 3) -> pd.DataFrame:
    """Sample k imaged at site k % n_sites, as the simulator does."""
    number = table["sample"].str[1:].astype(int)
    table["site"] = pd.array("site" + (number % n_sites).astype(str), dtype="string")
    return table


def test_leave_one_site_out_gives_one_fold_per_site():
    table = with_sites(cohort())
    split = make_split(table, SplitParams(cv="sites", n_folds=7), seed=42)
    # the test set is the patient-grouped one of cv: samples, over all sites
    plain = make_split(table, SplitParams(), seed=42)
    assert np.array_equal(split.test, plain.test) and np.array_equal(split.train, plain.train)
    assert [f.site for f in split.folds] == ["site0", "site1", "site2"]  # n_folds ignored
    samples, sites = table["sample"].to_numpy(), table["site"].to_numpy()
    for fold in split.folds:
        assert set(sites[fold.val_all]) == {fold.site} and set(sites[fold.val]) == {fold.site}
        assert fold.site not in set(sites[fold.train_all])
        assert not set(samples[fold.train_all]) & set(samples[fold.val_all])  # patient-disjoint
        assert set(fold.train) <= set(fold.train_all) and set(fold.val) <= set(fold.val_all)
        assert class_counts(labels_of(table, fold.val_all))["ctc"] > 0
    every = np.concatenate([f.val_all for f in split.folds])
    assert sorted(every) == sorted(split.train)  # every training cell predicted out of fold once
    assert split.counts["cv"] == "sites"
    assert [entry["site"] for entry in split.counts["folds"]] == ["site0", "site1", "site2"]
    assert sum(split.counts["sites"]["train"].values()) == split.counts["samples"]["train"]
    assert "cv" not in plain.counts and all(f.site is None for f in plain.folds)


def test_site_folds_follow_natural_order():
    table = with_sites(cohort(n_samples=120, seed=4), n_sites=11)
    split = make_split(table, SplitParams(cv="sites"), seed=0)
    assert [f.site for f in split.folds] == [f"site{j}" for j in range(11)]


def test_leave_one_site_out_needs_two_sites():
    table = cohort()  # every sample at the default site
    with pytest.raises(CtcidError, match=r"from 1 site \(site0\).*2 at least.*sites.csv"):
        make_split(table, SplitParams(cv="sites"), seed=0)


def test_leave_one_site_out_needs_split_by_sample():
    with pytest.raises(CtcidError, match="needs split.by: sample"):
        make_split(with_sites(cohort()), SplitParams(by="cell", cv="sites"), seed=0)


def test_leave_one_site_out_needs_ctcs_at_every_site():
    table = with_sites(cohort())
    table.loc[table["site"] == "site2", "true_label"] = 0
    with pytest.raises(CtcidError, match="site 'site2' hold 0 CTC"):
        make_split(table, SplitParams(cv="sites"), seed=0)


def test_leave_one_site_out_needs_a_site_column_and_one_site_per_sample():
    table = with_sites(cohort())
    with pytest.raises(CtcidError, match="no 'site' column"):
        make_split(table.drop(columns="site"), SplitParams(cv="sites"), seed=0)
    table.loc[table.index[:3], "site"] = "site9"  # the first sample's first cells elsewhere
    with pytest.raises(CtcidError, match="several sites"):
        make_split(table, SplitParams(cv="sites"), seed=0)


def test_fold_sites_round_trip_and_an_old_split_json_reads(tmp_path):
    split = make_split(with_sites(cohort()), SplitParams(cv="sites"), seed=5)
    path = write_split(split, tmp_path / "split.json")
    assert [f["site"] for f in json.loads(path.read_text())["folds"]] == ["site0", "site1", "site2"]
    again = read_split(path)
    assert [f.site for f in again.folds] == ["site0", "site1", "site2"]
    assert again.to_dict() == split.to_dict()
    # a split.json from before fold sites: no "site" key, read as None
    old = split.to_dict()
    for fold in old["folds"]:
        del fold["site"]
    path.write_text(json.dumps(old))
    assert [f.site for f in read_split(path).folds] == [None, None, None]
