"""Paper-scale training and inference throughput of each backbone on a GPU, and what a CV trial costs.

At the settings of ``configs/paper.yaml`` (synthetic 48-px uint16 crops, input 224 px, batch 64),
for every backbone, batch size and ``--deterministic`` mode, on ``--device`` (auto: CUDA when
present), in one run:

* **ctcid train**: the path ``cv`` and ``train`` take. The crops stay in a ``.npy`` opened
  memory-mapped (``contracts.open_crops``), wrapped as ``LabelledCrops(CropPixels.stored(...))``
  with per-crop field levels (``intensity.Levels``), so every batch is gathered, standardised,
  resized to the input size and augmented (flips, quarter turns, gain, and the site shift,
  ``SiteShift(prob=0.8)``) as it is drawn: on CUDA on the device, from crops uploaded once as
  uint16 when they fit (``held``). ``seed_everything(0, deterministic)``, then ``trainer.fit`` for
  one epoch (AdamW, warm-up/cosine schedule, the trainer's autocast: bfloat16 on CUDA, the loss
  summed on the device). crops/s are of the epoch as ``fit`` times it (``EpochMetrics.seconds``,
  ending with the loss read back); the rest of the call (optimiser, the crops' upload), which a
  real fit pays once and not every epoch, is ``set-up s``. A short fit on the first batches
  precedes it, so that kernel selection (and cuDNN's benchmark search when not deterministic) is
  out of the timed epoch, as it is out of every epoch after a real fit's first;
* **bare train**: the same model, AdamW and autocast in a minimal loop (forward, cross-entropy,
  backward, step) over crops already on the device at the input size (read, standardised and
  resized beforehand by ``dataset.read_crops``, shuffled once), under the same ``seed_everything``,
  timed before and after the ctcid epoch; ``ratio`` = ctcid / bare is what the data path,
  augmentation included, costs (target >= 0.8);
* **deterministic** on / off (``train.deterministic``; default both on CUDA): each backbone is
  measured under each, every backbone with it on first (so a tight ``--budget-s`` drops off rows,
  not backbones); ``off/on`` = ctcid crops/s without deterministic kernels (and with
  ``cudnn.benchmark``) / with them, what the setting costs;
* **inference**: ``trainer.score`` on the memory-mapped crops (``cv`` scores held-out cells with it
  at the training batch; ``predict`` and the service at theirs) at the training batch and at
  ``--infer-batch``, against a bare no-grad forward and softmax with the same autocast over the
  on-device crops at ``--infer-batch``; ``ratio@L`` = ctcid / bare there (target >= 0.8);
* **held**: whether the fit's crops were held on the device (``PixelReader.held``), else read per
  batch from the memory map (on CUDA into pinned memory);
* **peak GiB** (CUDA only): ``torch.cuda.max_memory_allocated`` during the timed ``fit`` call, less
  the bare loop's on-device crops: model, gradients, AdamW state, activations, the held uint16
  crops and the batch;
* **host RSS**: the process's peak resident memory (``getrusage ru_maxrss``) after the set-up and
  at the end; the set-up includes the bare loop's crops (on CPU they stay in host memory).

Every timed pass is preceded by a warm-up and bracketed by ``torch.cuda.synchronize()``. Each
epoch has ``--n`` crops (rounded down to whole batches).

**Estimates** (printed as such: arithmetic on the measured throughput, not measured runs): one
5-fold CV trial at paper scale = ``n_folds x epochs x rows_per_fold / ctcid train crops/s``, and a
study of ``tune.n_trials`` such trials, against ``tune.timeout_s``. A second figure adds what a
trial also does, at the measured ``score`` rate at the training batch: each epoch scores the
fold's balanced validation rows (``rows_per_fold / (n_folds - 1)``), and each fold scores every
training cell of its validation patients. Both assume every fold runs all its epochs; early
stopping (``train.patience``) can only shorten them, and tuned trials that draw fewer epochs,
smaller inputs or bigger batches are cheaper, ``negatives: class_weight`` ones dearer (every
negative of the fold's patients: about 10 times the rows).

``rows_per_fold`` by default comes from the config (``--config``): patients (simulate.n_samples
776) x mean CTCs per patient (ctc_burden_mean 9.9) x the training share (1 - split.test_size 0.2)
x the share of training patients a fold trains on ((n_folds - 1) / n_folds = 4/5) x 2 (train.
negatives ``downsample``: as many negatives as CTCs) = 9,833 rows. It assumes every simulated CTC
is segmented and labelled, and ignores the cap on the burden (ctc_burden_max) and how unevenly
the negative-binomial burden falls on the folds. ``--rows-per-fold`` overrides it.

Usage (the defaults measure all five backbones in both modes, ``--budget-s`` permitting; a tiny
CPU check below; ``PYTHONPATH=src python3 bench/bench_gpu.py`` where ctcid is not installed)::

    .venv/bin/python bench/bench_gpu.py [--json out.json] [--batch-sizes 64 128] [--n 4096]
    .venv/bin/python bench/bench_gpu.py --device cpu --n 128 --input-size 64 \\
        --backbones alexnet resnet18 --budget-s 120
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_train import synthetic_crops  # same synthetic crops as the CPU bench (bench/ is on sys.path)
from torch import nn

from ctcid.config.loader import merge_overlay, parse_params, read_raw
from ctcid.config.params import Params
from ctcid.config.train import SiteShift, TrainParams
from ctcid.contracts import BACKBONES, open_crops
from ctcid.intensity import Levels
from ctcid.model.backbones import build_classifier
from ctcid.model.dataset import LabelledCrops, Normalisation, fit_normalisation, read_crops
from ctcid.model.pixels import CropPixels, PixelReader

# _autocast is the trainer's own, so that the bare loop runs in exactly the trainer's precision
from ctcid.model.trainer import (
    FitOptions,
    _autocast,
    fit,
    flush_denormals,
    resolve_device,
    score,
    seed_everything,
)

GIB = 2**30
MIB = 2**20
WARMUP_BATCHES = 3
# The bare loop's crops are prepared this many at a time, so that the set-up's host memory stays
# small next to what it measures (the whole set as float32 at 224 px is 2.3 GiB).
PREPARE_CHUNK = 256
# Field levels of the synthetic crops, per channel (DAPI, CEP8, CD45): background at their noise
# floor (bench_train.synthetic_crops: ~300 counts), scales of a simulated field; every crop gets
# its own, within 10 %, as if each came from another field, so standardising is a real gather.
BACKGROUND = (300.0, 300.0, 300.0)
SCALE = (4000.0, 1300.0, 1950.0)
SITE_SHIFT = SiteShift(prob=0.8)  # the project default


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


@dataclass(frozen=True)
class Scale:
    """The paper-scale cohort behind the estimates, from the config (see the module docstring)."""

    rows_per_fold: float  # balanced training rows of one fold
    val_rows: float  # balanced validation rows of one fold, scored every epoch
    val_all: float  # every training cell of a fold's validation patients, scored once per fold
    train_cells: float  # every training cell: the crops.npy rows CV reads
    n_folds: int
    epochs: int
    n_trials: int
    timeout_s: float | None

    @classmethod
    def from_params(cls, params: Params, rows_per_fold: float | None) -> Scale:
        sim, split = params.simulate, params.split
        training = sim.n_samples * (1.0 - split.test_size)  # training patients
        fold_share = (split.n_folds - 1) / split.n_folds
        derived = 2.0 * training * sim.ctc_burden_mean * fold_share
        rows = float(rows_per_fold) if rows_per_fold is not None else derived
        cells = training * (sim.ctc_burden_mean + sim.background_cells_mean)
        return cls(
            rows_per_fold=rows,
            val_rows=rows / (split.n_folds - 1),
            val_all=cells / split.n_folds,
            train_cells=cells,
            n_folds=split.n_folds,
            epochs=params.train.epochs,
            n_trials=params.tune.n_trials,
            timeout_s=params.tune.timeout_s,
        )


@dataclass(frozen=True)
class Workload:
    """What every measurement reads: the same crops as ctcid stores them and as the bare loop does."""

    data: LabelledCrops  # memory-mapped uint16 crops with per-crop levels: ctcid's input
    images: torch.Tensor  # the same crops as model input (float32, standardised, resized), on the device
    labels: torch.Tensor  # of ``images``, on the device
    normalisation: Normalisation
    options: FitOptions
    input_size: int
    infer_batch: int
    device: torch.device


@dataclass
class Result:
    backbone: str
    batch_size: int
    deterministic: bool  # seed_everything(0, deterministic) before the model, both loops and inference
    n: int  # crops per timed training epoch
    held: bool  # the fit's crops were held on the device (PixelReader.held)
    ctcid_train: float  # crops/s of the epoch as fit times it
    fit_setup_s: float  # the rest of the fit call: optimiser, CropBatches (the crops' upload when held)
    bare_before: float
    bare_after: float
    ctcid_infer: float  # score at the training batch size
    ctcid_infer_large: float  # score at --infer-batch
    bare_infer_large: float
    infer_batch: int
    peak_gib: float | None
    seconds: float  # wall-clock of this measurement, warm-ups and model build included

    @property
    def bare(self) -> float:
        return (self.bare_before + self.bare_after) / 2

    def ratios(self) -> dict[str, float]:
        return {
            "bare_train": self.bare,
            "train_ratio": self.ctcid_train / self.bare,
            "infer_ratio": self.ctcid_infer_large / self.bare_infer_large,
        }


def synthetic_levels(n: int) -> Levels:
    """Per-crop field levels around :data:`BACKGROUND` and :data:`SCALE` (seeded)."""
    rng = np.random.default_rng(1)
    jitter = rng.uniform(0.9, 1.1, size=(2, n, len(SCALE)))
    return Levels(
        (np.asarray(BACKGROUND) * jitter[0]).astype(np.float32),
        (np.asarray(SCALE) * jitter[1]).astype(np.float32),
    )


def on_device_crops(
    crops: np.ndarray, rows: np.ndarray, size: int, levels: Levels, device: torch.device
) -> torch.Tensor:
    """Rows ``rows`` of ``crops`` as model input on ``device``, prepared a chunk at a time on the host."""
    out = torch.empty((len(rows), crops.shape[1], size, size), dtype=torch.float32, device=device)
    for start in range(0, len(rows), PREPARE_CHUNK):
        chunk = rows[start : start + PREPARE_CHUNK]
        out[start : start + len(chunk)] = read_crops(crops, chunk, size, levels).to(device)
    sync(device)
    return out


def bare_train(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int, options: FitOptions
) -> float:
    """Seconds for one pass of the minimal loop over on-device ``images`` in order."""
    device = images.device
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay
    )
    criterion = nn.CrossEntropyLoss()
    model.train()
    sync(device)
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        with _autocast(device):
            loss = criterion(model(images[start : start + batch]), labels[start : start + batch])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    sync(device)
    return time.perf_counter() - started


@torch.no_grad()
def bare_infer(model: nn.Module, images: torch.Tensor, batch: int) -> float:
    """Seconds for no-grad forwards and class-1 softmax over on-device ``images``."""
    device = images.device
    model.eval()
    sync(device)
    started = time.perf_counter()
    outputs = []
    for start in range(0, len(images), batch):
        with _autocast(device):
            outputs.append(model(images[start : start + batch]).float())
    torch.softmax(torch.cat(outputs), dim=1)[:, 1].cpu()
    return time.perf_counter() - started


def first(data: LabelledCrops, n: int) -> LabelledCrops:
    return data.take(torch.arange(min(n, len(data))))


def timed_fit(
    model: nn.Module, data: LabelledCrops, options: FitOptions, work: Workload
) -> tuple[float, float, float | None]:
    """(seconds of the epoch as ``fit`` times it, of the whole ``fit`` call, and its peak device GiB
    less the bare loop's crops) of one ctcid epoch on ``data``.

    The epoch's own time (``EpochMetrics.seconds``, which ends with the loss read back) leaves out
    the fit's set-up (optimiser, the crops' upload), which a real fit pays once, not every epoch.
    """
    device = work.device
    # warm-up: the reader's, augmentation's and model's kernels, cuDNN's search when benchmarking
    warm = first(data, WARMUP_BATCHES * options.batch_size)
    fit(model, warm, None, options, device=device, show_progress=False)
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    started = time.perf_counter()
    fitted = fit(model, data, None, options, device=device, show_progress=False)
    sync(device)
    seconds = time.perf_counter() - started
    epoch = fitted.history[0].seconds
    if device.type != "cuda":
        return epoch, seconds, None
    resident = work.images.nbytes + work.labels.nbytes
    return epoch, seconds, (torch.cuda.max_memory_allocated(device) - resident) / GIB


def timed_score(model: nn.Module, data: LabelledCrops, batch: int, device: torch.device) -> float:
    """crops/s of ``trainer.score`` after a warm-up on its first batches."""
    score(model, first(data, WARMUP_BATCHES * batch), batch, device)
    sync(device)
    started = time.perf_counter()
    score(model, data, batch, device)  # returns numpy: the scores are on the host
    return len(data) / (time.perf_counter() - started)


def is_held(data: LabelledCrops, device: torch.device) -> bool:
    """Whether a fit of ``data`` holds its crops on ``device`` (the reader the fit builds decides alike)."""
    reader = PixelReader(data.pixels, device)
    held = reader.held
    del reader
    return held


def measure(backbone: str, batch: int, deterministic: bool, work: Workload) -> Result:
    started = time.perf_counter()
    device = work.device
    n = len(work.data) // batch * batch
    data = first(work.data, n)
    images, labels = work.images[:n], work.labels[:n]
    options = replace(work.options, epochs=1, batch_size=batch, deterministic=deterministic)
    warm = WARMUP_BATCHES * batch

    seed_everything(0, deterministic)  # as cv and train before every fit
    model = build_classifier(backbone, work.normalisation, input_size=work.input_size).to(device)
    bare_train(model, images[:warm], labels[:warm], batch, options)  # kernel selection, allocations
    bare_before = bare_train(model, images, labels, batch, options)
    held = is_held(data, device)
    ctcid_seconds, fit_seconds, peak = timed_fit(model, data, options, work)
    bare_after = bare_train(model, images, labels, batch, options)

    ctcid_infer = timed_score(model, data, batch, device)
    n_large = len(work.data) // work.infer_batch * work.infer_batch or len(work.data)
    ctcid_infer_large = timed_score(model, first(work.data, n_large), work.infer_batch, device)
    bare_infer(model, work.images[: WARMUP_BATCHES * work.infer_batch], work.infer_batch)
    bare_infer_large = n_large / bare_infer(model, work.images[:n_large], work.infer_batch)

    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Result(
        backbone=backbone,
        batch_size=batch,
        deterministic=deterministic,
        n=n,
        held=held,
        ctcid_train=n / ctcid_seconds,
        fit_setup_s=fit_seconds - ctcid_seconds,
        bare_before=n / bare_before,
        bare_after=n / bare_after,
        ctcid_infer=ctcid_infer,
        ctcid_infer_large=ctcid_infer_large,
        bare_infer_large=bare_infer_large,
        infer_batch=work.infer_batch,
        peak_gib=peak,
        seconds=time.perf_counter() - started,
    )


def estimate(result: Result, scale: Scale) -> dict[str, float | None]:
    """Seconds of a paper-scale CV trial and study at ``result``'s measured throughput."""
    train_only = scale.n_folds * scale.epochs * scale.rows_per_fold / result.ctcid_train
    scoring = scale.n_folds * (scale.epochs * scale.val_rows + scale.val_all) / result.ctcid_infer
    return {
        "trial_train_s": train_only,
        "trial_s": train_only + scoring,
        "study_train_s": scale.n_trials * train_only,
        "study_s": scale.n_trials * (train_only + scoring),
        "trials_in_timeout": (scale.timeout_s / (train_only + scoring)) if scale.timeout_s else None,
    }


