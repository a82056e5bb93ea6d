"""The training loop: short and explicit, in the style of torchvision's reference scripts.

Seeded and deterministic on CPU; AdamW; cross-entropy with optional class weights; early
stopping on validation AUC (ties broken by validation loss) with patience; autocast (bfloat16)
only on CUDA. Per-epoch numbers go to an ``on_epoch`` callback so that tracking (MLflow, Optuna
pruning) stays out of the loop. Nothing in a step waits for the device: batches are read,
standardised, resized and augmented on it (:class:`~ctcid.model.dataset.CropBatches`), the loss is
summed there and read once per epoch.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn
from torch.nn import functional as F

from ctcid.config.train import SiteShift, TrainParams
from ctcid.contracts import Negatives
from ctcid.errors import CtcidError
from ctcid.model.dataset import CellFacts, CropBatches, LabelledCrops
from ctcid.model.shift import DEFAULT_CHANNELS, NO_SITE_SHIFT
from ctcid.parallel import progress_bar


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float | None = None
    val_auc: float | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        values = {"train_loss": self.train_loss, "val_loss": self.val_loss, "val_auc": self.val_auc}
        return {key: value for key, value in values.items() if value is not None and math.isfinite(value)}


@dataclass
class FitResult:
    model: nn.Module  # weights of the best epoch (the last one without validation data)
    best_epoch: int
    history: list[EpochMetrics] = field(default_factory=list)
    val_scores: np.ndarray | None = None  # CTC probabilities of the validation crops, best epoch


EpochCallback = Callable[[EpochMetrics], None]


def seed_everything(seed: int, deterministic: bool = True, device: torch.device | None = None) -> None:
    """Seed every generator a run touches and choose the kernels (``train.deterministic``).

    ``deterministic`` asks for deterministic kernels (a few CUDA ones have no deterministic
    variant; ``warn_only`` keeps them usable rather than failing) and turns off cuDNN's benchmark
    search. False lets cuDNN pick the fastest kernel per shape, which differs between runs (what it
    costs: docs/benchmarks.md, GPU); it applies to CUDA ``device`` only, so two CPU runs with the
    same seed and thread count stay bit-identical whatever it says.
    """
    strict = deterministic or (device is not None and device.type != "cuda")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(strict, warn_only=True)
    torch.backends.cudnn.benchmark = not strict


def flush_denormals() -> None:
    """Flush subnormal floats to zero on CPU.

    Networks without BatchNorm (VGG, AlexNet) trained from scratch drift into tiny activations and
    gradients; x86 arithmetic on subnormals is microcoded, which made VGG16 epochs 3-4x slower
    here (bench/bench_train.py). Values below 1e-38 carry no information for the model.
    """
    torch.set_flush_denormal(True)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(choice: str) -> torch.device:
    """``train.device``: auto (CUDA when present), cpu or cuda."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise CtcidError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return default_device() if choice == "auto" else torch.device(choice)


def _amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision only on CUDA: on CPU, reduced-precision convolutions are slower and less exact."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    dtype = _amp_dtype(device)
    return contextlib.nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype)


@dataclass(frozen=True)
class FitOptions:
    """How one model is fitted: the optimisation knobs of ``train`` plus this fit's seed and epochs."""

    epochs: int  # most epochs; with validation data, early stopping may end sooner
    patience: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    augment: bool
    intensity_jitter: float
    seed: int
    # downsample: fit the crops as given; class_weight: weight the loss to balance the classes of
    # the crops given; resample: a fresh balanced draw of them every epoch
    negatives: Negatives = "downsample"
    # site-shift augmentation of augmented batches (none unless asked for) and the stain of each
    # channel of the crops (params.channels), which it needs to know DAPI, CEP8 and CD45 apart
    site_shift: SiteShift = NO_SITE_SHIFT
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    # weight of the auxiliary heads' loss (CEP8 copies, CD45 status); 0 = none (train.aux_weight)
    aux_weight: float = 0.0
    # train.deterministic: deterministic CUDA kernels (CPU runs are deterministic either way)
    deterministic: bool = True

    @classmethod
    def from_params(
        cls, config: TrainParams, seed: int, channels: Sequence[str] = DEFAULT_CHANNELS
    ) -> FitOptions:
        """``train.*`` with this seed; ``channels`` is ``params.channels`` (default: its default order)."""
        return cls(
            epochs=config.epochs,
            patience=config.patience,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            augment=config.augment,
            intensity_jitter=config.intensity_jitter,
            seed=seed,
            negatives=config.negatives,
            # the shift's offsets and noise are in standardised units: on raw counts they would be
            # nothing, so a model of counts (train.standardise: false) trains as before it existed
            site_shift=config.site_shift if config.standardise else NO_SITE_SHIFT,
            channels=tuple(channels),
            aux_weight=config.aux_weight,
            deterministic=config.deterministic,
        )


