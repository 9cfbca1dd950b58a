"""The shared training loop: validation split, schedule semantics, NaN guard, checkpoint resume.

A small NumPy least-squares model implements the backend Model interface, so the loop's logic is
tested on its own, quickly; the backends' own tests run the same loop on the real networks.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from fly64_train.backends.base import Model
from fly64_train.tracking.csv_logger import CsvLogger
from fly64_train.config import TrainingConfig
from fly64_train.specs import loop_settings
from fly64_train.training import (CHECKPOINT_NAME, NonFiniteLoss, cosine_learning_rate, run_training,
                                  split_validation)


class LeastSquaresModel(Model):
    """Fits w so that mean over pixels of x·w matches 1 (SGD with momentum); a real model of the interface."""

    def __init__(self, channels: int, lr: float = 0.05, loss_override=None, interrupt_at_step=None,
                 frozen: bool = False):
        self.frozen = frozen
        self.w = np.linspace(0.5, 1.5, channels).astype(np.float64)
        self.velocity = np.zeros_like(self.w)
        self._lr = lr
        self.steps = 0
        self.rates = []  # the learning rate of every step taken
        self.loss_override = loss_override
        self.interrupt_at_step = interrupt_at_step

    def _features(self, x):
        return x.mean(axis=(1, 2)).astype(np.float64)

    def _loss(self, x):
        return float(np.mean((self._features(x) @ self.w - 1.0) ** 2))

    def train_step(self, x, rel, target=None):
        self.steps += 1
        self.rates.append(self._lr)
        if self.interrupt_at_step == self.steps:
            raise KeyboardInterrupt("simulated kill")
        features = self._features(x)
        grad = 2 * features.T @ (features @ self.w - 1.0) / len(x)
        if not self.frozen:
            self.velocity = 0.9 * self.velocity + grad
            self.w -= self._lr * self.velocity
        if self.loss_override is not None:
            return self.loss_override(self.steps)
        return self._loss(x)

    def loss(self, x, rel, target=None):
        return self._loss(x)

    def predict(self, x, rel):
        raise AssertionError("not used by the loop")

    def get_weights(self):
        return {"w": self.w.copy()}

    def set_weights(self, weights):
        self.w = np.array(weights["w"])

    @property
    def learning_rate(self):
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value):
        self._lr = value

    def optimizer_state(self):
        return {"velocity": self.velocity.copy(), "steps": np.array(self.steps)}

    def set_optimizer_state(self, state):
        self.velocity = np.array(state["velocity"])
        self.steps = int(state["steps"])


def data(n=64, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 1.5, size=(n, 4, 4, channels)).astype(np.float32)
    return x, np.zeros((n, channels, 2), np.float32)


def settings(**kw):
    base = dict(epochs=6, batch_size=8, validation_fraction=0.25, seed=3)
    base.update(kw)
    return loop_settings(TrainingConfig(), **base)


def test_validation_split_is_disjoint_seeded_and_sized():
    train, val = split_validation(100, 0.05, seed=1)
    assert len(val) == 5 and len(train) == 95 and not set(train) & set(val)
    assert np.array_equal(split_validation(100, 0.05, 1)[1], val)
    assert not np.array_equal(split_validation(100, 0.05, 2)[1], val)
    assert len(split_validation(1, 0.5, 0)[1]) == 0


def test_loss_falls_and_the_csv_logger_writes_the_history(tmp_path):
    x, rel = data()
    result = run_training(LeastSquaresModel(2), x, rel, settings(), tmp_path, callbacks=[CsvLogger(tmp_path)])
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0]
    assert result.train_groups == 48 and result.validation_groups == 16
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,loss,val_loss,lr,seconds" and len(lines) == 1 + result.epochs_completed
    assert [float(line.split(",")[1]) for line in lines[1:]] == pytest.approx(losses)


class Recorder:
    def __init__(self):
        self.calls = []

    def on_epoch_end(self, row, history):
        self.calls.append((dict(row), len(history)))


def test_callbacks_get_every_epoch_and_a_resumed_run_continues_the_history(tmp_path):
    x, rel = data()
    first = Recorder()
    killed = LeastSquaresModel(2, interrupt_at_step=6 * 2 + 2)  # 6 steps per epoch: dies in epoch 3
    with pytest.raises(KeyboardInterrupt):
        run_training(killed, x, rel, settings(), tmp_path, fingerprint="f", callbacks=[first])
    assert [(row["epoch"], n) for row, n in first.calls] == [(1, 1), (2, 2)]
    assert set(first.calls[0][0]) == {"epoch", "loss", "val_loss", "lr", "seconds"}
    resumed = Recorder()
    result = run_training(LeastSquaresModel(2), x, rel, settings(), tmp_path, fingerprint="f", callbacks=[resumed])
    assert result.resumed_from_epoch == 2
    assert [(row["epoch"], n) for row, n in resumed.calls] == [(e, e) for e in range(3, result.epochs_completed + 1)]
    assert resumed.calls[-1][0] == result.history[-1]


def test_plateau_halves_the_rate_down_to_min_lr_and_early_stopping_stops(tmp_path):
    x, rel = data()
    flat = LeastSquaresModel(2, lr=1e-3, loss_override=lambda step: 1.0, frozen=True)  # nothing improves
    result = run_training(flat, x, rel, settings(epochs=20, min_lr=2.5e-4, lr_plateau_patience=2,
                                                 early_stopping_patience=3), tmp_path)
    # Loss never improves after epoch 1: early stopping after 3 more epochs.
    assert result.stopped_early and result.epochs_completed == 4
    assert [row["lr"] for row in result.history] == [1e-3, 1e-3, 1e-3, 5e-4]


def test_non_finite_loss_stops_the_job(tmp_path):
    x, rel = data()
    model = LeastSquaresModel(2, loss_override=lambda step: math.nan if step == 9 else 1.0)
    with pytest.raises(NonFiniteLoss, match="epoch 2"):
        run_training(model, x, rel, settings(), tmp_path)


def test_a_killed_job_resumes_from_its_last_epoch_and_ends_identical(tmp_path):
    x, rel = data()
    uninterrupted = run_training(LeastSquaresModel(2), x, rel, settings(), tmp_path / "a", fingerprint="f")
    reference = LeastSquaresModel(2)
    run_training(reference, x, rel, settings(), tmp_path / "b", fingerprint="f")

    killed = LeastSquaresModel(2, interrupt_at_step=6 * 3 + 2)  # 6 steps per epoch: dies in epoch 4
    (tmp_path / "c").mkdir()
    with pytest.raises(KeyboardInterrupt):
        run_training(killed, x, rel, settings(), tmp_path / "c", fingerprint="f")
    assert (tmp_path / "c" / CHECKPOINT_NAME).is_file()
    resumed_model = LeastSquaresModel(2)
    resumed = run_training(resumed_model, x, rel, settings(), tmp_path / "c", fingerprint="f")
    assert resumed.resumed_from_epoch == 3
    untimed = [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history]
    assert untimed == [{k: v for k, v in row.items() if k != "seconds"} for row in uninterrupted.history]
    assert np.array_equal(resumed_model.w, reference.w)


def test_a_checkpoint_from_another_config_is_ignored(tmp_path):
    x, rel = data()
    run_training(LeastSquaresModel(2), x, rel, settings(epochs=2), tmp_path, fingerprint="old")
    result = run_training(LeastSquaresModel(2), x, rel, settings(epochs=2), tmp_path, fingerprint="new")
    assert result.resumed_from_epoch == 0 and result.epochs_completed == 2


class StepRecorder:
    """A callback that keeps what the loop's step hooks tell it."""

    def __init__(self):
        self.begun, self.steps, self.ended = [], [], []

    def on_train_begin(self, steps):
        self.begun.append(steps)

    def on_step_end(self, step, loss, epoch):
        self.steps.append((step, epoch))

    def on_train_end(self, steps, epoch):
        self.ended.append((steps, epoch))


