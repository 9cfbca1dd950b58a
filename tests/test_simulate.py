"""Phase C simulation: object, positions, seeded noise per dose, the y-split."""
from __future__ import annotations

import numpy as np
import pytest

from fly64_train.data import simulate


def test_object_has_range_structure_at_several_scales_and_is_seeded():
    obj = simulate.make_object(256, seed=7)
    assert obj.shape == (256, 256) and obj.dtype == np.complex64
    amplitude, phase = np.abs(obj), np.angle(obj)
    assert 0.3 <= amplitude.min() and amplitude.max() <= 1.0
    assert -np.pi / 2 <= phase.min() and phase.max() <= np.pi / 2
    assert amplitude.std() > 0.08 and phase.std() > 0.3  # uses the range, not constant
    for field in (amplitude, phase):
        # not pure noise: neighbouring pixels are strongly correlated ...
        assert np.corrcoef(field[:, :-1].ravel(), field[:, 1:].ravel())[0, 1] > 0.8
        # ... and there is large-scale structure (32-px block means vary) as well as fine detail
        blocks = field.reshape(8, 32, 8, 32).mean(axis=(1, 3))
        assert blocks.std() > 0.25 * field.std()
        detail = field - simulate.ndimage.gaussian_filter(field, 4)
        assert detail.std() > 0.03 * field.std()
    # sharp features: some steep edges
    assert np.abs(np.diff(amplitude, axis=1)).max() > 0.1
    np.testing.assert_array_equal(obj, simulate.make_object(256, seed=7))
    assert not np.array_equal(obj, simulate.make_object(256, seed=8))


def test_scan_positions_stay_a_half_patch_inside_and_are_seeded():
    x, y = simulate.scan_positions(2000, (200, 300), 64, seed=1)
    assert x.dtype == np.float64 and x.shape == (2000,)
    assert x.min() >= 32 and x.max() <= 300 - 1 - 32
    assert y.min() >= 32 and y.max() <= 200 - 1 - 32
    x2, y2 = simulate.scan_positions(2000, (200, 300), 64, seed=1)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(x, simulate.scan_positions(2000, (200, 300), 64, seed=2)[0])
    with pytest.raises(ValueError, match="too small"):
        simulate.scan_positions(10, (60, 60), 64, seed=1)


@pytest.fixture(scope="module")
def scene():
    N = 32
    obj = simulate.make_object(128, seed=5)
    probe = simulate.make_probe(N)
    x, y = simulate.scan_positions(120, obj.shape, N, seed=5)
    return obj, probe, x, y


def test_same_seed_same_data_other_seed_or_dose_other_noise(scene):
    obj, probe, x, y = scene
    a, scale_a = simulate.simulate_phase_c(obj, probe, x, y, 1e4, seed=42)
    b, scale_b = simulate.simulate_phase_c(obj, probe, x, y, 1e4, seed=42, workers=1)  # threads don't matter
    assert a.dtype == np.float32 and a.shape == (120, 32, 32)
    np.testing.assert_array_equal(a, b)
    assert scale_a == scale_b
    c, _ = simulate.simulate_phase_c(obj, probe, x, y, 1e4, seed=43)
    assert not np.array_equal(a, c)
    d, scale_d = simulate.simulate_phase_c(obj, probe, x, y, 1e3, seed=42)
    assert scale_d == pytest.approx(scale_a / np.sqrt(10))  # same object/probe/positions, only dose differs
    assert not np.array_equal(a, d)


def test_several_doses_share_one_far_field_and_match_single_dose_runs(scene):
    obj, probe, x, y = scene
    both = simulate.simulate_doses(obj, probe, x, y, [1e3, 1e5], seed=42)
    for dose in (1e3, 1e5):
        single, scale = simulate.simulate_phase_c(obj, probe, x, y, dose, seed=42)
        np.testing.assert_array_equal(both[dose][0], single)
        assert both[dose][1] == scale


def test_noise_does_not_depend_on_chunking_or_dose_spelling():
    assert simulate.noise_seed_sequence(42, 1000).entropy == simulate.noise_seed_sequence(42, 1e3).entropy
    assert simulate.noise_seed_sequence(42, 1000).entropy != simulate.noise_seed_sequence(42, 1000.5).entropy
    assert simulate.chunk_size(64) == 16 and simulate.chunk_size(128) == 4


def test_split_y_is_disjoint_and_at_the_middle_of_the_span():
    y = np.array([10.0, 50.0, 29.9, 30.0, 30.1, 11.0])
    train, test = simulate.split_y(y)
    assert simulate.split_point(y) == 30.0
    np.testing.assert_array_equal(train, [True, False, True, False, False, True])
    np.testing.assert_array_equal(test, ~train)
    assert y[train].max() < y[test].min()


def test_chunked_far_field_equals_the_reference_forward_model(scene, monkeypatch):
    obj, probe, x, y = scene
    monkeypatch.setattr(simulate, "PIXELS_PER_CHUNK", 7 * 32 * 32)  # 18 chunks of 7 patterns
    amplitude, energy = simulate.far_field(obj, probe, x, y, workers=2)
    reference = simulate.physics.forward_amplitude(obj, probe, x, y)
    np.testing.assert_array_equal(amplitude, reference)
    np.testing.assert_allclose(energy, (reference.astype(np.float64) ** 2).sum(axis=(1, 2)), rtol=1e-5)
