"""The training levers that teach a CNN the CTC criterion (DAPI+, CD45-negative, >= 3 CEP8 copies):

* :func:`~ctcid.model.dataset.cell_facts`: each crop's CEP8 copies, CD45 status and hard-negative flag;
* ``CropBatches(hard=True)``: every CTC and every hard negative in each epoch, other negatives drawn anew;
* :class:`~ctcid.model.trainer.AuxiliaryHeads`: copies and CD45 predicted from the pooled features,
  attached for the fit only;
* :class:`~ctcid.model.counterfactual.CounterfactualSource`: a fit's training crops with their
  label-consistent counterfactuals appended;
* the CV plumbing (``fold_training_rows``, ``cross_validate(extend=...)``).

Cells and crops come from the test-data factory; the behavioural test of the levers together is
tests/model/test_criterion_levers.py.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ctcid.contracts import BACKGROUND_COLUMNS, SCALE_COLUMNS
from ctcid.errors import CtcidError
from ctcid.intensity import manifest_levels
from ctcid.model.backbones import ModelSpec, build_classifier
from ctcid.model.counterfactual import CounterfactualSource, counterfactual_source, criterion_label
from ctcid.model.cv import cross_validate, fold_training_rows
from ctcid.model.dataset import (
    MAX_COPIES,
    CellFacts,
    CropBatches,
    LabelledCrops,
    Normalisation,
    cell_facts,
    load_labelled_crops,
    read_crops,
)
from ctcid.model.pixels import CropPixels
from ctcid.model.trainer import AuxiliaryHeads, FitOptions, fit, seed_everything
from ctcid.split import Fold
from factory import CROP_SIZE, INPUT_SIZE, draw_cells, draw_crops, make_manifest, tiny_params

CHANNELS = ("DAPI", "CEP8", "CD45")
DAPI, CEP8, CD45 = range(3)
THRESHOLD = 0.15  # cd45_score of the factory: 0.5-1.5 on CD45-positive cells, below 0.05 elsewhere
MIX = ("ctc", "leukocyte", "diploid_cd45neg", "aneuploid_cd45pos", "debris", "ctc", "diploid_cd45neg")


def cells_and_crops(n: int, seed: int, types=MIX) -> tuple[np.ndarray, pd.DataFrame]:
    """Raw crops (row i = manifest row i) of ``n`` cells cycling through ``types``, and their manifest."""
    rng = np.random.default_rng(seed)
    drawn = draw_cells([types[i % len(types)] for i in range(n)], rng)
    return draw_crops(drawn, CROP_SIZE, rng), make_manifest(cells=drawn, seed=seed)


def labelled(crops: np.ndarray, manifest: pd.DataFrame, rows: np.ndarray, levels=None) -> LabelledCrops:
    """The crops of manifest ``rows`` as a fit gets them: resized, labelled, with their facts."""
    rows = np.asarray(rows, dtype=np.int64)
    labels = manifest["true_label"].to_numpy(dtype=np.int64)[rows]
    pixels = CropPixels.stored(crops, rows, INPUT_SIZE, levels)
    return LabelledCrops(pixels, torch.as_tensor(labels), rows, cell_facts(manifest, rows, labels, THRESHOLD))


def options(**changes: object) -> FitOptions:
    values: dict[str, object] = dict(
        epochs=1, patience=1, batch_size=16, learning_rate=1e-3, weight_decay=1e-4, augment=False,
        intensity_jitter=0.0, seed=0,
    )
    return FitOptions(**(values | changes))  # type: ignore[arg-type]


# --- cell facts -----------------------------------------------------------------------------------

# rows: annotated CTC the segment step under-counts; annotated diploid it over-counts; annotated
# leukocyte whose CD45 it misses; an unannotated CD45+ cell; an unannotated cell with 11 spots;
# an annotated cell with 12 copies
ANNOTATED = [True, True, True, False, False, True]
TRUE_CEP8 = [4, 2, 2, None, None, 12]
TRUE_CD45 = ["negative", "negative", "positive", None, None, "negative"]
SPOTS = [3, 4, 2, 3, 11, 5]
CD45_SCORE = [0.01, 0.02, 0.05, 0.9, 0.0, 0.1]
LABELS = np.array([1, 0, 0, 0, 1, 0])


@pytest.fixture(scope="module")
def facts_manifest() -> pd.DataFrame:
    return make_manifest(
        matched=ANNOTATED,
        true_cep8=pd.array(TRUE_CEP8, dtype="Int16"),
        true_cd45=pd.array(TRUE_CD45, dtype="string"),
        cep8_spots=np.array(SPOTS, dtype=np.int16),
        cd45_score=np.array(CD45_SCORE, dtype=np.float32),
    )


def test_the_annotation_wins_where_present_and_the_segment_step_answers_where_it_is_na(
    facts_manifest: pd.DataFrame,
) -> None:
    facts = cell_facts(facts_manifest, np.arange(6), LABELS, THRESHOLD)
    assert facts.copies.dtype == facts.cd45_positive.dtype == torch.float32 and facts.hard.dtype == torch.bool
    # annotated copies 4, 2, 2, 12 -> 8; unannotated: the spot counts 3 and 11 -> 8
    np.testing.assert_array_equal(facts.copies.numpy(), [4, 2, 2, 3, MAX_COPIES, MAX_COPIES])
    # annotated negative, negative, positive (though the score says negative), negative;
    # unannotated: cd45_score 0.9 >= 0.15 is positive, 0.0 negative
    np.testing.assert_array_equal(facts.cd45_positive.numpy(), [0, 0, 1, 1, 0, 0])


def test_hard_negatives_are_non_ctcs_the_segment_step_calls_cd45_negative(
    facts_manifest: pd.DataFrame,
) -> None:
    facts = cell_facts(facts_manifest, np.arange(6), LABELS, THRESHOLD)
    # row 2 is annotated CD45-positive but called negative: it looks like a CTC to the pipeline
    np.testing.assert_array_equal(facts.hard.numpy(), [False, True, True, False, False, True])
    # a stricter threshold calls row 3 (score 0.9) negative too
    stricter = cell_facts(facts_manifest, np.arange(6), LABELS, 1.0)
    np.testing.assert_array_equal(stricter.hard.numpy(), [False, True, True, True, False, True])


def test_facts_follow_the_rows_asked_for_and_travel_with_the_crops(facts_manifest: pd.DataFrame) -> None:
    full = cell_facts(facts_manifest, np.arange(6), LABELS, THRESHOLD)
    rows = np.array([5, 0, 3])
    some = cell_facts(facts_manifest, rows, LABELS[rows], THRESHOLD)
    picked = full.take(torch.from_numpy(rows))
    for name in ("copies", "cd45_positive", "hard"):
        assert torch.equal(getattr(some, name), getattr(picked, name)), name

    data = LabelledCrops(torch.zeros(6, 3, 2, 2), torch.as_tensor(LABELS), np.arange(6) + 10, full)
    subset = data.subset([15, 10])
    assert torch.equal(subset.facts.copies, full.copies[[5, 0]])  # type: ignore[union-attr]
    joined = data.extended(subset)
    assert len(joined) == 8 and joined.crop_index.tolist()[-2:] == [15, 10]
    assert torch.equal(joined.facts.hard, torch.cat([full.hard, full.hard[[5, 0]]]))  # type: ignore[union-attr]
    bare = LabelledCrops(data.pixels, data.labels, data.crop_index)
    with pytest.raises(ValueError, match="facts"):
        data.extended(bare)


def test_loading_with_a_cd45_threshold_attaches_the_facts(tmp_path: Path) -> None:
    crops, manifest = cells_and_crops(14, seed=1)
    np.save(tmp_path / "crops.npy", crops)
    rows = np.array([9, 2, 4])
    plain = load_labelled_crops(tmp_path / "crops.npy", manifest, rows, "truth", INPUT_SIZE)
    assert plain.facts is None
    loaded = load_labelled_crops(tmp_path / "crops.npy", manifest, rows, "truth", INPUT_SIZE, None, THRESHOLD)
    expected = cell_facts(manifest, rows, loaded.labels.numpy(), THRESHOLD)
    for name in ("copies", "cd45_positive", "hard"):
        assert torch.equal(getattr(loaded.facts, name), getattr(expected, name)), name
    np.testing.assert_array_equal(loaded.facts.copies.numpy(), manifest["true_cep8"].to_numpy(float)[rows])  # type: ignore[union-attr]


# --- hard-negative epochs -------------------------------------------------------------------------


def hard_data(positives: int, hard: int, others: int, seed: int = 0) -> LabelledCrops:
    """Crops whose every pixel is their position, classes shuffled; the first negatives are hard."""
    n = positives + hard + others
    labels = np.array([1] * positives + [0] * (hard + others))
    flags = np.array([False] * positives + [True] * hard + [False] * others)
    order = np.random.default_rng(seed).permutation(n)
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone()
    facts = CellFacts(torch.full((n,), 2.0), torch.zeros(n), torch.from_numpy(flags[order]))
    return LabelledCrops(images, torch.from_numpy(labels[order]), np.arange(n), facts)


def hard_batches(data: LabelledCrops, seed: int, batch_size: int = 4, **kwargs: object) -> CropBatches:
    generator = torch.Generator().manual_seed(seed)
    return CropBatches(
        data, batch_size, training=True, generator=generator, augmented=False, hard=True, **kwargs
    )


def epochs(loader: CropBatches, n: int) -> list[list[int]]:
    """The rows of ``n`` epochs, each checked against its batches' images and labels."""
    out = []
    for _ in range(n):
        rows = []
        batches = 0
        for positions, images, labels in loader.with_rows():
            assert torch.equal(images[:, 0, 0, 0], positions.float())  # the rows index the data
            assert torch.equal(labels, loader.data.labels[positions])
            rows += positions.tolist()
            batches += 1
        assert batches == len(loader)
        out.append(rows)
    return out