def test_max_steps_ends_mid_epoch_and_step_hooks_count_every_step(tmp_path):
    x, rel = data(n=40)  # 38 training groups, batch 8: 5 steps per epoch
    recorder = StepRecorder()
    settings = loop_settings(TrainingConfig(), epochs=10, batch_size=8, checkpoint=True, max_steps=12,
                             early_stopping_patience=100)
    result = run_training(LeastSquaresModel(2), x, rel, settings, tmp_path, callbacks=[recorder])
    assert result.steps == 12 and result.epochs_completed == 3  # 5 + 5 + 2
    assert recorder.begun == [0] and recorder.ended == [(12, 3)]
    assert [s for s, _ in recorder.steps] == list(range(1, 13))
    assert [e for _, e in recorder.steps] == [1] * 5 + [2] * 5 + [3] * 2
    # resumed from the checkpoint, the budget is already spent: nothing more is trained
    again = StepRecorder()
    resumed = run_training(LeastSquaresModel(2), x, rel, settings, tmp_path, callbacks=[again])
    assert resumed.steps == 12 and again.begun == [12] and again.steps == [] and again.ended == [(12, 3)]


def test_cosine_rate_warms_up_linearly_then_falls_as_a_half_cosine_to_the_floor():
    rate = lambda step: cosine_learning_rate(step, initial=1e-3, floor=1e-5, warmup=4, total=104)
    assert [rate(s) for s in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert rate(4) == pytest.approx(1e-3)  # the cosine starts where the warm-up ends
    assert rate(54) == pytest.approx((1e-3 + 1e-5) / 2)  # half way: the mean of the ends
    assert rate(29) == pytest.approx(1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi / 4)) / 2)
    assert rate(104) == pytest.approx(1e-5) and rate(500) == pytest.approx(1e-5)
    falling = [rate(s) for s in range(4, 105)]
    assert all(a > b for a, b in zip(falling, falling[1:]))
    assert cosine_learning_rate(0, 1e-3, 1e-5, warmup=0, total=10) == pytest.approx(1e-3)