def hours(seconds: float) -> str:
    return f"{seconds:,.0f} s ({seconds / 3600:.1f} h)"


def mode(deterministic: bool) -> str:
    return "on" if deterministic else "off"


def amp_name(device: torch.device) -> str:
    if device.type != "cuda":
        return "none"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "autocast": amp_name(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "name": props.name,
            "memory_gib": round(props.total_memory / GIB, 1),
            "capability": f"{props.major}.{props.minor}",
        }
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


HEADER = (
    f"{'backbone':<9} {'batch':>5} {'det':>3} {'ctcid tr/s':>10} {'bare tr/s':>10} {'ratio':>5} "
    f"{'off/on':>6} {'held':>4} {'infer@b/s':>9} {'infer@L/s':>9} {'bare@L/s':>9} {'ratio@L':>7} "
    f"{'peak GiB':>8} {'set-up s':>8} {'s':>5}"
)


def row_line(r: Result, deterministic_rate: float | None = None) -> str:
    """One table row; ``deterministic_rate``: ctcid crops/s of the same backbone and batch with
    deterministic on, for an off row's ``off/on``."""
    dash = "-"
    cost = f"{dash:>6}"
    if deterministic_rate and not r.deterministic:
        cost = f"{r.ctcid_train / deterministic_rate:>6.2f}"
    peak = f"{r.peak_gib:>8.2f}" if r.peak_gib is not None else f"{dash:>8}"
    ratios = r.ratios()
    return (
        f"{r.backbone:<9} {r.batch_size:>5} {mode(r.deterministic):>3} {r.ctcid_train:>10.0f} "
        f"{r.bare:>10.0f} {ratios['train_ratio']:>5.2f} {cost} {'yes' if r.held else 'no':>4} "
        f"{r.ctcid_infer:>9.0f} {r.ctcid_infer_large:>9.0f} {r.bare_infer_large:>9.0f} "
        f"{ratios['infer_ratio']:>7.2f} {peak} {r.fit_setup_s:>8.3f} {r.seconds:>5.1f}  "
        f"({r.bare_before:.0f}/{r.bare_after:.0f})"
    )


