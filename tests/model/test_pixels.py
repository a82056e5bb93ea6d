"""The per-batch data path (issue 30): crops stay where they are stored until a batch needs them.

* reading, standardising and resizing per batch gives exactly what standardising and resizing all
  crops up front gave (the path it replaced), for any rows, parts and sizes;
* ``uint16`` counts above 32767 survive the int16 bits they travel as;
* the held path (all crops moved to the device once, the CUDA path) gives the same batches as the
  per-batch reads, run here on the CPU;
* an epoch reads only the rows its batches use, so memory and reads follow the batch, not the cohort;
* the streamed normalisation equals the statistics of all the crops in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctcid.config.train import SiteShift
from ctcid.contracts import open_crops
from ctcid.errors import CtcidError
from ctcid.intensity import Levels, standardise
from ctcid.model import dataset
from ctcid.model.backbones import build_classifier
from ctcid.model.dataset import (
    CropBatches,
    LabelledCrops,
    Normalisation,
    fit_normalisation,
    load_labelled_crops,
)
from ctcid.model.pixels import CropPixels, PixelReader
from ctcid.model.trainer import FitOptions, fit, score, seed_everything
from factory import CROP_SIZE, draw_cells, draw_crops, make_manifest

SIZE = 16


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    rng = np.random.default_rng(0)
    drawn = draw_cells(["ctc", "leukocyte", "diploid_cd45neg", "debris"] * 10, rng)
    return draw_crops(drawn, CROP_SIZE, rng)


def levels_of(n: int, seed: int = 1) -> Levels:
    rng = np.random.default_rng(seed)
    return Levels(
        rng.uniform(200, 300, (n, 3)).astype(np.float32), rng.uniform(1000, 4000, (n, 3)).astype(np.float32)
    )


def up_front(crops: np.ndarray, rows: np.ndarray, size: int, levels: Levels | None) -> torch.Tensor:
    """The replaced path: standardise every crop with numpy, then resize them all at once."""
    chosen = crops[rows]
    if levels is not None:
        chosen = standardise(chosen, levels.rows(rows))
    images = torch.from_numpy(np.asarray(chosen, dtype=np.float32))
    if size == images.shape[-1]:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


@pytest.mark.parametrize("size", [SIZE, CROP_SIZE])
@pytest.mark.parametrize("standardised", [True, False])
def test_a_batch_read_is_what_the_crops_read_up_front_were(crops, size, standardised) -> None:
    levels = levels_of(len(crops)) if standardised else None
    rows = np.array([7, 3, 3, 39, 0, 12])
    pixels = CropPixels.stored(crops, rows, size, levels)
    got = PixelReader(pixels)(torch.tensor([5, 0, 2, 1, 4, 3]))
    torch.testing.assert_close(got, up_front(crops, rows[[5, 0, 2, 1, 4, 3]], size, levels), atol=0, rtol=0)


def test_counts_above_the_int16_range_are_read_exactly() -> None:
    crops = np.full((2, 3, 4, 4), 60_000, dtype=np.uint16)
    crops[1] = 32_768
    got = PixelReader(CropPixels.stored(crops, [1, 0], 4))(torch.arange(2))
    assert got[0].unique().tolist() == [32_768.0] and got[1].unique().tolist() == [60_000.0]


def test_joined_parts_read_in_position_order(crops) -> None:
    levels = levels_of(len(crops))
    stored = CropPixels.stored(crops, [4, 1, 9], SIZE, levels)
    made = crops[[20, 21]].copy()
    made[:, 1] += 500  # e.g. a counterfactual's extra spots
    joined = stored.join(CropPixels.held(made, SIZE, levels.rows([20, 21])))
    assert len(joined) == 5
    got = PixelReader(joined)(torch.tensor([4, 0, 3, 2]))
    both = np.concatenate([crops[[4, 1, 9]], made])
    both_levels = Levels.concat([levels.rows([4, 1, 9]), levels.rows([20, 21])], 3)
    expected = up_front(both, np.array([4, 0, 3, 2]), SIZE, both_levels)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_join_refuses_what_cannot_be_read_together(crops) -> None:
    stored = CropPixels.stored(crops, [0, 1], SIZE, levels_of(len(crops)))
    with pytest.raises(ValueError, match="levels"):
        stored.join(CropPixels.held(crops[:2], SIZE))
    with pytest.raises(ValueError, match="cannot join"):
        stored.join(CropPixels.held(crops[:2, :, :8, :8], SIZE, levels_of(2)))


def test_rows_outside_the_file_are_a_clear_error(crops) -> None:
    with pytest.raises(Exception, match="outside crops.npy"):
        CropPixels.stored(crops, [len(crops)], SIZE)


def data_of(crops: np.ndarray, levels: Levels | None = None, size: int = SIZE) -> LabelledCrops:
    rows = np.arange(len(crops))
    labels = torch.as_tensor(rows % 4 == 0, dtype=torch.int64)
    return LabelledCrops(CropPixels.stored(crops, rows, size, levels), labels, rows)


def batches_of(data: LabelledCrops, hold: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = CropBatches(
        data, 8, training=True, generator=torch.Generator().manual_seed(3), intensity_jitter=0.1,
        site_shift=SiteShift(prob=0.8), hold=hold,
    )
    assert loader.reader.held is hold
    return list(loader)


def test_held_crops_give_the_batches_the_per_batch_reads_give(crops) -> None:
    data = data_of(crops, levels_of(len(crops)))
    read, held = batches_of(data, hold=False), batches_of(data, hold=True)
    assert len(read) == len(held) == 5
    for (a, la), (b, lb) in zip(read, held, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        assert torch.equal(la, lb)


class CountingArray:
    """A crops array that counts the rows read from it (what a memory map would page in)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.rows_read = array, 0
        self.shape, self.dtype = array.shape, array.dtype

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        self.rows_read += len(rows)
        return self.array[rows]