def test_every_epoch_holds_each_ctc_and_hard_negative_once_and_as_many_other_negatives_as_ctcs() -> None:
    data = hard_data(positives=6, hard=4, others=20)
    positive = set(np.flatnonzero(data.labels.numpy() == 1).tolist())
    hard = set(np.flatnonzero(data.facts.hard.numpy()).tolist())  # type: ignore[union-attr]
    seen = epochs(hard_batches(data, seed=0), 5)
    drawn = []
    for rows in seen:
        counts = Counter(rows)
        assert max(counts.values()) == 1 and len(rows) == 16  # 6 CTCs, 4 hard, 6 others; no row twice
        assert positive | hard <= set(rows)
        others = set(rows) - positive - hard
        assert len(others) == 6
        drawn.append(frozenset(others))
    assert len(set(drawn)) > 1  # the other negatives are drawn anew


def test_with_fewer_other_negatives_than_ctcs_every_crop_is_in_every_epoch() -> None:
    data = hard_data(positives=6, hard=3, others=2)
    for rows in epochs(hard_batches(data, seed=1), 3):
        assert sorted(rows) == list(range(11))


def test_hard_epochs_repeat_with_the_seed() -> None:
    data = hard_data(positives=5, hard=4, others=30)
    first = epochs(hard_batches(data, seed=7), 3)
    assert epochs(hard_batches(data, seed=7), 3) == first
    assert epochs(hard_batches(data, seed=8), 3) != first
    assert len({tuple(rows) for rows in first}) == 3  # and every epoch is shuffled anew