def print_estimates(results: list[Result], scale: Scale) -> None:
    print(
        f"\nESTIMATES from the measured ctcid crops/s above, not measured runs. One {scale.n_folds}-fold CV "
        f"trial = {scale.n_folds} folds x {scale.epochs} epochs x {scale.rows_per_fold:,.0f} training rows\n"
        f"per fold / ctcid train crops/s; '+ scoring' adds {scale.val_rows:,.0f} validation rows per epoch "
        f"and {scale.val_all:,.0f} out-of-fold cells per fold at infer@b. Every fold runs all its epochs."
    )
    timeout = f"{scale.timeout_s:,.0f} s" if scale.timeout_s else "none"
    study = f"study of {scale.n_trials} trials"
    print(
        f"{'backbone':<9} {'batch':>5} {'det':>3} {'trial (train only)':>20} {'trial + scoring':>20} "
        f"{study:>22}  trials in tune.timeout_s ({timeout})"
    )
    for r in results:
        e = estimate(r, scale)
        fits = f"{e['trials_in_timeout']:.1f}" if e["trials_in_timeout"] is not None else "-"
        print(
            f"{r.backbone:<9} {r.batch_size:>5} {mode(r.deterministic):>3} {hours(e['trial_train_s']):>20} "
            f"{hours(e['trial_s']):>20} {hours(e['study_s']):>22}  {fits}"
        )


