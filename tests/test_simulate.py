"""Phase C simulation: object, positions, seeded noise per dose, the y-split."""
from __future__ import annotations

import numpy as np
import pytest

from fly64_train.data import simulate


def test_random_object_has_range_structure_at_several_scales_and_is_seeded():
    obj = simulate.make_object(256, seed=7, kind="random")
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
    np.testing.assert_array_equal(obj, simulate.make_object(256, seed=7, kind="random"))
    assert not np.array_equal(obj, simulate.make_object(256, seed=8, kind="random"))


def test_default_object_is_two_recognisable_pictures_with_fine_detail():
    obj = simulate.make_object(660, seed=42)
    assert obj.shape == (660, 660) and obj.dtype == np.complex64
    amplitude, phase = np.abs(obj), np.angle(obj)
    assert amplitude.min() >= 0.3 - 1e-6 and amplitude.max() <= 1.0 + 1e-6
    assert amplitude.min() < 0.35 and amplitude.max() > 0.95  # uses the whole range
    assert np.abs(phase).max() <= np.pi / 2 + 1e-6 and np.ptp(phase) > 2.5  # no wrapping, wide range
    # amplitude and phase are different pictures (camera, astronaut), not one image twice
    assert abs(np.corrcoef(amplitude.ravel(), phase.ravel())[0, 1]) < 0.5
    for field in (amplitude, phase):
        # detail at the 2–8 px scale SSIM's 7-px window sees: a band-pass keeps a real share
        band = simulate.ndimage.gaussian_filter(field, 1.0) - simulate.ndimage.gaussian_filter(field, 4.0)
        assert band.std() > 0.1 * field.std()
    np.testing.assert_array_equal(obj, simulate.make_object(660, seed=1))  # deterministic, seed unused
    small = simulate.make_image_object(128)
    assert small.shape == (128, 128) and np.abs(small).min() >= 0.3 - 1e-6
    with pytest.raises(ValueError, match="object kind 'plasma'"):
        simulate.make_object(64, seed=1, kind="plasma")


def test_fly_scan_rows_steps_jitter_margins_and_seed():
    x, y = simulate.fly_scan_positions((200, 300), 64, step=3.0, row_spacing=5.0, jitter=0.0, seed=1)
    assert x.dtype == np.float64 and x.shape == y.shape
    rows = np.unique(y)
    np.testing.assert_allclose(np.diff(rows), 5.0)  # rows row_spacing apart
    first = x[y == rows[0]]
    np.testing.assert_allclose(np.diff(first), 3.0)  # exposures step apart along x ...
    np.testing.assert_allclose(x[y == rows[1]], first[::-1])  # ... serpentine: the next row runs back
    assert x.size == first.size * rows.size == (235 // 3 + 1) * (135 // 5 + 1)
    jx, jy = simulate.fly_scan_positions((200, 300), 64, 3.0, 5.0, jitter=0.5, seed=1)
    offsets = np.concatenate([jx - x, jy - y])
    assert 0.4 < offsets.std() < 0.6 and abs(offsets.mean()) < 0.05  # Gaussian positioning error
    assert jx.min() >= 32 and jx.max() <= 300 - 1 - 32 and jy.min() >= 32 and jy.max() <= 200 - 1 - 32
    again = simulate.fly_scan_positions((200, 300), 64, 3.0, 5.0, jitter=0.5, seed=1)
    np.testing.assert_array_equal(jx, again[0])
    assert not np.array_equal(jx, simulate.fly_scan_positions((200, 300), 64, 3.0, 5.0, 0.5, seed=2)[0])
    with pytest.raises(ValueError, match="too small"):
        simulate.fly_scan_positions((60, 60), 64, 3.0, 5.0, 0.5, seed=1)
    with pytest.raises(ValueError, match="scan step"):
        simulate.fly_scan_positions((200, 300), 64, 0.0, 5.0, 0.5, seed=1)


@pytest.fixture(scope="module")
def scene():
    N = 32
    obj = simulate.make_object(128, seed=5)
    probe = simulate.make_probe(N)
    x, y = (c[:120] for c in simulate.fly_scan_positions(obj.shape, N, 6.0, 8.0, 0.5, seed=5))
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