def test_hard_negatives_need_the_facts_and_training_batches() -> None:
    data = hard_data(positives=4, hard=2, others=6)
    bare = LabelledCrops(data.pixels, data.labels, data.crop_index)
    with pytest.raises(ValueError, match="facts"):
        hard_batches(bare, seed=0)
    with pytest.raises(ValueError, match="only training batches"):
        CropBatches(data, 4, hard=True)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    with pytest.raises(ValueError, match="facts"):
        fit(model, bare, None, options(negatives="hard"), show_progress=False)


def test_batches_without_training_come_in_order_with_their_rows() -> None:
    data = hard_data(positives=3, hard=2, others=4)
    rows = [r.tolist() for r, _, _ in CropBatches(data, 4).with_rows()]
    assert rows == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]


# --- auxiliary heads ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_data() -> LabelledCrops:
    crops, manifest = cells_and_crops(32, seed=2)
    return labelled(crops, manifest, np.arange(32))


def fitted_resnet(data: LabelledCrops, **changes: object) -> nn.Module:
    seed_everything(0)
    model = build_classifier("resnet18", Normalisation.fit(data.images), input_size=INPUT_SIZE)
    return fit(model, data, None, options(**changes), show_progress=False).model


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_a_fit_with_auxiliary_heads_returns_the_bare_classifier(small_data: LabelledCrops) -> None:
    plain = fitted_resnet(small_data, aux_weight=0.0).state_dict()
    model = fitted_resnet(small_data, aux_weight=1.0)
    state = model.state_dict()
    assert state.keys() == plain.keys()
    assert not model.backbone.fc._forward_pre_hooks and no_hooks(model)
    # the heads' loss reached the shared weights: the same seed without them trains otherwise
    assert not all(torch.equal(state[k], plain[k]) for k in state)


