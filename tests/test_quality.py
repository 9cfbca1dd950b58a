"""benchmarks/quality.py: the group-solve yardstick follows the job's own groups and solve settings."""
from __future__ import annotations

import numpy as np
import pytest

from fly64_train.data.contract import StudyData
from tests.conftest import load_benchmark
from tests.test_yardsticks import _overlapping_scan


def _test_split() -> StudyData:
    obj, probe, x, y, amplitude = _overlapping_scan()
    return StudyData(diffraction=amplitude, xcoords=x, ycoords=y, probe=probe.astype(np.complex64), obj=obj,
                     metadata={"photon_scale": 40.0})


def _resolved(**model) -> dict:
    return {"model": {"input_transform": "er", "er_iterations": 3, "er_solver": "raar", "er_tolerance": 0.0, **model},
            "trainer": {"neighbor_count": 7}, "dataset": {"grouping_seed": 5}}


def test_group_solve_yardstick_scores_the_jobs_own_solve():
    quality = load_benchmark("quality")
    test = _test_split()
    exact = quality.group_solve_scores(test, {"gridsize": 2}, _resolved())
    banded = quality.group_solve_scores(test, {"gridsize": 2}, _resolved(er_tolerance=1.0))
    assert exact["iterations"] == 3 and exact["solver"] == "raar" and banded["tolerance"] == 1.0
    assert exact["metrics"]["n_patches"] == 4 * test.n  # one group per test position, 4 members each
    # the noise band changes the solve (noiseless data: the exact projection is the right one)
    assert exact["metrics"]["patchwise"] != banded["metrics"]["patchwise"]
    assert quality.group_solve_scores(test, {"gridsize": 2}, _resolved(input_transform="none")) is None


def test_group_solve_yardstick_needs_the_photon_scale_for_a_band():
    test = _test_split()
    test.metadata = {}
    with pytest.raises(ValueError, match="photon_scale"):
        load_benchmark("quality").group_solve_scores(test, {"gridsize": 2}, _resolved(er_tolerance=1.0))