def print_memory_estimate(scale: Scale, crop_shape: tuple[int, ...]) -> None:
    """Memory of paper-scale CV under this data path: the crops stay uint16 at crop size."""
    crop = int(np.prod(crop_shape)) * 2  # bytes of one uint16 crop
    cohort = scale.train_cells * crop / GIB
    fit_mib = scale.rows_per_fold * crop / MIB
    print(
        "Memory, also ESTIMATES: ctcid copies no crop into host memory; crops.npy's "
        f"{scale.train_cells:,.0f} training cells at {crop_shape[-1]} px uint16 ({crop / 2**10:.1f} KiB "
        f"each) are {cohort:.1f} GiB,\n"
        f"memory-mapped (page cache); per crop the host keeps 34 bytes (levels, index). On CUDA a fit holds "
        f"its crops on the device: {scale.rows_per_fold:,.0f} rows = {fit_mib:,.0f} MiB with negatives: "
        "downsample,\nabout 10 times that with class_weight or resample, when within 25 % of free device "
        "memory (else read per batch)."
    )


def fit_options(params: Params) -> FitOptions:
    """``train.*`` of the config with augmentation, field standardisation and the site shift on."""
    forced = {"augment": True, "standardise": True, "site_shift": SITE_SHIFT.model_dump()}
    train = TrainParams.model_validate(params.train.model_dump() | forced)
    return FitOptions.from_params(train, seed=0, channels=params.channels)


