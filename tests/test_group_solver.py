"""benchmarks/group_solver.py: what a group's own patterns determine, over every member and the seeds."""
from __future__ import annotations

import numpy as np
import pytest

from fly64_train import physics
from fly64_train.data.contract import StudyData
from tests.conftest import load_benchmark
from tests.test_likelihood_bound import _probe, _smooth_object


def _module():
    return load_benchmark("group_solver")


def _noiseless_scan() -> StudyData:
    obj = _smooth_object((64, 64), 3)
    probe = _probe()
    ys, xs = np.mgrid[18:46:3, 18:46:3].reshape(2, -1).astype(np.float64) + 0.25
    amplitude = physics.forward_amplitude(obj, probe, xs, ys).astype(np.float32)
    return StudyData(diffraction=amplitude, xcoords=xs, ycoords=ys, probe=probe, obj=obj)


def test_single_patterns_score_the_same_over_members_and_seeds():
    rows = _module().solve(_noiseless_scan(), 1, 6, 0, [5], "raar")
    assert rows[0]["seed_amplitude_patch_corr"] == rows[0]["amplitude_patch_corr"]
    assert rows[0]["seed_phase_patch_corr"] == rows[0]["phase_patch_corr"]


def test_nearest_groups_determine_the_amplitude_a_single_pattern_does_not():
    # with a known probe one pattern of a smooth object pins its phase but not its amplitude (measured:
    # 0.29 per patch); its 3 nearest overlapping neighbours tie the amplitude down (0.998)
    group_solver = _module()
    single = group_solver.solve(_noiseless_scan(), 1, 8, 0, [100], "raar")[0]
    grouped = group_solver.solve(_noiseless_scan(), 2, 8, 0, [100], "raar", neighbours=4)[0]
    assert grouped["seed_amplitude_patch_corr"] > single["seed_amplitude_patch_corr"] + 0.4
    assert grouped["seed_amplitude_patch_corr"] > 0.9 and grouped["seed_phase_patch_corr"] > 0.9


def test_too_few_neighbours_for_the_group_is_named():
    with pytest.raises(SystemExit):
        _module().main(["--gridsize", "3", "--neighbours", "7", "--test-data", "unused.npz"])