def test_an_epoch_reads_only_the_rows_of_its_batches(crops) -> None:
    many = np.concatenate([crops] * 50)  # 2,000 crops
    counted = CountingArray(many)
    rows = np.arange(len(many))
    data = LabelledCrops(
        CropPixels.stored(counted, rows, SIZE), torch.as_tensor(rows % 4 == 0, dtype=torch.int64), rows
    )
    assert counted.rows_read == 0  # loading reads no pixel
    seed_everything(0)
    model = build_classifier("alexnet", Normalisation((0.0,) * 3, (1000.0,) * 3), input_size=SIZE)
    options = FitOptions(
        epochs=2, patience=1, batch_size=8, learning_rate=1e-3, weight_decay=0.0, augment=True,
        intensity_jitter=0.1, seed=0,
    )
    few = data.take(torch.arange(0, len(data), 100))  # 20 of the 2,000
    fit(model, few, None, options, device=torch.device("cpu"), show_progress=False)
    assert counted.rows_read == 2 * 20  # two epochs of the 20 crops, not one more row
    score(model, few, batch_size=8)
    assert counted.rows_read == 2 * 20 + 20


def test_loading_from_disk_keeps_the_crops_memory_mapped(tmp_path, crops) -> None:
    path = tmp_path / "crops.npy"
    np.save(path, crops)
    cells = draw_cells(["ctc", "leukocyte", "diploid_cd45neg", "debris"] * 10, np.random.default_rng(0))
    data = load_labelled_crops(path, make_manifest(cells=cells, seed=0), np.arange(10), "truth", SIZE)
    assert isinstance(data.pixels.arrays[0], np.memmap)
    assert len(data) == 10 and data.size == SIZE


def test_the_streamed_normalisation_is_that_of_all_crops_in_memory(crops) -> None:
    data = data_of(crops, levels_of(len(crops)))
    streamed = fit_normalisation(data, batch_size=7)
    whole = Normalisation.fit(data.images)
    np.testing.assert_allclose(streamed.mean, whole.mean, rtol=1e-9)
    np.testing.assert_allclose(streamed.std, whole.std, rtol=1e-9)


def test_a_large_set_is_normalised_on_crops_spread_over_it(crops, monkeypatch) -> None:
    monkeypatch.setattr(dataset, "NORMALISATION_CROPS", 10)
    data = data_of(crops, levels_of(len(crops)))
    spread = data.take(torch.from_numpy(np.linspace(0, len(crops) - 1, 10).astype(np.int64)))
    sampled = fit_normalisation(data)
    np.testing.assert_allclose(sampled.mean, Normalisation.fit(spread.images).mean, rtol=1e-9)
    assert sampled != fit_normalisation(data_of(crops[::-1].copy(), levels_of(len(crops))))


def test_resized_reads_the_same_crops_at_another_side(crops) -> None:
    data = data_of(crops)
    assert data.resized(CROP_SIZE).images.shape[-1] == CROP_SIZE
    expected = up_front(crops, np.arange(len(crops)), CROP_SIZE, None)
    torch.testing.assert_close(data.resized(CROP_SIZE).images, expected)


def mapped_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and "-" in fields[0] and ":" in fields[3]:  # a mapping's header line
            inside = fields[-1] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_a_crops_file_is_read_without_its_pages_counting_as_the_process_memory(tmp_path, crops) -> None:
    path = tmp_path / "crops.npy"
    np.save(path, np.concatenate([crops] * 20))
    mapped = open_crops(path)
    rows = np.array([3, 4, 5, 9, 0, 799, 798, 4, 400])
    pixels = CropPixels.stored(mapped, rows, CROP_SIZE)
    np.testing.assert_array_equal(pixels.read(np.arange(len(rows))), np.load(path)[rows])
    everything = CropPixels.stored(mapped, np.arange(len(mapped)), CROP_SIZE)
    assert everything.read(np.arange(len(mapped))).sum() > 0
    assert mapped_kib(path.resolve()) == 0  # read through pread, not the mapping
    view = mapped[10:]  # a view of the map is read through it, correctly
    read = CropPixels.stored(view, [0, 2], CROP_SIZE).read(np.arange(2))
    np.testing.assert_array_equal(read, crops[[10, 12]])


def test_normalising_no_crops_is_a_clear_error(crops) -> None:
    empty = data_of(crops).take(torch.arange(0))
    with pytest.raises(CtcidError, match="no training crops"):
        fit_normalisation(empty)
