"""Phase D views: spacing, maximality, seeding, overlap metrics, view sizes at the default scale."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist

from fly64_train import physics, study
from fly64_train.config import DatasetConfig
from fly64_train.data import simulate
from fly64_train.data.overlap import disc_overlap, overlap_metrics, spaced_subset


def _positions(n=1500, size=400, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, size, n), rng.uniform(0, size, n)


@pytest.mark.parametrize("spacing", [5.0, 19.2, 51.2])
def test_spaced_subset_respects_the_spacing_and_is_maximal(spacing):
    x, y = _positions()
    keep = spaced_subset(x, y, spacing, seed=456)
    assert keep.dtype == np.int64 and np.all(np.diff(keep) > 0)  # sorted, unique
    kept = np.column_stack([x[keep], y[keep]])
    assert pdist(kept).min() >= spacing
    # maximal: every dropped position is closer than the spacing to a kept one
    dropped = np.setdiff1d(np.arange(x.size), keep)
    distance, _ = cKDTree(kept).query(np.column_stack([x[dropped], y[dropped]]))
    assert np.all(distance < spacing)


def test_spaced_subset_packs_better_than_a_random_order_greedy():
    x, y = _positions(n=3000)
    keep = spaced_subset(x, y, 30.0, seed=1)
    rng = np.random.default_rng(0)
    tree = cKDTree(np.column_stack([x, y]))
    alive = np.ones(x.size, bool)
    random_order = 0
    for i in rng.permutation(x.size):
        if alive[i]:
            random_order += 1
            alive[tree.query_ball_point([x[i], y[i]], 30.0 - 1e-9)] = False
    assert keep.size > 1.1 * random_order


def test_spaced_subset_is_seeded_and_handles_edge_cases():
    x, y = _positions()
    a = spaced_subset(x, y, 20.0, seed=456)
    np.testing.assert_array_equal(a, spaced_subset(x, y, 20.0, seed=456))
    assert not np.array_equal(a, spaced_subset(x, y, 20.0, seed=457))
    np.testing.assert_array_equal(spaced_subset(x, y, None, seed=1), np.arange(x.size))
    np.testing.assert_array_equal(spaced_subset(x, y, 0.0, seed=1), np.arange(x.size))
    assert spaced_subset([], [], 10.0, seed=1).size == 0
    # exactly the spacing apart is allowed; duplicates conflict
    np.testing.assert_array_equal(spaced_subset([0.0, 10.0], [0.0, 0.0], 10.0, seed=1), [0, 1])
    assert spaced_subset([5.0, 5.0, 5.0], [1.0, 1.0, 1.0], 1.0, seed=1).size == 1


def test_disc_overlap_formula():
    D = 32.0
    assert disc_overlap(0.0, D) == pytest.approx(1.0)
    assert disc_overlap(D / 2, D) == pytest.approx(0.391, abs=1e-3)  # d = R
    assert disc_overlap(D, D) == 0.0 and disc_overlap(2 * D, D) == 0.0
    d = np.linspace(0, D, 50)
    assert np.all(np.diff(disc_overlap(d, D)) < 0)


def test_overlap_metrics_on_a_regular_grid():
    grid = np.arange(10) * 16.0
    x, y = np.meshgrid(grid, grid)
    metrics = overlap_metrics(x.ravel(), y.ravel(), probe_diameter=32.0, k=4)
    assert metrics["n_positions"] == 100 and metrics["k"] == 4
    assert metrics["min_spacing_px"] == pytest.approx(16.0)
    assert metrics["median_spacing_px"] == pytest.approx(16.0)
    # interior points: 4 neighbours at 16 px; edge/corner points have diagonal ones at 22.6 px
    assert disc_overlap(22.63, 32) < metrics["mean_overlap_fraction"] <= disc_overlap(16.0, 32.0) + 1e-12
    assert overlap_metrics([1.0], [2.0], 32.0, 6)["mean_overlap_fraction"] is None


@pytest.mark.parametrize("N, scale", [(64, 1), (128, 2)])
def test_default_views_overlap_on_the_probe_footprint(N, scale):
    """Views keep S = (1 − f)·D apart, D the probe's footprint; dense members then overlap strongly
    (nearest-neighbour disc overlap 0.5–0.65) and sparse ones barely (≤ 0.12). At N = 128 the
    same optics and a scan scaled by 2 (the `study` preset) give the same counts."""
    defaults = DatasetConfig()
    diameter = physics.footprint_diameter(simulate.make_probe(N))
    x, y = simulate.fly_scan_positions((defaults.object_size * scale,) * 2, N, defaults.scan_step * scale,
                                       defaults.scan_row_spacing * scale, defaults.scan_jitter, defaults.simulation_seed)
    assert x.size <= 25_000
    nearest_scan = overlap_metrics(x, y, diameter, 1)
    assert nearest_scan["median_spacing_px"] <= 0.1 * diameter  # a base spacing that leaves real choice
    for mask in simulate.split_y(y):
        sizes = {}
        for view in study.SPACED_VIEWS:
            spacing = study.VIEWS[view].spacing(diameter)
            keep = spaced_subset(x[mask], y[mask], spacing, defaults.subsampling_seed)
            assert pdist(np.column_stack([x[mask][keep], y[mask][keep]])).min() >= spacing
            sizes[view] = keep.size
            overlap = overlap_metrics(x[mask][keep], y[mask][keep], diameter, 1)["mean_overlap_fraction"]
            if view == "dense":
                assert 0.5 <= overlap <= 0.65, overlap
            else:
                assert overlap <= 0.12, overlap
        assert sizes["sparse"] >= 150, sizes
        assert sizes["dense"] >= 1000, sizes