def prepare(
    args: argparse.Namespace, tmp: Path, settings: dict[str, Any], options: FitOptions, device: torch.device
) -> tuple[Workload, dict[str, Any]]:
    """Synthetic crops memory-mapped for ctcid, the same crops on the device for the bare loops."""
    input_size = settings["input_size"]
    crops = open_crops(synthetic_crops(tmp / "crops.npy", args.n, settings["crop_size"]))
    rows = np.arange(args.n)
    levels = synthetic_levels(args.n)
    labels = torch.as_tensor(rows % 2, dtype=torch.int64)
    data = LabelledCrops(CropPixels.stored(crops, rows, input_size, levels), labels, rows)
    normalisation = fit_normalisation(data, device)  # its statistics are irrelevant to speed

    sync(device)
    upload_started = time.perf_counter()
    held = is_held(data, device)  # the upload a fit of every crop would make, timed
    sync(device)
    upload_seconds = time.perf_counter() - upload_started

    # the bare loops' crops: shuffled once and on the device, so that they cost nothing per step
    order = torch.randperm(args.n, generator=torch.Generator().manual_seed(0))
    load_started = time.perf_counter()
    images = on_device_crops(crops, rows[order.numpy()], input_size, levels, device)
    load_seconds = time.perf_counter() - load_started
    work = Workload(
        data, images, labels[order].to(device), normalisation, options, input_size, args.infer_batch, device
    )
    setup = {
        "crops_mib": crops.nbytes / MIB,
        "crops_held": held,
        "hold_seconds": upload_seconds,
        "bare_crops_gib": images.nbytes / GIB,
        "bare_prepare_seconds": load_seconds,
        "rss_after_setup_gib": peak_rss_gib(),
    }
    return work, setup


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", type=Path, default=Path("configs/paper.yaml"),
        help="overlay on --base whose train, simulate, split and tune settings set the scale "
        "(default: %(default)s)",
    )
    parser.add_argument("--base", type=Path, default=Path("params.yaml"), help="(default: %(default)s)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--batch-sizes", nargs="+", type=int, help="(default: train.batch_size, 64)")
    parser.add_argument("--n", type=int, default=4096, help="crops per timed epoch (default 4096)")
    parser.add_argument("--input-size", type=int, help="(default: train.input_size, 224)")
    parser.add_argument("--crop-size", type=int, help="synthetic crop side (default: segment.crop_size, 48)")
    parser.add_argument("--infer-batch", type=int, default=512, help="large inference batch (default 512)")
    parser.add_argument(
        "--deterministic", choices=["on", "off", "both"],
        help="seed_everything's deterministic kernels (train.deterministic); "
        "default: both on CUDA, on on CPU",
    )
    parser.add_argument("--rows-per-fold", type=float, help="(default: derived from --config, as above)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument(
        "--budget-s", type=float, default=240.0,
        help="start no new measurement (backbone, batch size, mode) after this many seconds (default 240)",
    )
    parser.add_argument("--json", type=Path, help="write the results here (after every measurement)")
    return parser.parse_args()