def test_the_heads_hook_goes_even_when_the_fit_fails(small_data: LabelledCrops) -> None:
    seed_everything(0)
    model = build_classifier("resnet18", Normalisation.fit(small_data.images), input_size=INPUT_SIZE)

    def stop(_metrics: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(model, small_data, None, options(aux_weight=1.0, epochs=2), on_epoch=stop, show_progress=False)
    assert no_hooks(model)


def test_auxiliary_heads_need_the_facts(small_data: LabelledCrops) -> None:
    bare = LabelledCrops(small_data.pixels, small_data.labels, small_data.crop_index)
    model = build_classifier("resnet18", Normalisation.fit(bare.images), input_size=INPUT_SIZE)
    with pytest.raises(CtcidError, match="aux_weight"):
        fit(model, bare, None, options(aux_weight=0.5), show_progress=False)
    assert no_hooks(model)
    fit(model, bare, None, options(aux_weight=0.0), show_progress=False)  # without heads, no facts needed


def test_the_heads_read_the_last_linear_layers_input_and_score_copies_in_units_of_two() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 2))
    heads = AuxiliaryHeads(model)
    assert heads.head.in_features == 16 and len(model[3]._forward_pre_hooks) == 1
    facts = CellFacts(torch.tensor([2.0, 4.0]), torch.tensor([0.0, 1.0]), torch.zeros(2, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="forward pass"):
        heads.loss(facts)
    model(torch.randn(2, 3, 2, 2))
    with torch.no_grad():
        heads.head.weight.zero_()
        heads.head.bias.copy_(torch.tensor([1.0, 0.0]))  # predicts 2 copies (1 in units of 2), logit 0
    # smooth L1: 0 for 2 copies, |2 - 1| - 0.5 for 4; cross-entropy of logit 0: log 2 either way
    assert heads.loss(facts).item() == pytest.approx(0.25 + math.log(2), abs=1e-6)
    heads.detach_hook()
    assert not model[3]._forward_pre_hooks
    classifier = build_classifier("resnet18", Normalisation((0.0,) * 3, (1.0,) * 3))
    assert AuxiliaryHeads(classifier).head.in_features == classifier.backbone.fc.in_features == 512


def test_the_auxiliary_loss_falls_on_facts_the_image_shows() -> None:
    torch.manual_seed(0)
    n = 64
    copies = torch.randint(0, 7, (n,)).float()
    cd45 = (torch.rand(n) < 0.5).float()
    images = 0.1 * torch.randn(n, 3, 2, 2)
    images[:, CEP8] += copies.view(-1, 1, 1) / 3  # brighter CEP8 with more copies
    images[:, CD45] += 2 * cd45.view(-1, 1, 1) - 1
    facts = CellFacts(copies, cd45, torch.zeros(n, dtype=torch.bool))
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 2))
    heads = AuxiliaryHeads(model)
    optimiser = torch.optim.Adam([*model.parameters(), *heads.parameters()], lr=1e-2)
    losses = []
    for _ in range(80):
        model(images)
        loss = heads.loss(facts)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert np.all(np.diff(losses[:10]) < 0)  # falling from the first steps


# --- counterfactual source ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort() -> tuple[np.ndarray, pd.DataFrame]:
    """Crops and manifest of 56 cells whose fields have their own levels (background, scale)."""
    crops, manifest = cells_and_crops(56, seed=4)
    gain = np.random.default_rng(5).uniform(0.5, 2.0, (len(manifest), 1))
    manifest[list(SCALE_COLUMNS)] = (manifest[list(SCALE_COLUMNS)].to_numpy() * gain).astype(np.float32)
    manifest[list(BACKGROUND_COLUMNS)] = (manifest[list(BACKGROUND_COLUMNS)].to_numpy() * gain).astype(
        np.float32
    )
    return crops, manifest


# the fit's training cells; rows 42-55 (CTCs and look-alikes among them) are not
TRAIN_ROWS = np.arange(0, 42)


