"""Yardsticks for reading a score: the flat floor, the dose-limited low-pass, the gap fraction."""
from __future__ import annotations

import numpy as np
import pytest

from fly64_train import evaluation, physics
from fly64_train.data import simulate
from fly64_train.evaluation import yardsticks


def test_radial_profile_of_a_known_ring_image():
    n = 32
    index = np.arange(n) - n // 2
    radius = np.hypot(index[:, None], index[None, :])
    profile = yardsticks.radial_profile(radius)
    assert len(profile) == n // 2 + 1
    np.testing.assert_allclose(profile[1:], np.arange(1, n // 2 + 1), atol=0.3)
    assert profile[0] == 0.0


def test_dose_limited_cutoff_rises_with_dose_and_matches_the_counts():
    N = 32
    obj = simulate.make_object(96, seed=0)
    probe = simulate.make_probe(N)
    x, y = simulate.fly_scan_positions(obj.shape, N, 8.0, 8.0, 0.0, seed=1)
    energy = np.mean(np.sum(np.abs(physics.forward_amplitude(obj, probe, x, y)) ** 2, axis=(1, 2)))
    cutoffs = []
    for dose in (1e2, 1e4, 1e6):
        scale = physics.dose_scale(energy, dose)
        cutoff, counts = yardsticks.dose_limited_cutoff(obj, probe, x, y, scale)
        assert counts[0] > counts[-1]  # the bright centre carries most photons
        assert np.all(counts >= 0)
        ring = int(round(cutoff * N))
        if counts.max() < 1.0:
            assert cutoff == 0.0
        else:
            assert counts[ring] >= 1.0 and (ring == N // 2 or counts[ring + 1:].max() < 1.0)
        cutoffs.append(cutoff)
    assert cutoffs[0] < cutoffs[1] <= cutoffs[2] <= 0.5


def test_lowpass_keeps_low_and_removes_high_frequencies():
    n = 64
    yy, xx = np.mgrid[0:n, 0:n]
    low = np.exp(2j * np.pi * 3 * xx / n)  # 3/64 cycles per pixel
    high = 0.5 * np.exp(2j * np.pi * 20 * yy / n)  # 20/64
    filtered = yardsticks.lowpass(low + high, cutoff=10 / n)
    np.testing.assert_allclose(filtered, low, atol=1e-5)
    np.testing.assert_allclose(yardsticks.lowpass(low, 0.5), low, atol=1e-5)


def test_flat_floor_and_gap_fraction_rank_with_the_evaluation():
    obj = simulate.make_object(128, seed=0)
    region = np.ones(obj.shape, bool)
    flat = yardsticks.flat_object(obj, region)
    assert np.allclose(np.abs(flat), np.abs(obj).mean()) and np.all(np.angle(flat) == 0)
    coverage = np.ones(obj.shape)
    _, floor = evaluation.score_image(flat, coverage, obj, max_shift_px=0.0)
    # a mild low-pass (SSIM can rank a heavy one below the flat image: structure, not error)
    _, blurred = evaluation.score_image(yardsticks.lowpass(obj, 0.3), coverage, obj, max_shift_px=0.0)
    for part in ("amplitude", "phase"):
        s_floor, s_blur = floor[part]["ssim_original"], blurred[part]["ssim_original"]
        assert yardsticks.gap_closed(s_floor, s_floor) == 0.0
        assert yardsticks.gap_closed(1.0, s_floor) == 1.0
        assert 0 < yardsticks.gap_closed(s_blur, s_floor) < 1
    assert yardsticks.gap_closed(None, 0.3) is None and yardsticks.gap_closed(0.5, 1.0) is None


def _overlapping_scan(N: int = 32, step: float = 8.0):
    obj = simulate.make_object(96, seed=2)
    probe = simulate.make_probe(N)
    x, y = simulate.fly_scan_positions(obj.shape, N, step, step, 0.0, seed=3)
    return obj, probe, x, y, physics.forward_amplitude(obj, probe, x, y).astype(np.float32)


def test_group_solve_is_the_physics_solve_of_each_group_from_the_flat_object():
    from fly64_train.data import grouping
    obj, probe, x, y, amplitude = _overlapping_scan()
    groups = grouping.make_groups(x, y, 2, 7, 10, 0)
    patches = yardsticks.group_solve(amplitude, probe, groups, 3, "raar", chunk=4)  # chunks must not matter
    size = yardsticks.canvas_size(groups.relative, amplitude.shape[-1])
    whole = physics.error_reduction_step(amplitude[groups.indices], probe, groups.relative, size, 3, "raar")
    assert patches.shape == (10, 4) + amplitude.shape[-2:] and patches.dtype == np.complex64
    np.testing.assert_allclose(patches, 1.0 + whole, atol=1e-5)
    with pytest.raises(ValueError, match="at least 1 iteration"):
        yardsticks.group_solve(amplitude, probe, groups, 0)


def test_group_solve_stitched_ranks_above_the_floor_on_noiseless_data():
    # a solve of overlapping noiseless groups recovers the object (measured: 0.86 / 0.98 per patch after 100
    # RAAR iterations, 0.44 / 0.49 after one error-reduction step): its stitch must beat the flat floor
    from fly64_train.data import grouping
    obj, probe, x, y, amplitude = _overlapping_scan()
    groups = grouping.make_groups(x, y, 2, 4, None, 0)
    positions = groups.centres[:, None, :] + groups.relative
    solved = evaluation.score_predictions(yardsticks.group_solve(amplitude, probe, groups, 100, "raar"),
                                          positions, obj, probe=probe)
    one_step = evaluation.score_predictions(yardsticks.group_solve(amplitude, probe, groups, 1, "er"),
                                            positions, obj, probe=probe)
    region = evaluation.scored_region(solved.coverage, solved.lit, solved.metrics["illumination_threshold"],
                                      solved.metrics["min_coverage"])
    _, floor = evaluation.score_image(yardsticks.flat_object(obj, region), solved.coverage, obj, solved.lit)
    for part in ("amplitude", "phase"):
        assert solved.metrics[part]["ssim_original"] > floor[part]["ssim_original"] + 0.1
        assert solved.metrics["patchwise"][f"{part}_correlation"] > 0.8
        assert (solved.metrics["patchwise"][f"{part}_correlation"]
                > one_step.metrics["patchwise"][f"{part}_correlation"])


def test_band_in_amplitude_names_a_missing_photon_scale():
    assert physics.band_in_amplitude(0.0, None) == 0.0
    assert physics.band_in_amplitude(1.0, 2.0) == pytest.approx(physics.SQRT_COUNT_STD / 2.0)
    with pytest.raises(ValueError, match="photon_scale"):
        physics.band_in_amplitude(1.0, None)
