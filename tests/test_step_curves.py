"""The learning-curve instrument (evaluate.every_steps): fixed subsets, points every K steps on both
splits, curves.csv, the trackers, resume, and the escape point."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fly64_train import evaluation, physics
from fly64_train.data.contract import StudyData
from fly64_train.inputs import model_inputs
from fly64_train.step_curves import CURVES_NAME, FIELDS, StepCurves, curve_subset, escape, read_curves
from fly64_train.config import TrainingConfig
from fly64_train.specs import loop_settings
from fly64_train.training import run_training
from tests.backend_support import GENERATOR_FIELDS, installed_backend, make_spec


def split(seed: int, n: int = 24, N: int = 64) -> StudyData:
    """A small split of a random object: diffraction of its true patches through a smooth probe."""
    from tests.backend_support import smooth_object, smooth_probe

    rng = np.random.default_rng(seed)
    obj = smooth_object(3 * N, seed)
    xy = rng.uniform(N, 2 * N, size=(n, 2))
    probe = smooth_probe(N)
    patches = physics.extract_patches(obj, xy[:, 0], xy[:, 1], N)
    diffraction = physics.far_field_amplitude(physics.illuminate(patches, probe)).astype(np.float32)
    return StudyData(diffraction=diffraction, xcoords=xy[:, 0], ycoords=xy[:, 1], probe=probe.astype(np.complex64),
                     obj=obj)


class Collector:
    """A tracker that keeps the curve points it is given."""

    def __init__(self):
        self.points = []

    def on_curve_point(self, point):
        self.points.append(point)


def test_curve_subsets_are_fixed_whole_groups_with_their_truth():
    data = split(1)
    inputs = model_inputs(data, gridsize=2, neighbor_count=6, seed=3)
    first, again = curve_subset(inputs, data.obj, 10, seed=5), curve_subset(inputs, data.obj, 10, seed=5)
    assert first.x.shape[0] == 3 and first.n_patterns == 12  # ⌈10 / 4⌉ groups of C = 4
    np.testing.assert_array_equal(first.x, again.x)
    other = curve_subset(inputs, data.obj, 10, seed=6)
    assert not np.array_equal(first.x, other.x)
    everything = curve_subset(inputs, data.obj, 10_000, seed=5)
    assert everything.x.shape[0] == inputs.n_groups
    # drawn from given groups only: the same draw over an index pool, each group with its own truth
    pool = np.arange(1, inputs.n_groups, 2)
    odd = curve_subset(inputs, data.obj, 10, seed=5, groups=pool)
    rows = [int(np.flatnonzero((inputs.x == g).all(axis=(1, 2, 3)))[0]) for g in odd.x]
    assert odd.x.shape[0] == 3 and all(r % 2 == 1 for r in rows)
    xy = inputs.positions[rows].reshape(-1, 2)
    np.testing.assert_array_equal(odd.truth, physics.extract_patches(data.obj, xy[:, 0], xy[:, 1], 64))
    np.testing.assert_array_equal(curve_subset(inputs, data.obj, 10, seed=5, groups=np.arange(inputs.n_groups)).x,
                                  first.x)
    with pytest.raises(ValueError, match="no groups"):
        curve_subset(inputs, data.obj, 10, seed=5, groups=np.array([], int))


def test_points_every_k_steps_on_both_splits_into_curves_csv_and_the_trackers(tmp_path):
    backend = installed_backend("pytorch")
    train, test = split(1), split(2)
    train_inputs = model_inputs(train, 1, 1, seed=0)
    test_inputs = model_inputs(test, 1, 1, seed=0, norm=train_inputs.norm)
    spec = make_spec(gridsize=1, probe=train.probe, seed=4, ffno_width=4, **GENERATOR_FIELDS["ffno"])
    model = backend.build(spec)
    subsets = {"train": curve_subset(train_inputs, train.obj, 8, seed=1),
               "test": curve_subset(test_inputs, test.obj, 8, seed=1)}
    tracker = Collector()
    curves = StepCurves(model, subsets, every=2, run_dir=tmp_path, trackers=[tracker], batch_size=4)
    settings = loop_settings(TrainingConfig(), epochs=2, batch_size=8, validation_fraction=0.0, checkpoint=False,
                             max_steps=5)
    result = run_training(model, train_inputs.x, train_inputs.rel, settings, tmp_path, callbacks=[curves])
    assert result.steps == 5
    points = read_curves(tmp_path / CURVES_NAME)
    assert [p["step"] for p in points] == [0, 2, 4, 5] and list(points[0]) == list(FIELDS)
    assert tracker.points == curves.points and [p["step"] for p in tracker.points] == [0, 2, 4, 5]
    assert math.isnan(points[0]["loss"]) and all(math.isfinite(p["loss"]) for p in points[1:])
    assert points[-1]["train_seconds"] <= points[-1]["wall_seconds"]
    assert all(math.isnan(p[f"train_study_{part}_patch_corr"]) for p in points for part in ("amplitude", "phase"))
    # the last point is the model's correlation on those very patterns, computed independently
    for name, subset in subsets.items():
        patches = model.predict(subset.x, subset.rel).patches.reshape(-1, 64, 64)
        expected = evaluation.patchwise_correlation(patches, subset.truth, crop=32)
        assert points[-1][f"{name}_amplitude_patch_corr"] == pytest.approx(expected["amplitude_correlation"], abs=1e-5)
        assert points[-1][f"{name}_phase_patch_corr"] == pytest.approx(expected["phase_correlation"], abs=1e-5)
    # a resumed run keeps the points up to where it resumes, and records no second step 0
    resumed = StepCurves(model, subsets, every=2, run_dir=tmp_path, batch_size=4)
    resumed.on_train_begin(4)
    assert [p["step"] for p in resumed.points] == [0, 2, 4]


def test_escape_is_the_first_point_reaching_the_threshold():
    points = [{"step": 0, "test_phase_patch_corr": 0.1}, {"step": 50, "test_phase_patch_corr": math.nan},
              {"step": 100, "test_phase_patch_corr": 0.81}, {"step": 150, "test_phase_patch_corr": 0.9}]
    assert escape(points)["step"] == 100
    assert escape(points, threshold=0.95) is None
    with pytest.raises(ValueError, match="positive number of optimiser steps"):
        StepCurves(None, {}, every=0, run_dir=".")