def source_for(cohort, per_ctc: float = 2.0, standardised: bool = True) -> CounterfactualSource:
    crops, manifest = cohort
    levels = manifest_levels(manifest, CHANNELS) if standardised else None
    return CounterfactualSource(crops, manifest, levels, CHANNELS, THRESHOLD, INPUT_SIZE, per_ctc)


@pytest.fixture(scope="module")
def train(cohort) -> LabelledCrops:
    crops, manifest = cohort
    return labelled(crops, manifest, TRAIN_ROWS, manifest_levels(manifest, CHANNELS))


@pytest.fixture(scope="module")
def extended(cohort, train) -> LabelledCrops:
    return source_for(cohort)(train, seed=3)


def appended(extended: LabelledCrops, train: LabelledCrops) -> LabelledCrops:
    return extended.take(torch.arange(len(train), len(extended)))


def test_per_ctc_counterfactuals_are_appended_and_the_real_crops_kept(train, extended) -> None:
    n_ctc = int(train.labels.sum())
    assert n_ctc == 12 and len(extended) == len(train) + round(2.0 * n_ctc)
    real = extended.take(torch.arange(len(train)))
    assert torch.equal(real.images, train.images) and torch.equal(real.labels, train.labels)
    np.testing.assert_array_equal(real.crop_index, train.crop_index)
    for name in ("copies", "cd45_positive", "hard"):
        assert torch.equal(getattr(real.facts, name), getattr(train.facts, name)), name


def test_appended_labels_follow_the_criterion_and_ringed_ctcs_are_hard(train, extended) -> None:
    extra = appended(extended, train)
    facts = extra.facts
    assert facts is not None
    labels = extra.labels.numpy()
    np.testing.assert_array_equal(labels, criterion_label(facts.copies.numpy(), facts.cd45_positive.numpy()))
    assert (labels == 1).sum() == (labels == 0).sum() == 12
    spotted, ringed = labels == 1, labels == 0
    assert set(facts.copies.numpy()[spotted].tolist()) <= {3.0, 4.0, 5.0}
    assert not facts.cd45_positive.numpy()[spotted].any() and not facts.hard.numpy()[spotted].any()
    assert facts.cd45_positive.numpy()[ringed].all() and facts.hard.numpy()[ringed].all()


def test_counterfactuals_come_from_the_given_training_crops_only(cohort, train, extended) -> None:
    extra = appended(extended, train)
    assert set(extra.crop_index.tolist()) <= set(train.crop_index.tolist())
    crops, manifest = cohort
    held_out = np.setdiff1d(np.arange(len(manifest)), TRAIN_ROWS)
    assert {"ctc", "diploid_cd45neg"} <= set(manifest["true_cell_type"].iloc[held_out])  # would be sources
    brighter = crops.copy()
    brighter[held_out, CEP8] *= 10  # the cells the fit does not train on lend no marker level either
    brighter[held_out, CD45] *= 10
    again = source_for((brighter, manifest))(train, seed=3)
    assert torch.equal(again.images, extended.images)


