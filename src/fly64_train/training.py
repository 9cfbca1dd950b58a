"""The framework-free training loop both backends run: seeded batches, validation split,
the learning-rate schedule (halving on plateau, or warm-up + cosine over the step budget), early
stopping, NaN guard, history, per-epoch checkpoints.
After every epoch it calls its callbacks' `on_epoch_end(row, history)` (the training loggers:
history.csv, TensorBoard, MLflow); a callback may also have `on_train_begin(steps)`,
`on_step_end(step, loss, epoch)` after every optimiser step and `on_train_end(steps, epoch)` (the
learning-curve instrument, step_curves.py); it imports none of them.

Schedule semantics follow Keras' ReduceLROnPlateau(monitor='val_loss', min_delta=1e-4) and
EarlyStopping(monitor='loss', min_delta=0) as the original used them (reference §5.5).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from fly64_train import files
from fly64_train.backends.base import Model

log = logging.getLogger(__name__)

PLATEAU_MIN_DELTA = 1e-4
CHECKPOINT_NAME = "checkpoint.npz"
# plateau: Keras' ReduceLROnPlateau at epoch ends (the reference); cosine: a linear warm-up, then a
# half cosine from the initial rate to min_lr over the job's step budget, set before every step.
LR_SCHEDULES = ("plateau", "cosine")


class EpochCallback(Protocol):
    def on_epoch_end(self, row: dict[str, Any], history: list[dict[str, Any]]) -> None: ...


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss; the job stops instead of writing a useless bundle."""


@dataclass
class LoopSettings:
    """The loop's schedule. No defaults: specs.loop_settings builds it from the config's trainer node."""
    epochs: int
    batch_size: int
    validation_fraction: float
    lr_plateau_factor: float
    lr_plateau_patience: int
    min_lr: float
    early_stopping_patience: int
    seed: int
    checkpoint: bool
    learning_rate: float  # the initial rate (cosine starts from it, also after a resume)
    lr_schedule: str  # one of LR_SCHEDULES
    warmup_steps: int  # cosine: steps of linear warm-up
    max_steps: Optional[int] = None  # stop after this many optimiser steps (None: epochs alone)


@dataclass
class LoopState:
    """Everything the loop needs to continue after a restart (besides weights and optimiser)."""
    epoch: int = 0  # epochs completed
    steps: int = 0  # optimiser steps completed
    history: list = field(default_factory=list)
    plateau_best: float = math.inf
    plateau_wait: int = 0
    stop_best: float = math.inf
    stop_wait: int = 0
    stopped_early: bool = False
    fingerprint: str = ""


@dataclass
class TrainResult:
    history: list
    epochs_completed: int
    final_loss: float
    stopped_early: bool
    resumed_from_epoch: int
    train_groups: int
    validation_groups: int
    seconds: float
    steps: int = 0  # optimiser steps completed


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of n groups into (train, validation) index arrays; validation may be empty."""
    n_val = int(round(n * fraction)) if n > 1 else 0
    n_val = min(n_val, n - 1)
    order = np.random.default_rng([seed, 1]).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# model_type=supervised: group indices → the members' true object patches (B, C, N, N) complex
Targets = Callable[[np.ndarray], np.ndarray]


def _target(targets: Optional[Targets], batch: np.ndarray) -> Optional[np.ndarray]:
    return None if targets is None else targets(batch)


def _batches(indices: np.ndarray, batch_size: int, rng: Optional[np.random.Generator]):
    order = rng.permutation(indices) if rng is not None else indices
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def _mean_loss(model: Model, x: np.ndarray, rel: np.ndarray, indices: np.ndarray, batch_size: int,
               targets: Optional[Targets] = None) -> float:
    total, count = 0.0, 0
    for batch in _batches(indices, batch_size, None):
        total += model.loss(x[batch], rel[batch], _target(targets, batch)) * len(batch)
        count += len(batch)
    return total / count


def step_budget(settings: LoopSettings, train_groups: int) -> int:
    """Optimiser steps the job runs unless it stops early: its epochs' batches, capped by max_steps."""
    steps = settings.epochs * math.ceil(train_groups / settings.batch_size)
    return steps if settings.max_steps is None else min(steps, settings.max_steps)