@dataclass
class Report:
    """What the run found so far; written as JSON after every measurement, so a cut-off run keeps it."""

    path: Path | None
    info: dict[str, Any]
    settings: dict[str, Any]
    scale: Scale
    started: float = field(default_factory=time.perf_counter)
    setup: dict[str, Any] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def write(self) -> None:
        if self.path is None:
            return
        report = {
            "info": self.info,
            "settings": self.settings,
            "setup": self.setup,
            "scale": asdict(self.scale),
            "results": [asdict(r) | r.ratios() | {"estimate": estimate(r, self.scale)} for r in self.results],
            "skipped": self.skipped,
            "wall_s": time.perf_counter() - self.started,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(report, indent=2) + "\n")


def print_setup(report: Report, work: Workload) -> None:
    info, setup, settings, options = report.info, report.setup, report.settings, work.options
    memory = f", {info['memory_gib']} GiB, sm {info['capability']}" if work.device.type == "cuda" else ""
    print(
        f"device {info['name']} ({info['device']}{memory}); torch {info['torch']}, CUDA {info['cuda']}, "
        f"cuDNN {info['cudnn']}, Python {info['python']}, {info['cpu_threads']} CPU threads"
    )
    held = "read per batch from the memory map"
    if setup["crops_held"]:
        held = f"held on the device (uploaded in {setup['hold_seconds']:.2f} s)"
    print(
        f"ctcid: {settings['n']} synthetic {settings['crop_size']}-px uint16 crops ({setup['crops_mib']:.1f} "
        f"MiB) memory-mapped, {held};\nper batch standardised by per-crop levels, resized to "
        f"{work.input_size} px, augmented (jitter {options.intensity_jitter}, site shift prob "
        f"{options.site_shift.prob}).\nbare: the same crops prepared beforehand, "
        f"{setup['bare_crops_gib']:.2f} GiB float32 on {info['device']} "
        f"(in {setup['bare_prepare_seconds']:.1f} s). autocast "
        f"{info['autocast']}; lr {options.learning_rate}; config {settings['config']}"
    )
    print(
        "\ncrops/s (tr: training; infer@b: trainer.score at the training batch, @L: at --infer-batch "
        f"{work.infer_batch}); det: seed_everything's deterministic;\nratio = ctcid / bare (target >= 0.8); "
        "off/on = ctcid tr/s deterministic off / on;\nset-up s: the timed fit call less its epoch "
        "(optimiser, the crops' upload); bare before/after in brackets"
    )
    print(HEADER)