def fit(
    model: nn.Module,
    train: LabelledCrops,
    val: LabelledCrops | None,
    options: FitOptions,
    *,
    on_epoch: EpochCallback | None = None,
    device: torch.device | None = None,
    description: str = "train",
    show_progress: bool = True,
) -> FitResult:
    """Train ``model`` on ``train`` for ``options.epochs``; with ``val``, keep the best epoch, stop early."""
    device = device or default_device()
    flush_denormals()
    model.to(device)
    step = _TrainingStep.for_fit(model, train, options, device)
    # made once: on a GPU the validation crops move there once, not every epoch
    val_batches = None if val is None else CropBatches(val, options.batch_size, device=device)
    best = _BestEpoch()
    history: list[EpochMetrics] = []
    with progress_bar(disable=not show_progress) as progress, step.heads_attached():
        task = progress.add_task(description, total=len(step.batches))
        for epoch in range(1, options.epochs + 1):
            label = f"{description} epoch {epoch}/{options.epochs}"
            progress.reset(task, total=len(step.batches), description=label)
            started = time.perf_counter()
            train_loss = step.run_epoch(model, device, lambda: progress.advance(task))
            if val is None or val_batches is None:
                metrics = EpochMetrics(epoch, train_loss, seconds=time.perf_counter() - started)
            else:
                scores, val_loss = _evaluate(model, val_batches, step.criterion, device)
                auc = _auc(val.labels.numpy(), scores)
                metrics = EpochMetrics(epoch, train_loss, val_loss, auc, time.perf_counter() - started)
                best.offer(epoch, auc, val_loss, scores, model)
            history.append(metrics)
            if on_epoch is not None:
                on_epoch(metrics)
            if show_progress:
                progress.console.print(f"{description} {_summary(metrics)}", highlight=False)
            if val is not None and epoch - best.epoch >= options.patience:
                break
    if val is None:  # the last epoch is the result
        return FitResult(model, history[-1].epoch, history)
    if best.state is None:
        raise CtcidError(
            f"{description}: the validation loss was NaN in every epoch (training diverged); "
            "lower train.learning_rate"
        )
    model.load_state_dict(best.state)
    return FitResult(model, best.epoch, history, best.scores)


class AuxiliaryHeads(nn.Module):
    """CEP8 copy number and CD45 status predicted from the classifier's pooled features.

    A multi-task loss: the network must represent the two facts the criterion is made of, so its
    CTC call cannot rest on nuclear size alone. The heads read the input of the model's last
    linear layer through a hook and live only during training: the saved model is the classifier.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # the pooled features: a fusion model's feature head, else the last linear layer's input
        final = getattr(model, "head", None) or [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        self.head = nn.Linear(final.in_features, 2)
        self._features: Tensor | None = None
        self._hook = final.register_forward_pre_hook(self._capture)

    def _capture(self, _module: nn.Module, args: tuple[Tensor, ...]) -> None:
        self._features = args[0]

    def loss(self, facts: CellFacts) -> Tensor:
        """Smooth-L1 on copies (in units of the diploid 2) plus CD45 cross-entropy, last forward pass."""
        if self._features is None:
            raise RuntimeError("the auxiliary heads need a forward pass of the model first")
        out = self.head(self._features.float())
        copies = F.smooth_l1_loss(out[:, 0], facts.copies / 2.0)
        cd45 = F.binary_cross_entropy_with_logits(out[:, 1], facts.cd45_positive)
        return copies + cd45

    def detach_hook(self) -> None:
        self._hook.remove()
        self._features = None


@dataclass
class _TrainingStep:
    """What one fit steps with: shuffled, augmented batches, the loss, AdamW and its schedule."""

    batches: CropBatches
    criterion: nn.Module
    optimiser: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: torch.optim.lr_scheduler.LRScheduler
    heads: AuxiliaryHeads | None = None
    aux_weight: float = 0.0

    @contextlib.contextmanager
    def heads_attached(self) -> Iterator[None]:
        """The auxiliary heads' hook for the fit only: evaluation and the saved model never see it."""
        try:
            yield
        finally:
            if self.heads is not None:
                self.heads.detach_hook()

    @classmethod
    def for_fit(
        cls, model: nn.Module, train: LabelledCrops, options: FitOptions, device: torch.device
    ) -> _TrainingStep:
        batches = CropBatches(
            train,
            options.batch_size,
            training=True,
            generator=torch.Generator().manual_seed(options.seed),
            # on CUDA the augmentation draws on the device: no host round trip per batch
            augment_generator=(
                torch.Generator(device=device).manual_seed(options.seed) if device.type == "cuda" else None
            ),
            device=device,
            intensity_jitter=options.intensity_jitter,
            augmented=options.augment,
            rebalance=options.negatives == "resample",
            site_shift=options.site_shift,
            channels=options.channels,
            hard=options.negatives == "hard",
        )
        weight = None
        if options.negatives == "class_weight":
            weight = torch.tensor(balanced_weights(train.labels), dtype=torch.float32, device=device)
        heads = None
        groups: list[dict[str, Any]] = [{"params": list(model.parameters())}]
        if options.aux_weight > 0:
            if train.facts is None:
                raise CtcidError("train.aux_weight > 0 needs the crops' CEP8 and CD45 facts; none loaded")
            heads = AuxiliaryHeads(model).to(device)
            groups.append({"params": list(heads.parameters())})
        optimiser = torch.optim.AdamW(groups, lr=options.learning_rate, weight_decay=options.weight_decay)
        # float16 gradients underflow without loss scaling; bfloat16 (and float32) need none
        scaler = torch.amp.GradScaler("cuda", enabled=_amp_dtype(device) == torch.float16)
        schedule = warmup_cosine(optimiser, len(batches), options.epochs * len(batches))
        criterion = nn.CrossEntropyLoss(weight=weight)
        return cls(batches, criterion, optimiser, scaler, schedule, heads, options.aux_weight)

    def run_epoch(self, model: nn.Module, device: torch.device, advance: Callable[[], None]) -> float:
        """One pass over the batches; returns the mean training loss (with the auxiliary heads' share).

        The loss is summed on the device and read once, at the end: a ``.item()`` per step would
        make the host wait for every step's kernels before queueing the next.
        """
        model.train()
        total = torch.zeros((), dtype=torch.float64, device=device)
        count = 0
        facts = self.batches.facts  # on the device, moved there once
        for rows, images, labels in self.batches.with_rows():
            with _autocast(device):
                loss = self.criterion(model(images), labels)
                if self.heads is not None and facts is not None:
                    aux = self.heads.loss(facts.take(rows))
                    loss = loss + self.aux_weight * aux
            self.optimiser.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimiser)
            self.scaler.update()
            self.schedule.step()
            total += loss.detach().double() * len(labels)
            count += len(labels)
            advance()
        return float(total) / max(count, 1)


