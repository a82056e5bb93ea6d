"""Paper-scale training and inference throughput of each backbone on a GPU, and what a CV trial costs.

At the settings of ``configs/paper.yaml`` (synthetic 48-px uint16 crops resized once to 224 px by
``dataset.read_crops``, batch 64), for every backbone and batch size, on ``--device`` (auto: CUDA
when present), in one run:

* **ctcid train**: crops in host memory as ``read_crops`` leaves them, ``trainer.fit`` for one
  epoch: shuffling and augmentation on the CPU, the copy of each batch to the device, the
  trainer's autocast (bfloat16 on CUDA), loss bookkeeping (one ``loss.item()`` per step), the
  learning-rate schedule. ``seed_everything`` first, as ``cv`` and ``train`` call it before every
  fit: deterministic algorithms, ``cudnn.benchmark`` off;
* **bare train**: the same model, AdamW and autocast in a minimal loop (forward, cross-entropy,
  backward, step) over shuffled crops already on the device, timed before and after the ctcid
  epoch; ``ratio`` = ctcid / bare is what the data path costs;
* **bench train** (CUDA only): the bare loop once more with ``cudnn.benchmark`` on and
  deterministic algorithms off, which the trainer does not use (``seed_everything`` turns
  benchmark off): ``x`` = bench / bare is what the trainer's determinism costs on this GPU;
* **inference**: ``trainer.predict_scores`` (which ``cv`` scores each fold's held-out cells with,
  at the training batch size, and ``predict`` scores crops with) at the training batch and at
  ``--infer-batch``, and a bare no-grad forward with the same autocast over the on-device crops;
* **peak GiB** (CUDA only): ``torch.cuda.max_memory_allocated`` during the ctcid epoch, reset per
  backbone and batch size, less the bare loop's on-device crops: model, gradients, AdamW state,
  activations and the batch.

Every timed pass is preceded by a warm-up (kernel selection, allocations) and bracketed by
``torch.cuda.synchronize()``. Each epoch has ``--n`` crops (rounded down to whole batches).

**Estimates** (printed as such: arithmetic on the measured throughput, not measured runs): one
5-fold CV trial at paper scale = ``n_folds x epochs x rows_per_fold / ctcid train crops/s``, and a
study of ``tune.n_trials`` such trials, against ``tune.timeout_s``. A second figure adds what a
trial also does, at the measured ``predict_scores`` rate at the training batch: each epoch scores
the fold's balanced validation rows (``rows_per_fold / (n_folds - 1)``), and each fold scores
every training cell of its validation patients. Both assume every fold runs all its epochs; early
stopping (``train.patience``) can only shorten them, and tuned trials that draw fewer epochs,
smaller inputs or bigger batches are cheaper, ``negatives: class_weight`` ones dearer (every
negative of the fold's patients: about 10 times the rows).

``rows_per_fold`` by default comes from the config (``--config``): patients (simulate.n_samples
776) x mean CTCs per patient (ctc_burden_mean 9.9) x the training share (1 - split.test_size 0.2)
x the share of training patients a fold trains on ((n_folds - 1) / n_folds = 4/5) x 2 (train.
negatives ``downsample``: as many negatives as CTCs) = 9,833 rows. It assumes every simulated CTC
is segmented and labelled, and ignores the cap on the burden (ctc_burden_max) and how unevenly
the negative-binomial burden falls on the folds. ``--rows-per-fold`` overrides it.

Usage (the defaults took 84 s on one NVIDIA H200, docs/benchmarks.md; tiny settings for a CPU check;
``PYTHONPATH=src python3 bench/bench_gpu.py`` where ctcid is not installed)::

    .venv/bin/python bench/bench_gpu.py [--json out.json] [--batch-sizes 64 128] [--n 4096]
    .venv/bin/python bench/bench_gpu.py --device cpu --n 64 --input-size 64 --threads 1 \\
        --backbones resnet18 alexnet
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_train import synthetic_crops  # same synthetic crops as the CPU bench (bench/ is on sys.path)
from torch import nn

from ctcid.config.loader import load_params
from ctcid.config.params import Params
from ctcid.contracts import BACKBONES, open_crops
from ctcid.model.backbones import build_classifier
from ctcid.model.dataset import LabelledCrops, Normalisation, read_crops

# _autocast is the trainer's own, so that the bare loop runs in exactly the trainer's precision
from ctcid.model.trainer import (
    FitOptions,
    _autocast,
    fit,
    predict_scores,
    resolve_device,
    seed_everything,
)

GIB = 2**30
WARMUP_BATCHES = 3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Scale:
    """The paper-scale cohort behind the estimates, from the config (see the module docstring)."""

    rows_per_fold: float  # balanced training rows of one fold
    val_rows: float  # balanced validation rows of one fold, scored every epoch
    val_all: float  # every training cell of a fold's validation patients, scored once per fold
    train_cells: float  # every training cell: what ctcid keeps in host memory during CV
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


@dataclass
class Result:
    backbone: str
    batch_size: int
    n: int  # crops per timed training epoch
    ctcid_train: float  # crops/s
    bare_before: float
    bare_after: float
    bench_train: float | None  # bare loop with cudnn.benchmark, not deterministic (CUDA only)
    ctcid_infer: float  # predict_scores at the training batch size
    ctcid_infer_large: float  # predict_scores at --infer-batch
    bare_infer_large: float
    infer_batch: int
    peak_gib: float | None
    seconds: float  # wall-clock of this backbone and batch size, warm-ups and model build included

    @property
    def bare(self) -> float:
        return (self.bare_before + self.bare_after) / 2


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


def timed_predict(model: nn.Module, images: torch.Tensor, batch: int, device: torch.device) -> float:
    """crops/s of ``predict_scores`` after a warm-up on its first batches."""
    predict_scores(model, images[: WARMUP_BATCHES * batch], batch, device)
    sync(device)
    started = time.perf_counter()
    predict_scores(model, images, batch, device)
    sync(device)
    return len(images) / (time.perf_counter() - started)


def measure(
    backbone: str,
    batch: int,
    host: LabelledCrops,
    on_device: tuple[torch.Tensor, torch.Tensor],
    normalisation: Normalisation,
    options: FitOptions,
    input_size: int,
    infer_batch: int,
    device: torch.device,
) -> Result:
    started = time.perf_counter()
    n = len(host) // batch * batch
    data = LabelledCrops(host.images[:n], host.labels[:n], host.crop_index[:n])
    images, labels = on_device[0][:n], on_device[1][:n]
    options = replace(options, epochs=1, batch_size=batch)
    cuda = device.type == "cuda"

    seed_everything(0)  # as cv and train before every fit: deterministic, cudnn.benchmark off
    model = build_classifier(backbone, normalisation, input_size=input_size).to(device)
    warm = WARMUP_BATCHES * batch
    bare_train(model, images[:warm], labels[:warm], batch, options)
    bare_before = bare_train(model, images, labels, batch, options)

    model.zero_grad(set_to_none=True)
    peak = None
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    fit_started = time.perf_counter()
    fit(model, data, None, options, device=device, show_progress=False)
    sync(device)
    ctcid_seconds = time.perf_counter() - fit_started
    if cuda:
        resident = on_device[0].element_size() * on_device[0].nelement() + on_device[1].nelement() * 8
        peak = (torch.cuda.max_memory_allocated(device) - resident) / GIB
    bare_after = bare_train(model, images, labels, batch, options)

    bench = None
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.use_deterministic_algorithms(False)
        try:
            bare_train(model, images[:warm], labels[:warm], batch, options)  # autotuning
            bench = n / bare_train(model, images, labels, batch, options)
        finally:
            torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True, warn_only=True)

    ctcid_infer = timed_predict(model, data.images, batch, device)
    n_large = len(host) // infer_batch * infer_batch or len(host)
    ctcid_infer_large = timed_predict(model, host.images[:n_large], infer_batch, device)
    bare_infer(model, on_device[0][: WARMUP_BATCHES * infer_batch], infer_batch)
    bare_infer_large = n_large / bare_infer(model, on_device[0][:n_large], infer_batch)

    del model
    if cuda:
        torch.cuda.empty_cache()
    return Result(
        backbone=backbone,
        batch_size=batch,
        n=n,
        ctcid_train=n / ctcid_seconds,
        bare_before=n / bare_before,
        bare_after=n / bare_after,
        bench_train=bench,
        ctcid_infer=ctcid_infer,
        ctcid_infer_large=ctcid_infer_large,
        bare_infer_large=bare_infer_large,
        infer_batch=infer_batch,
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
    f"{'backbone':<9} {'batch':>5} {'ctcid tr/s':>10} {'bare tr/s':>10} {'ratio':>5} {'bench tr/s':>10} "
    f"{'x':>5} {'infer@b/s':>9} {'infer@L/s':>9} {'bare@L/s':>9} {'peak GiB':>8} {'s':>5}"
)


def row_line(r: Result) -> str:
    dash = "-"
    bench = f"{dash:>10} {dash:>5}"
    if r.bench_train is not None:
        bench = f"{r.bench_train:>10.0f} {r.bench_train / r.bare:>5.2f}"
    peak = f"{r.peak_gib:>8.2f}" if r.peak_gib is not None else f"{dash:>8}"
    return (
        f"{r.backbone:<9} {r.batch_size:>5} {r.ctcid_train:>10.0f} {r.bare:>10.0f} "
        f"{r.ctcid_train / r.bare:>5.2f} {bench} {r.ctcid_infer:>9.0f} {r.ctcid_infer_large:>9.0f} "
        f"{r.bare_infer_large:>9.0f} {peak} {r.seconds:>5.1f}  ({r.bare_before:.0f}/{r.bare_after:.0f})"
    )


def print_estimates(results: list[Result], scale: Scale, input_size: int) -> None:
    print(
        f"\nESTIMATES from the measured ctcid crops/s above, not measured runs. One {scale.n_folds}-fold CV "
        f"trial = {scale.n_folds} folds x {scale.epochs} epochs x {scale.rows_per_fold:,.0f} training rows\n"
        f"per fold / ctcid train crops/s; '+ scoring' adds {scale.val_rows:,.0f} validation rows per epoch "
        f"and {scale.val_all:,.0f} out-of-fold cells per fold at infer@b. Every fold runs all its epochs."
    )
    timeout = f"{scale.timeout_s:,.0f} s" if scale.timeout_s else "none"
    study = f"study of {scale.n_trials} trials"
    print(
        f"{'backbone':<9} {'batch':>5} {'trial (train only)':>20} {'trial + scoring':>20} {study:>22}"
        f"  trials in tune.timeout_s ({timeout})"
    )
    for r in results:
        e = estimate(r, scale)
        fits = f"{e['trials_in_timeout']:.1f}" if e["trials_in_timeout"] is not None else "-"
        print(
            f"{r.backbone:<9} {r.batch_size:>5} {hours(e['trial_train_s']):>20} {hours(e['trial_s']):>20} "
            f"{hours(e['study_s']):>22}  {fits}"
        )
    crop_bytes = 3 * input_size * input_size * 4
    total = scale.train_cells * crop_bytes / GIB
    print(
        f"Host memory: during CV ctcid holds every training cell's crop as float32 at {input_size} px: "
        f"{scale.train_cells:,.0f} cells x {crop_bytes / 2**10:,.0f} KiB = {total:,.1f} GiB, plus each "
        "fold's subsets."
    )


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", type=Path, default=Path("configs/paper.yaml"),
        help="params whose train, simulate, split and tune settings set the scale (default: %(default)s)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--batch-sizes", nargs="+", type=int, help="(default: train.batch_size, 64)")
    parser.add_argument("--n", type=int, default=4096, help="crops per timed epoch (default 4096)")
    parser.add_argument("--input-size", type=int, help="(default: train.input_size, 224)")
    parser.add_argument("--crop-size", type=int, help="synthetic crop side (default: segment.crop_size, 48)")
    parser.add_argument("--infer-batch", type=int, default=512, help="large inference batch (default 512)")
    parser.add_argument("--rows-per-fold", type=float, help="(default: derived from --config, as above)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument(
        "--budget-s", type=float, default=240.0,
        help="start no new backbone or batch size after this many seconds (default 240)",
    )
    parser.add_argument("--json", type=Path, help="write the results here (after every backbone)")
    args = parser.parse_args()

    params = load_params(args.config)
    train = params.train
    input_size = args.input_size or train.input_size
    crop_size = args.crop_size or params.segment.crop_size
    batch_sizes = args.batch_sizes or [train.batch_size]
    if args.n < max(batch_sizes):
        parser.error(f"--n {args.n} must hold at least one batch of {max(batch_sizes)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    scale = Scale.from_params(params, args.rows_per_fold)
    options = FitOptions.from_params(train, seed=0)
    info = device_info(device)

    with tempfile.TemporaryDirectory() as tmp:
        crops = open_crops(synthetic_crops(Path(tmp) / "crops.npy", args.n, crop_size))
        rows = np.arange(args.n)
        load_started = time.perf_counter()
        images = read_crops(crops, rows, input_size)
        load_seconds = time.perf_counter() - load_started
        del crops
    host = LabelledCrops(images, torch.as_tensor(rows % 2, dtype=torch.int64), rows)
    normalisation = Normalisation.fit(images[:512])  # its statistics are irrelevant to speed
    # the bare loops' crops: shuffled once and on the device, so that they cost nothing per step
    order = torch.randperm(args.n, generator=torch.Generator().manual_seed(0))
    on_device = (torch.empty_like(images, device=device), host.labels[order].to(device))
    for start in range(0, args.n, 512):
        on_device[0][start : start + 512] = images[order[start : start + 512]].to(device)
    sync(device)

    memory = f", {info['memory_gib']} GiB, sm {info['capability']}" if device.type == "cuda" else ""
    print(
        f"device {info['name']} ({info['device']}{memory}); torch {info['torch']}, CUDA {info['cuda']}, "
        f"cuDNN {info['cudnn']}, Python {info['python']}, {info['cpu_threads']} CPU threads"
    )
    print(
        f"{args.n} synthetic {crop_size}-px crops -> {input_size} px read in {load_seconds:.1f} s "
        f"({images.nelement() * 4 / GIB:.2f} GiB float32); autocast {info['autocast']}; "
        f"lr {train.learning_rate}, augment {train.augment}; config {args.config}"
    )
    print(
        "\ncrops/s (tr: training; infer@b: predict_scores at the training batch, @L: at --infer-batch "
        f"{args.infer_batch}); x = bench / bare; bare before/after in brackets"
    )
    print(HEADER)

    results: list[Result] = []
    skipped: list[str] = []

    def dump() -> None:
        if args.json is None:
            return
        settings = {
            "config": str(args.config), "input_size": input_size, "crop_size": crop_size, "n": args.n,
            "batch_sizes": batch_sizes, "infer_batch": args.infer_batch,
        }
        report = {
            "info": info,
            "settings": settings,
            "scale": asdict(scale),
            "results": [asdict(r) | {"estimate": estimate(r, scale)} for r in results],
            "skipped": skipped,
            "wall_s": time.perf_counter() - started,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")

    for backbone in args.backbones:
        for batch in batch_sizes:
            if time.perf_counter() - started > args.budget_s:
                skipped.append(f"{backbone}@{batch}")
                continue
            result = measure(
                backbone, batch, host, on_device, normalisation, options, input_size, args.infer_batch, device
            )
            results.append(result)
            print(row_line(result))
            dump()
    if skipped:
        print(f"skipped after --budget-s {args.budget_s:.0f} s: {', '.join(skipped)}")
    print_estimates(results, scale, input_size)
    print(f"\nwall time {time.perf_counter() - started:.1f} s")
    dump()


if __name__ == "__main__":
    main()