def test_counterfactuals_are_standardised_with_their_source_rows_levels_and_resized(
    cohort, train, extended
) -> None:
    crops, manifest = cohort
    extra = appended(extended, train)
    assert extra.images.shape[1:] == (3, INPUT_SIZE, INPUT_SIZE)
    # only CEP8 (spots) or CD45 (a ring) changed: the other channels are the source crop's, read as
    # a real crop is read, with its own field's levels
    sources = read_crops(crops, extra.crop_index, INPUT_SIZE, manifest_levels(manifest, CHANNELS))
    spotted = extra.labels == 1
    kept = extra.images[:, DAPI]
    torch.testing.assert_close(kept, sources[:, DAPI], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(extra.images[spotted, CD45], sources[spotted, CD45], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(extra.images[~spotted, CEP8], sources[~spotted, CEP8], atol=1e-5, rtol=1e-5)
    assert (extra.images[spotted, CEP8] - sources[spotted, CEP8]).sum() > 0
    assert (extra.images[~spotted, CD45] - sources[~spotted, CD45]).sum() > 0


def test_without_levels_the_counterfactuals_stay_in_counts(cohort, train) -> None:
    crops, manifest = cohort
    counts = labelled(crops, manifest, TRAIN_ROWS)
    extra = appended(source_for(cohort, standardised=False)(counts, seed=3), counts)
    sources = read_crops(crops, extra.crop_index, INPUT_SIZE)
    torch.testing.assert_close(extra.images[:, DAPI], sources[:, DAPI], atol=1e-3, rtol=1e-5)


def test_the_seed_decides_the_counterfactuals(cohort, train, extended) -> None:
    assert torch.equal(source_for(cohort)(train, seed=3).images, extended.images)
    assert not torch.equal(source_for(cohort)(train, seed=4).images, extended.images)


def test_without_sources_the_crops_come_back_as_given(cohort) -> None:
    crops, manifest = cohort
    leukocytes = np.flatnonzero(manifest["true_cell_type"].to_numpy() == "leukocyte")
    data = labelled(crops, manifest, leukocytes)
    assert source_for(cohort)(data, seed=0) is data


def test_crops_loaded_without_facts_can_be_extended(cohort, train) -> None:
    bare = LabelledCrops(train.pixels, train.labels, train.crop_index)
    assert len(source_for(cohort)(bare, seed=3)) == len(train) + 24


def test_the_stage_config_makes_a_source_or_none(cohort, tmp_path: Path) -> None:
    crops, manifest = cohort
    levels = manifest_levels(manifest, CHANNELS)
    params = tiny_params(tmp_path, ["resnet18"], counterfactuals=1.5)
    made = counterfactual_source(crops, manifest, levels, params, params.train)
    assert isinstance(made, CounterfactualSource)
    assert made.per_ctc == 1.5 and made.input_size == INPUT_SIZE and made.levels is levels
    assert made.channels == tuple(params.channels) and made.cd45_threshold == params.segment.cd45_threshold
    counts = tiny_params(tmp_path, ["resnet18"], counterfactuals=1.5, standardise=False)
    assert counterfactual_source(crops, manifest, levels, counts, counts.train).levels is None  # type: ignore[union-attr]
    none = tiny_params(tmp_path, ["resnet18"], counterfactuals=0.0)
    assert counterfactual_source(crops, manifest, levels, none, none.train) is None


# --- cross-validation -----------------------------------------------------------------------------


def test_only_downsample_trains_on_the_balanced_rows() -> None:
    fold = Fold(np.array([1, 2]), np.array([3]), np.array([1, 2, 5, 6]), np.array([3, 7]))
    assert fold_training_rows(fold, "downsample").tolist() == [1, 2]
    for negatives in ("class_weight", "resample", "hard"):
        assert fold_training_rows(fold, negatives).tolist() == [1, 2, 5, 6]


def test_each_fold_extends_its_own_training_crops_and_scores_real_crops_only(cohort) -> None:
    crops, manifest = cohort
    data = labelled(crops, manifest, np.arange(28))
    folds = (
        Fold(np.arange(0, 7), np.arange(14, 21), np.arange(0, 14), np.arange(14, 28)),
        Fold(np.arange(14, 21), np.arange(0, 7), np.arange(14, 28), np.arange(0, 14)),
    )
    calls, sizes = [], []
    source = CounterfactualSource(crops, manifest, None, CHANNELS, THRESHOLD, INPUT_SIZE, 1.0)

    def extend(train: LabelledCrops, seed: int) -> LabelledCrops:
        calls.append((train.crop_index.tolist(), seed))
        return source(train, seed)

    class Sizes:
        def fold_started(self, fold: int, train_size: int, val_size: int) -> None:
            sizes.append((train_size, val_size))

        def epoch_ended(self, fold: int, metrics: object) -> None: ...

        def fold_ended(self, fold: int, result: object) -> None: ...

    result = cross_validate(
        data, folds, ModelSpec("alexnet", input_size=INPUT_SIZE), options(negatives="hard", seed=10), 0.9,
        observer=Sizes(), show_progress=False, extend=extend,
    )
    assert calls == [(list(range(0, 14)), 10), (list(range(14, 28)), 11)]  # train_all, seed + fold
    n_ctc = [int(data.labels[0:14].sum()), int(data.labels[14:28].sum())]
    assert sizes == [(14 + n_ctc[0], 7), (14 + n_ctc[1], 7)]
    assert [f.crop_index.tolist() for f in result.folds] == [list(range(14, 28)), list(range(0, 14))]