@dataclass
class _BestEpoch:
    """Early stopping: the epoch with the best validation AUC, ties broken by lower validation loss."""

    key: tuple[float, float] = (-math.inf, -math.inf)
    epoch: int = 0
    state: dict[str, Tensor] | None = None
    scores: np.ndarray | None = None

    def offer(self, epoch: int, auc: float, val_loss: float, scores: np.ndarray, model: nn.Module) -> None:
        key = (auc if math.isfinite(auc) else -math.inf, -val_loss)
        if key > self.key:
            self.key, self.epoch, self.scores = key, epoch, scores
            self.state = copy.deepcopy(model.state_dict())


def balanced_weights(labels: Tensor) -> list[float]:
    """scikit-learn's "balanced" loss weights n / (2 n_class) of labels 0 and 1: each class half the loss."""
    counts = torch.bincount(labels, minlength=2).double().clamp_min(1.0)
    return (counts.sum() / (2.0 * counts)).tolist()


def warmup_cosine(
    optimiser: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero, per step (as torchvision's reference scripts).

    Plain VGG trained from scratch with AdamW at full rate in its first steps blew up (first-epoch
    loss 2.3 instead of 0.69) and often never recovered within a CPU-sized epoch budget.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


@torch.no_grad()
def _evaluate(
    model: nn.Module, batches: CropBatches, criterion: nn.Module, device: torch.device
) -> tuple[np.ndarray, float]:
    logits = _logits(model, batches, device)
    loss = criterion(logits, batches.labels).item()
    return torch.softmax(logits, dim=1)[:, 1].cpu().numpy(), loss


@torch.no_grad()
def score(
    model: nn.Module,
    data: LabelledCrops,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> np.ndarray:
    """CTC probability (softmax of the 2-class logits) of each crop of ``data``, shape ``(N,)``.

    Read, standardised and resized a batch at a time on ``device`` (default: the model's), the
    path training takes.
    """
    device = device or next(model.parameters()).device
    flush_denormals()
    logits = _logits(model, CropBatches(data, batch_size, device=device), device)
    return torch.softmax(logits, dim=1)[:, 1].cpu().numpy()


def predict_scores(
    model: nn.Module, images: Tensor, batch_size: int = 256, device: torch.device | None = None
) -> np.ndarray:
    """:func:`score` of images already in memory (model input: standardised, resized)."""
    unlabelled = LabelledCrops(images, torch.zeros(len(images), dtype=torch.int64), np.arange(len(images)))
    return score(model, unlabelled, batch_size, device)


def _logits(model: nn.Module, batches: CropBatches, device: torch.device) -> Tensor:
    model.eval()
    outputs = []
    for images, _ in batches:
        with _autocast(device):
            outputs.append(model(images).float())
    return torch.cat(outputs) if outputs else torch.empty((0, 2), device=device)


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, scores))


def _summary(metrics: EpochMetrics) -> str:
    parts = [f"epoch {metrics.epoch}", f"loss {metrics.train_loss:.4f}"]
    if metrics.val_loss is not None:
        parts += [f"val loss {metrics.val_loss:.4f}", f"val AUC {metrics.val_auc:.4f}"]
    return " ".join(parts + [f"{metrics.seconds:.1f}s"])