def run_all(report: Report, work: Workload, backbones: list[str], modes: list[bool], budget_s: float) -> None:
    """Every mode, backbone and batch size until ``budget_s`` has passed; the JSON after each.

    Deterministic on (the default of ``train.deterministic``) goes first for every backbone, so a
    tight budget drops the off rows, not backbones.
    """
    deterministic_rates: dict[tuple[str, int], float] = {}
    for deterministic in modes:
        for backbone in backbones:
            for batch in report.settings["batch_sizes"]:
                if time.perf_counter() - report.started > budget_s:
                    report.skipped.append(f"{backbone}@{batch}/det-{mode(deterministic)}")
                    continue
                result = measure(backbone, batch, deterministic, work)
                if deterministic:
                    deterministic_rates[backbone, batch] = result.ctcid_train
                report.results.append(result)
                print(row_line(result, deterministic_rates.get((backbone, batch))), flush=True)
                report.write()


def main() -> None:
    started = time.perf_counter()
    args = parse_args()
    raw = merge_overlay(read_raw(args.base), read_raw(args.config))  # as 'ctcid show-params --over'
    params = parse_params(raw, f"{args.base} with {args.config}")
    batch_sizes = args.batch_sizes or [params.train.batch_size]
    if args.n < max(batch_sizes):
        raise SystemExit(f"--n {args.n} must hold at least one batch of {max(batch_sizes)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    chosen = args.deterministic or ("both" if device.type == "cuda" else "on")
    modes = {"on": [True], "off": [False], "both": [True, False]}[chosen]
    settings = {
        "config": str(args.config), "input_size": args.input_size or params.train.input_size,
        "crop_size": args.crop_size or params.segment.crop_size, "n": args.n, "batch_sizes": batch_sizes,
        "infer_batch": args.infer_batch, "deterministic": chosen, "site_shift_prob": SITE_SHIFT.prob,
    }
    report = Report(args.json, device_info(device), settings, Scale.from_params(params, args.rows_per_fold),
                    started=started)
    # The trainer flushes subnormals (3-4x faster VGG epochs on CPU); the bare loop gets the same.
    flush_denormals()

    with tempfile.TemporaryDirectory() as tmp:  # the memory map lives as long as the measurements
        work, report.setup = prepare(args, Path(tmp), settings, fit_options(params), device)
        print_setup(report, work)
        run_all(report, work, args.backbones, modes, args.budget_s)
        crop_shape = work.data.pixels.shape
    if report.skipped:
        print(f"skipped after --budget-s {args.budget_s:.0f} s: {', '.join(report.skipped)}")
    print_estimates(report.results, report.scale)
    print_memory_estimate(report.scale, crop_shape)
    report.setup["rss_end_gib"] = peak_rss_gib()
    print(
        f"\nhost peak RSS {report.setup['rss_after_setup_gib']:.2f} GiB after the set-up, "
        f"{report.setup['rss_end_gib']:.2f} GiB at the end; wall time {time.perf_counter() - started:.1f} s"
    )
    report.write()


if __name__ == "__main__":
    main()