def cosine_learning_rate(step: int, initial: float, floor: float, warmup: int, total: int) -> float:
    """The rate for optimiser step `step` (0-based): linear warm-up to `initial` over `warmup` steps
    (so step 0 is not a full-rate step from random weights), then a half cosine that reaches `floor`
    at step `total`."""
    if step < warmup:
        return initial * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (initial - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def save_checkpoint(path: Path, model: Model, state: LoopState) -> None:
    arrays = {f"w/{k}": v for k, v in model.get_weights().items()}
    arrays.update({f"o/{k}": v for k, v in model.optimizer_state().items()})
    arrays["loop_state"] = np.array(json.dumps(asdict(state)))
    arrays["learning_rate"] = np.array(model.learning_rate)
    with files.atomic_file(path, needed=sum(a.nbytes for a in arrays.values())) as handle:
        np.savez(handle, **arrays)


def load_checkpoint(path: Path, model: Model, fingerprint: str) -> Optional[LoopState]:
    """Restore a checkpoint made from the same job (fingerprint); None when absent or foreign."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            state = LoopState(**json.loads(str(data["loop_state"])))
            if state.fingerprint != fingerprint:
                log.warning("ignoring checkpoint %s: made from a different configuration", path)
                return None
            model.set_weights({k[2:]: data[k] for k in data.files if k.startswith("w/")})
            model.set_optimizer_state({k[2:]: data[k] for k in data.files if k.startswith("o/")})
            model.learning_rate = float(data["learning_rate"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable checkpoint %s (%s); training from scratch", path, exc)
        return None
    return state


def run_training(model: Model, x: np.ndarray, rel: np.ndarray, settings: LoopSettings,
                 run_dir: Path, fingerprint: str = "", callbacks: Sequence[EpochCallback] = (),
                 targets: Optional[Targets] = None) -> TrainResult:
    """Train `model` on grouped data x (B,N,N,C), rel (B,C,2); checkpoints in run_dir; `callbacks`
    get every epoch's row (epoch, loss, val_loss, lr, seconds) and the history so far. `targets`
    (model_type=supervised) gives a batch's true patches from its group indices."""
    start = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    train_idx, val_idx = split_validation(len(x), settings.validation_fraction, settings.seed)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    state = load_checkpoint(checkpoint_path, model, fingerprint) if settings.checkpoint else None
    resumed_from = 0
    if state is None:
        state = LoopState(fingerprint=fingerprint)
    else:
        resumed_from = state.epoch
        log.info("resuming from checkpoint after epoch %d", state.epoch)

    _hooks(callbacks, "on_train_begin", state.steps)
    cosine = settings.lr_schedule == "cosine"
    total_steps = step_budget(settings, len(train_idx))

    def budget_left() -> bool:
        return settings.max_steps is None or state.steps < settings.max_steps

    while state.epoch < settings.epochs and not state.stopped_early and budget_left():
        epoch = state.epoch + 1
        epoch_start = time.perf_counter()
        rng = np.random.default_rng([settings.seed, epoch])
        n_batches = math.ceil(len(train_idx) / settings.batch_size)
        bar = files.progress(n_batches, f"epoch {epoch}/{settings.epochs}", unit="batch")
        total, count = 0.0, 0
        for batch in _batches(train_idx, settings.batch_size, rng):
            if cosine:  # a function of the step alone, so a resumed job follows the same rates
                model.learning_rate = cosine_learning_rate(state.steps, settings.learning_rate, settings.min_lr,
                                                           settings.warmup_steps, total_steps)
            loss = model.train_step(x[batch], rel[batch], _target(targets, batch))
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"training loss became {loss} at epoch {epoch}; stopping this job "
                                    "(check the data for zeros/NaN or lower trainer.learning_rate)")
            total += loss * len(batch)
            count += len(batch)
            state.steps += 1
            _hooks(callbacks, "on_step_end", state.steps, loss, epoch)
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            bar.update(1)
            if not budget_left():  # trainer.max_steps: the last epoch ends early
                break
        bar.close()
        train_loss = total / count
        val_loss = _mean_loss(model, x, rel, val_idx, settings.batch_size, targets) if len(val_idx) else math.nan
        if len(val_idx) and not math.isfinite(val_loss):
            raise NonFiniteLoss(f"validation loss became {val_loss} at epoch {epoch}; stopping this job")
        lr = model.learning_rate
        state.history.append({"epoch": epoch, "loss": train_loss, "val_loss": val_loss, "lr": lr,
                              "seconds": round(time.perf_counter() - epoch_start, 3)})
        _update_schedule(model, state, settings, train_loss, val_loss)
        state.epoch = epoch
        log.info("epoch %d/%d loss=%.6g val_loss=%.6g lr=%.3g time=%.1fs", epoch, settings.epochs,
                 train_loss, val_loss, lr, state.history[-1]["seconds"])
        _hooks(callbacks, "on_epoch_end", state.history[-1], state.history)
        if settings.checkpoint:
            save_checkpoint(checkpoint_path, model, state)

    _hooks(callbacks, "on_train_end", state.steps, state.epoch)
    final = state.history[-1]["loss"] if state.history else math.nan
    return TrainResult(history=state.history, epochs_completed=state.epoch, final_loss=final,
                       stopped_early=state.stopped_early, resumed_from_epoch=resumed_from,
                       train_groups=len(train_idx), validation_groups=len(val_idx),
                       seconds=time.perf_counter() - start, steps=state.steps)


def _hooks(callbacks: Sequence[Any], name: str, *args: Any) -> None:
    """Call the optional hook `name` of every callback that has it."""
    for callback in callbacks:
        hook = getattr(callback, name, None)
        if hook is not None:
            hook(*args)


def _update_schedule(model: Model, state: LoopState, settings: LoopSettings, loss: float, val_loss: float) -> None:
    if settings.lr_schedule == "plateau":  # (cosine sets the rate before every step instead)
        _reduce_on_plateau(model, state, settings, val_loss if math.isfinite(val_loss) else loss)
    # EarlyStopping on the training loss.
    if loss < state.stop_best:
        state.stop_best, state.stop_wait = loss, 0
    else:
        state.stop_wait += 1
        if state.stop_wait >= settings.early_stopping_patience:
            log.info("early stopping: loss has not improved for %d epochs", state.stop_wait)
            state.stopped_early = True


def _reduce_on_plateau(model: Model, state: LoopState, settings: LoopSettings, monitored: float) -> None:
    """ReduceLROnPlateau: halve after `patience` epochs without a min_delta improvement."""
    if monitored < state.plateau_best - PLATEAU_MIN_DELTA:
        state.plateau_best, state.plateau_wait = monitored, 0
        return
    state.plateau_wait += 1
    if state.plateau_wait >= settings.lr_plateau_patience:
        if model.learning_rate > settings.min_lr:
            new_lr = max(model.learning_rate * settings.lr_plateau_factor, settings.min_lr)
            log.info("reducing learning rate to %.3g", new_lr)
            model.learning_rate = new_lr
        state.plateau_wait = 0
