"""The learning-curve instrument: quality every K optimiser steps (evaluate.every_steps).

A training-loop callback. At step 0 and every K-th optimiser step (and after the last) it predicts
two FIXED subsets of patterns, one of the test split and one of the training split (about
evaluate.curve_patterns each, drawn once with the data's grouping seed, so every seed and every
candidate is scored on the same patterns), and records the mean per-patch amplitude and phase
correlation with the true patches (evaluation.patchwise_correlation, central N/2 crop, as the final
evaluation), the mean training loss since the previous point, the learning rate, the training time
(scoring excluded) and the wall time. Points go to curves.csv in the run directory (rewritten whole
after every point) and to the trackers (`on_curve_point`). Test and training split side by side tell
over- from under-fitting; the per-patch correlation separates a reconstruction (≈ 0.9) from a
template (≈ 0), which the loss cannot. With extra training tiles (dataset.extra_train_tiles) the
training split is mostly other pictures, so a third subset, `train_study`, draws training groups
from the study object alone: the same picture as the test split, its other half.
"""
from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from fly64_train import files, physics

log = logging.getLogger(__name__)

CURVES_NAME = "curves.csv"
SPLITS = ("test", "train", "train_study")  # train_study: with extra tiles only (NaN otherwise)
FIELDS = ("step", "epoch", "loss", "lr", "train_seconds", "wall_seconds",
          *(f"{split}_{part}_patch_corr" for split in SPLITS for part in ("amplitude", "phase")))


@dataclass
class CurveSubset:
    """Fixed groups of one split: model inputs and the members' true patches (n·C, N, N)."""
    x: np.ndarray
    rel: np.ndarray
    truth: np.ndarray

    @property
    def n_patterns(self) -> int:
        return len(self.truth)


def curve_subset(inputs, obj: np.ndarray, patterns: int, seed: int,
                 groups: Optional[np.ndarray] = None) -> CurveSubset:
    """About `patterns` patterns of a split (whole groups: ⌈patterns / C⌉ of them, or all), drawn with `seed`
    from all its groups or from the group indices `groups`."""
    pool = np.arange(inputs.x.shape[0]) if groups is None else np.asarray(groups, dtype=np.int64)
    if pool.size == 0:
        raise ValueError("curve_subset: no groups to draw from")
    count = min(pool.size, -(-int(patterns) // inputs.x.shape[-1]))
    picked = np.random.default_rng([int(seed), 0xC0C0]).choice(pool.size, size=count, replace=False)
    chosen = np.sort(pool[picked])
    xy = inputs.positions[chosen].reshape(-1, 2)
    truth = physics.extract_patches(np.asarray(obj), xy[:, 0], xy[:, 1], inputs.x.shape[1]).astype(np.complex64)
    return CurveSubset(x=inputs.x[chosen], rel=inputs.rel[chosen], truth=truth)


def read_curves(path: Path) -> list[dict[str, Any]]:
    """Points of a curves.csv (numbers as floats, step and epoch as ints); [] when absent."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{key: (int(value) if key in ("step", "epoch") else float(value) if value != "" else math.nan)
             for key, value in row.items()} for row in rows]


class StepCurves:
    """Training-loop callback (on_train_begin, on_step_end, on_train_end) drawing the learning curves."""

    def __init__(self, model, subsets: dict[str, CurveSubset], every: int, run_dir: Path, *,
                 trackers: Sequence[Any] = (), batch_size: int = 64):
        if every < 1:
            raise ValueError(f"every must be a positive number of optimiser steps, got {every}")
        unknown = set(subsets) - set(SPLITS)
        if unknown:
            raise ValueError(f"curve subsets {sorted(unknown)}; expected {SPLITS}")
        self.model, self.subsets, self.every = model, subsets, int(every)
        self.path = Path(run_dir) / CURVES_NAME
        self.trackers, self.batch_size = list(trackers), int(batch_size)
        self.points: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._started = self._scoring = 0.0
        self._previous_seconds = (0.0, 0.0)  # training / wall seconds before a resume

    # -- the loop's hooks -----------------------------------------------------------------------
    def on_train_begin(self, steps: int) -> None:
        """A fresh run records step 0; a resumed one keeps its points up to where it resumes."""
        self._started, self._scoring = time.perf_counter(), 0.0
        self.points = [p for p in read_curves(self.path) if p["step"] <= steps] if steps else []
        if self.points:
            self._previous_seconds = (self.points[-1]["train_seconds"], self.points[-1]["wall_seconds"])
        if steps == 0:
            self._record(0, 0)

    def on_step_end(self, step: int, loss: float, epoch: int) -> None:
        self._losses.append(float(loss))
        if step % self.every == 0:
            self._record(step, epoch)

    def on_train_end(self, steps: int, epoch: int) -> None:
        if not self.points or self.points[-1]["step"] != steps:
            self._record(steps, epoch)

    # -- scoring ------------------------------------------------------------------------------------
    def correlations(self, subset: CurveSubset) -> tuple[float, float]:
        from fly64_train import evaluation

        patches = np.concatenate([self.model.predict(subset.x[i:i + self.batch_size],
                                                     subset.rel[i:i + self.batch_size]).patches
                                  for i in range(0, len(subset.x), self.batch_size)])
        patches = patches.reshape(-1, *patches.shape[-2:])
        scores = evaluation.patchwise_correlation(patches, subset.truth, crop=patches.shape[-1] // 2)
        return scores["amplitude_correlation"], scores["phase_correlation"]

    def _record(self, step: int, epoch: int) -> None:
        began = time.perf_counter()
        elapsed = began - self._started
        point: dict[str, Any] = {
            "step": int(step), "epoch": int(epoch),
            "loss": float(np.mean(self._losses)) if self._losses else math.nan,
            "lr": float(self.model.learning_rate),
            "train_seconds": round(self._previous_seconds[0] + elapsed - self._scoring, 3),
            "wall_seconds": round(self._previous_seconds[1] + elapsed, 3)}
        for split in SPLITS:
            amplitude, phase = self.correlations(self.subsets[split]) if split in self.subsets else (math.nan,) * 2
            point[f"{split}_amplitude_patch_corr"], point[f"{split}_phase_patch_corr"] = amplitude, phase
        self._losses = []
        self.points.append(point)
        self._write()
        for tracker in self.trackers:
            hook = getattr(tracker, "on_curve_point", None)
            if hook is not None:
                hook(point)
        self._scoring += time.perf_counter() - began
        log.info("step %d: per-patch correlation (amplitude / phase) %s", step, ", ".join(
            f"{split} {point[f'{split}_amplitude_patch_corr']:.3f} / {point[f'{split}_phase_patch_corr']:.3f}"
            for split in SPLITS if split in self.subsets))

    def _write(self) -> None:
        with files.atomic_output(self.path) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows(self.points)


def escape(points: Sequence[dict[str, Any]], threshold: float = 0.8,
           key: str = "test_phase_patch_corr") -> Optional[dict[str, Any]]:
    """The first point whose `key` reaches `threshold` (an 'escape' from the template), or None."""
    for point in points:
        value = point.get(key)
        if value is not None and math.isfinite(value) and value >= threshold:
            return point
    return None