def test_cosine_sets_every_steps_rate_over_the_budget_and_plateaus_do_not_halve_it(tmp_path):
    x, rel = data(n=40)  # 38 training groups, batch 8: 5 steps per epoch
    flat = LeastSquaresModel(2, lr=1e-3, loss_override=lambda step: 1.0, frozen=True)  # a plateau throughout
    run = settings(epochs=10, batch_size=8, validation_fraction=0.05, lr_schedule="cosine", warmup_steps=3,
                   min_lr=1e-5, max_steps=23, lr_plateau_patience=1, early_stopping_patience=100)
    result = run_training(flat, x, rel, run, tmp_path)
    assert result.steps == 23
    assert flat.rates == pytest.approx([cosine_learning_rate(s, 1e-3, 1e-5, 3, 23) for s in range(23)])
    # without max_steps the budget is epochs × batches: 4 epochs of 5 steps
    fresh = LeastSquaresModel(2, lr=1e-3)
    run_training(fresh, x, rel, settings(epochs=4, batch_size=8, validation_fraction=0.05, lr_schedule="cosine",
                                         min_lr=1e-5, early_stopping_patience=100), tmp_path / "b")
    assert len(fresh.rates) == 20 and fresh.rates[0] == pytest.approx(1e-3)
    assert fresh.rates[-1] == pytest.approx(cosine_learning_rate(19, 1e-3, 1e-5, 0, 20))


def test_a_killed_cosine_job_resumes_on_the_same_rates(tmp_path):
    x, rel = data()  # 6 steps per epoch
    run = settings(lr_schedule="cosine", warmup_steps=5, min_lr=1e-4, learning_rate=0.05)
    reference = LeastSquaresModel(2)
    run_training(reference, x, rel, run, tmp_path / "a", fingerprint="f")
    killed = LeastSquaresModel(2, interrupt_at_step=6 * 3 + 2)
    with pytest.raises(KeyboardInterrupt):
        run_training(killed, x, rel, run, tmp_path / "b", fingerprint="f")
    resumed = LeastSquaresModel(2)
    run_training(resumed, x, rel, run, tmp_path / "b", fingerprint="f")
    assert killed.rates[:18] + resumed.rates == reference.rates
    assert np.array_equal(resumed.w, reference.w)
