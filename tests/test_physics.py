"""Analytic checks of the NumPy reference forward model (physics.py) and the synthetic probe."""
from __future__ import annotations

import numpy as np
import pytest

from fly64_train import physics
from fly64_train.data import simulate


def _random_complex(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def test_parseval_far_field_conserves_energy():
    rng = np.random.default_rng(0)
    waves = _random_complex(rng, (5, 32, 32))
    amplitude = physics.far_field_amplitude(waves)
    assert amplitude.shape == waves.shape
    np.testing.assert_allclose((amplitude.astype(np.float64) ** 2).sum(axis=(1, 2)),
                               (np.abs(waves.astype(np.complex128)) ** 2).sum(axis=(1, 2)), rtol=1e-5)


def test_plane_wave_focuses_to_the_centre_pixel_and_delta_spreads_flat():
    N = 16
    plane = np.full((1, N, N), 2.0 + 0j, dtype=np.complex64)
    amplitude = physics.far_field_amplitude(plane)[0]
    expected = np.zeros((N, N))
    expected[N // 2, N // 2] = 2.0 * N  # Σ A² = Σ|ψ|² = 4 N²; all of it in the zero frequency (fftshifted)
    np.testing.assert_allclose(amplitude, expected, atol=1e-4)

    delta = np.zeros((1, N, N), dtype=np.complex64)
    delta[0, 3, 5] = 1.0
    np.testing.assert_allclose(physics.far_field_amplitude(delta)[0], np.full((N, N), 1.0 / N), rtol=1e-5)


def test_dose_scale_sets_expected_total_counts():
    assert physics.dose_scale(4.0, 100.0) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        physics.dose_scale(0.0, 100.0)


@pytest.fixture(scope="module")
def small_scene():
    N = 32
    obj = simulate.make_object(160, seed=3)
    probe = simulate.make_probe(N)
    x, y = simulate.fly_scan_positions(obj.shape, N, 6.0, 7.0, 0.5, seed=3)
    return obj, probe, x, y


@pytest.mark.parametrize("dose", [1e3, 1e4, 1e5])
def test_poisson_counts_have_mean_dose_and_variance_equal_to_mean(small_scene, dose):
    obj, probe, x, y = small_scene
    diffraction, scale = simulate.simulate_phase_c(obj, probe, x, y, dose, seed=11)
    counts = (diffraction.astype(np.float64) * scale) ** 2
    # integer counts up to float32 rounding
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3 * max(1.0, counts.max()) ** 0.5 + 1e-3,
                               rtol=1e-5)
    counts = np.round(counts)
    totals = counts.sum(axis=(1, 2))
    # mean total per pattern = dose (std of the mean ≈ sqrt(dose / n))
    assert totals.mean() == pytest.approx(dose, rel=5 * np.sqrt(1 / (dose * len(totals))) + 1e-3)
    # Poisson: variance = mean, pixel by pixel (pooled over all pixels)
    expected = (physics.forward_amplitude(obj, probe, x, y) * scale) ** 2
    assert expected.sum(axis=(1, 2)).mean() == pytest.approx(dose, rel=1e-4)
    ratio = ((counts - expected) ** 2).sum() / expected.sum()
    assert ratio == pytest.approx(1.0, abs=0.03)


def test_integer_and_half_integer_shifts_move_the_patch():
    rng = np.random.default_rng(1)
    obj = _random_complex(rng, (64, 64))
    N = 16
    x, y = np.array([30.0, 31.0, 30.5, 30.0]), np.array([28.0, 28.0, 28.0, 29.0])
    patches = physics.extract_patches(obj, x, y, N)
    # pixel i of a patch centred at c is image pixel c − N//2 + i
    np.testing.assert_array_equal(patches[0], obj[28 - N // 2: 28 + N // 2, 30 - N // 2: 30 + N // 2])
    np.testing.assert_allclose(patches[1][:, :-1], patches[0][:, 1:])  # +1 px in x: content moves left
    np.testing.assert_allclose(patches[3][:-1, :], patches[0][1:, :])  # +1 px in y: content moves up
    np.testing.assert_allclose(patches[2], 0.5 * (patches[0] + patches[1]), rtol=1e-5, atol=1e-6)
    probe = simulate.make_probe(N)
    waves = physics.illuminate(patches, probe)
    np.testing.assert_allclose(waves[2], 0.5 * (waves[0] + waves[1]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(waves[1][:, :-1], patches[0][:, 1:] * probe[:, :-1], rtol=1e-6)


def test_integer_shift_of_a_periodic_object_keeps_the_far_field_under_a_flat_probe():
    rng = np.random.default_rng(2)
    N = 16
    tile = _random_complex(rng, (N, N))
    obj = np.tile(tile, (4, 4))
    flat = np.ones((N, N), dtype=np.complex64)
    amplitude = physics.forward_amplitude(obj, flat, np.array([24.0, 27.0]), np.array([24.0, 22.0]))
    np.testing.assert_allclose(amplitude[0], amplitude[1], rtol=1e-4, atol=1e-4)


def test_extract_equals_extract_patches():
    rng = np.random.default_rng(4)
    obj = _random_complex(rng, (50, 60))
    x = rng.uniform(8, 51, 7)
    y = rng.uniform(8, 41, 7)
    fast = physics.extract_patches(obj, x, y, 16)
    slow = physics.extract(obj, np.column_stack([x, y]), 16)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)


def test_place_is_the_adjoint_of_extract():
    rng = np.random.default_rng(5)
    image = _random_complex(rng, (40, 44))
    centres = np.column_stack([rng.uniform(0, 44, 6), rng.uniform(0, 40, 6)])  # some leave the image
    patches = _random_complex(rng, (6, 12, 12))
    lhs = np.vdot(patches.astype(np.complex128), physics.extract(image, centres, 12).astype(np.complex128))
    canvases = physics.place(patches, centres, image.shape)  # (B, H, W): one canvas per patch
    rhs = np.vdot(canvases.sum(axis=0).astype(np.complex128), image.astype(np.complex128))
    assert lhs == pytest.approx(rhs, rel=1e-4)


@pytest.mark.parametrize("N", [64, 128])
def test_probe_is_a_focused_spot_with_rings_and_phase(N):
    probe = simulate.make_probe(N)
    assert probe.shape == (N, N) and probe.dtype == np.complex64
    assert np.abs(probe).max() == pytest.approx(1.0)
    intensity = np.abs(probe.astype(np.complex128)) ** 2
    rows, cols = np.indices((N, N))
    radius = np.hypot(rows - N // 2, cols - N // 2)
    assert intensity[radius <= N / 4].sum() / intensity.sum() >= 0.8
    # not real-valued, not a flat disc: the phase varies across the bright part
    bright = np.abs(probe) > 0.2
    assert np.abs(probe.imag).max() > 0.2
    assert np.std(np.angle(probe[bright])) > 0.3
    # rings: the amplitude averaged over circles about the intensity centroid (coma moves the spot)
    # has a dip followed by a secondary maximum
    cy, cx = (intensity * rows).sum() / intensity.sum(), (intensity * cols).sum() / intensity.sum()
    radius = np.hypot(rows - cy, cols - cx)
    profile = np.array([np.abs(probe)[(radius >= r) & (radius < r + 1)].mean() for r in range(N // 2)])
    inner = profile[: N // 3]
    dips = [i for i in range(1, len(inner) - 1) if inner[i] < inner[i - 1] and inner[i] < inner[i + 1]]
    assert dips, "expected at least one ring (a dip then a rise in the radial profile)"
    np.testing.assert_array_equal(probe, simulate.make_probe(N))  # deterministic


def _disc(n: int, radius: float, centre=None) -> np.ndarray:
    rows, cols = np.indices((n, n))
    cy, cx = centre if centre is not None else (n / 2, n / 2)
    return (np.hypot(rows - cy, cols - cx) <= radius).astype(np.complex64)


def test_footprint_diameter_of_analytic_probes():
    # A uniform disc of radius R holds a fraction q of its energy within radius R·sqrt(q).
    disc = _disc(128, 30.0)
    assert physics.footprint_diameter(disc) == pytest.approx(2 * 30.0 * np.sqrt(0.9), abs=1.0)
    assert physics.footprint_diameter(disc, 1.0) == pytest.approx(60.0, abs=1.0)
    # A Gaussian intensity exp(−r²/2σ²) holds 90 % within r = σ·sqrt(2 ln 10): D ≈ 4.29 σ.
    rows, cols = np.indices((96, 96))
    sigma = 6.0
    gaussian = np.exp(-((rows - 40.3) ** 2 + (cols - 55.7) ** 2) / (4 * sigma**2)) * np.exp(1j * cols / 7)
    assert physics.footprint_diameter(gaussian) == pytest.approx(2 * sigma * np.sqrt(2 * np.log(10)), abs=0.7)
    # Measured about the intensity centroid: moving the disc or adding a phase leaves D alone.
    moved = _disc(128, 30.0, centre=(50.0, 70.0)) * np.exp(1j * np.linspace(0, 9, 128))[None, :]
    assert physics.footprint_diameter(moved) == pytest.approx(physics.footprint_diameter(disc), abs=0.5)
    with pytest.raises(ValueError, match="no finite"):
        physics.footprint_diameter(np.zeros((8, 8), np.complex64))
    with pytest.raises(ValueError, match="square"):
        physics.footprint_diameter(np.ones((8, 9)))


@pytest.mark.parametrize("N", [64, 128])
def test_synthetic_probe_is_fly64_like(N):
    probe = simulate.make_probe(N)
    diameter = physics.footprint_diameter(probe)
    assert 0.55 * N <= diameter <= 0.65 * N  # ≈ 0.6·N: 38 px at N = 64, as the fly64 probe
    intensity = np.abs(probe) ** 2
    edge = np.concatenate([intensity[0], intensity[-1], intensity[:, 0], intensity[:, -1]])
    assert edge.max() < 0.02 * intensity.max()  # no wrap-around at the patch edge
    bright = np.abs(probe) > 0.3
    assert np.ptp(np.angle(probe[bright])) > 2.0  # defocus: real phase structure, not a flat disc
    # Same optics at both sizes: the N = 128 probe is the N = 64 one sampled twice as finely.
    assert physics.footprint_diameter(simulate.make_probe(128)) == pytest.approx(
        2 * physics.footprint_diameter(simulate.make_probe(64)), rel=0.03)


def _flip(image: np.ndarray) -> np.ndarray:
    """image(−r) about pixel N//2 (the DFT's own reflection)."""
    index = (-np.arange(image.shape[-1])) % image.shape[-1]
    return image[..., index, :][..., index]


@pytest.mark.parametrize("N", [64, 128])
def test_synthetic_probe_has_no_twin_image(N):
    # The twin: for any probe, ψ' = conj(ψ(−r)) has the same |FFT| as ψ. It is an object's exit
    # wave, O'·P with O' = conj(O(−r)·P(−r))/P(r), only if that O' is a plausible object; with a
    # centro-symmetric probe |P(−r)| = |P(r)| and O' is just the flipped conjugate object, so one
    # pattern cannot tell O from O'. Check the analytic case, then that our probe breaks it.
    rng = np.random.default_rng(0)
    obj = (0.3 + 0.7 * rng.random((N, N))) * np.exp(1j * rng.uniform(-1.5, 1.5, (N, N)))
    symmetric = _disc(N, N / 4) * np.exp(1j * 0.01 * np.hypot(*np.indices((N, N)) - N // 2) ** 2)
    symmetric = (symmetric + _flip(symmetric)) / 2
    lit = np.abs(symmetric) > 1e-6
    twin = np.where(lit, np.conj(_flip(obj * symmetric)) / np.where(lit, symmetric, 1), 0)
    far = physics.far_field_amplitude(np.stack([obj * symmetric, twin * symmetric]))
    np.testing.assert_allclose(far[1], far[0], rtol=1e-9, atol=1e-9 * far[0].max())
    np.testing.assert_allclose(np.abs(twin[lit]), np.abs(_flip(obj))[lit])  # a perfectly plausible object

    probe = simulate.make_probe(N).astype(np.complex128)
    asymmetry = np.linalg.norm(np.abs(_flip(probe)) - np.abs(probe)) / np.linalg.norm(probe)
    assert asymmetry > 0.4  # coma and trefoil: |P(−r)| is far from |P(r)|, the twin is no object


def test_backpropagate_a_flat_unit_object_gives_zero():
    """The unit object's own (noise-free) pattern is already consistent: the step changes nothing."""
    probe = simulate.make_probe(32)
    amplitude = physics.far_field_amplitude(physics.illuminate(np.ones((2, 32, 32), np.complex128), probe))
    d = physics.backpropagate(amplitude, probe)
    assert np.max(np.abs(d)) < 1e-3


def test_backpropagate_is_the_negative_amplitude_loss_gradient_at_the_unit_object():
    """d = −∂L/∂conj(O) / max|P|² at O = 1 for L = Σ(|F(P·O)| − A)², checked against finite
    differences of L along random real and imaginary directions (Wirtinger: dL = 2·Re Σ conj(g)·δ).
    The probe's far field has unit modulus everywhere, so |F(P·O)| is smooth at O = 1."""
    rng = np.random.default_rng(3)
    N = 16
    probe = np.fft.ifft2(np.exp(2j * np.pi * rng.random((N, N)))) * N
    obj = np.exp(0.3j * rng.standard_normal((N, N))) * (1 + 0.2 * rng.standard_normal((N, N)))
    measured = physics.far_field_amplitude(physics.illuminate(obj, probe))

    def loss(o):
        return np.sum((physics.far_field_amplitude(physics.illuminate(o, probe)) - measured) ** 2)

    gradient = -physics.backpropagate(measured, probe) * np.max(np.abs(probe) ** 2)  # ∂L/∂conj(O)
    unit = np.ones((N, N), np.complex128)
    for direction in (rng.standard_normal((N, N)), 1j * rng.standard_normal((N, N))):
        eps = 1e-6
        numeric = (loss(unit + eps * direction) - loss(unit - eps * direction)) / (2 * eps)
        analytic = 2 * np.real(np.sum(np.conj(gradient) * direction))
        assert abs(numeric - analytic) < 1e-5 * max(1.0, abs(analytic))


def test_error_reduction_step_of_one_pattern_divides_backprop_by_the_probe_intensity():
    """A group of one at the canvas centre: the step is d / max(|P|²/max|P|², ER_FLOOR)."""
    rng = np.random.default_rng(4)
    probe = simulate.make_probe(32).astype(np.complex128)
    obj = np.exp(0.4j * rng.standard_normal((32, 32)))
    amplitude = physics.far_field_amplitude(physics.illuminate(obj, probe))[None, None]
    step = physics.error_reduction_step(amplitude, probe, np.zeros((1, 1, 2)), canvas_size=40)
    weight = np.abs(probe) ** 2 / np.max(np.abs(probe) ** 2)
    expected = physics.backpropagate(amplitude[0, 0], probe) / np.maximum(weight, physics.ER_FLOOR)
    np.testing.assert_allclose(step[0, 0], expected, atol=1e-12)


def test_error_reduction_step_averages_overlapping_members():
    """Two members at the same place see the mean of their two images (the overlap average), and
    a flat unit object's group gives zero; members far apart do not mix."""
    rng = np.random.default_rng(5)
    probe = simulate.make_probe(32).astype(np.complex128)
    flat = physics.far_field_amplitude(physics.illuminate(np.ones((2, 32, 32)), probe))[None]
    rel = np.array([[[-3.5, 1.25], [4.0, -2.0]]])
    np.testing.assert_allclose(physics.error_reduction_step(flat, probe, rel, 48), 0, atol=1e-6)  # d is O(1)

    patterns = physics.far_field_amplitude(physics.illuminate(
        np.exp(0.4j * rng.standard_normal((2, 32, 32))), probe))[None]  # (1, 2, N, N)
    together = physics.error_reduction_step(patterns, probe, np.zeros((1, 2, 2)), 40)
    alone = [physics.error_reduction_step(patterns[:, c:c + 1], probe, np.zeros((1, 1, 2)), 40)[0, 0]
             for c in range(2)]
    np.testing.assert_allclose(together[0, 0], together[0, 1], atol=1e-12)
    lit = np.abs(probe) ** 2 / np.max(np.abs(probe) ** 2) >= physics.ER_FLOOR  # below it the floor divides
    np.testing.assert_allclose(together[0, 0][lit], ((alone[0] + alone[1]) / 2)[lit], atol=1e-9)
    apart = physics.error_reduction_step(patterns, probe, np.array([[[-40.0, 0.0], [40.0, 0.0]]]), 128)
    for c in range(2):
        shifted = physics.error_reduction_step(patterns[:, c:c + 1], probe, np.zeros((1, 1, 2)), 40)[0, 0]
        np.testing.assert_allclose(apart[0, c], shifted, atol=1e-9)


def test_error_reduction_iterations_solve_a_noiseless_group():
    """More iterations of the group's error reduction fit the measured moduli better and come closer to
    the true object; a flat object's own patterns stay at O = 1 for every count; one iteration is the
    one step."""
    rng = np.random.default_rng(8)
    N, size = 32, 56
    probe = simulate.make_probe(N).astype(np.complex128)
    smooth = np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size)))
                          * np.exp(-np.add.outer(np.fft.fftfreq(size) ** 2, np.fft.fftfreq(size) ** 2) / 0.005))
    obj = np.exp(1j * smooth.real / np.abs(smooth.real).max())  # phase object, smooth, within ±1 rad
    rel = np.array([[[-4.0, -4.0], [4.0, -4.0], [-4.0, 4.0], [4.0, 4.0]]])
    centres = size // 2 + rel[0]
    truth = physics.extract(obj, centres, N)
    amplitude = physics.far_field_amplitude(physics.illuminate(truth, probe))[None]
    lit = np.abs(probe) ** 2 >= 0.2 * np.max(np.abs(probe) ** 2)

    def residual_and_error(iterations):
        patches = 1.0 + physics.error_reduction_step(amplitude, probe, rel, size, iterations)[0]
        residual = np.abs(physics.far_field_amplitude(physics.illuminate(patches, probe)) - amplitude[0]).mean()
        phase_error = np.angle(patches * np.conj(truth))[:, lit]
        return residual, np.abs(phase_error - phase_error.mean()).mean()

    (r1, e1), (r10, e10), (r60, e60) = (residual_and_error(k) for k in (1, 10, 60))
    assert r60 < 0.6 * r10 and r10 < 0.6 * r1 and e60 < e10 < e1 and e60 < 0.5 * e1, (r1, r10, r60, e1, e10, e60)
    np.testing.assert_array_equal(physics.error_reduction_step(amplitude, probe, rel, size, 1),
                                  physics.error_reduction_step(amplitude, probe, rel, size))
    flat = physics.far_field_amplitude(physics.illuminate(np.ones((4, N, N)), probe))[None]
    np.testing.assert_allclose(physics.error_reduction_step(flat, probe, rel, size, 5), 0, atol=1e-6)
    with pytest.raises(ValueError, match="iterations must be a positive integer"):
        physics.error_reduction_step(amplitude, probe, rel, size, 0)


def test_raar_solves_a_noiseless_group_further_than_error_reduction(monkeypatch):
    """RAAR's first iterate is one error-reduction step with RAAR's coverage floor; by 30 iterations it
    fits the moduli and the object better than error reduction's 30; a flat object's own patterns stay
    at O = 1; an unknown solver is named."""
    rng = np.random.default_rng(8)
    N, size = 32, 56
    probe = simulate.make_probe(N).astype(np.complex128)
    smooth = np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size)))
                          * np.exp(-np.add.outer(np.fft.fftfreq(size) ** 2, np.fft.fftfreq(size) ** 2) / 0.005))
    obj = np.exp(1j * smooth.real / np.abs(smooth.real).max())
    rel = np.array([[[-4.0, -4.0], [4.0, -4.0], [-4.0, 4.0], [4.0, 4.0]]])
    truth = physics.extract(obj, size // 2 + rel[0], N)
    amplitude = physics.far_field_amplitude(physics.illuminate(truth, probe))[None]
    lit = np.abs(probe) ** 2 >= 0.2 * np.max(np.abs(probe) ** 2)

    def residual_and_error(solver, iterations):
        patches = 1.0 + physics.error_reduction_step(amplitude, probe, rel, size, iterations, solver)[0]
        residual = np.abs(physics.far_field_amplitude(physics.illuminate(patches, probe)) - amplitude[0]).mean()
        phase_error = np.angle(patches * np.conj(truth))[:, lit]
        return residual, np.abs(phase_error - phase_error.mean()).mean()

    (r_er, e_er), (r_raar, e_raar) = residual_and_error("er", 30), residual_and_error("raar", 30)
    assert r_raar < 0.5 * r_er and e_raar < 0.5 * e_er, (r_er, r_raar, e_er, e_raar)
    first = physics.error_reduction_step(amplitude, probe, rel, size, 1, "raar")
    monkeypatch.setattr(physics, "ER_FLOOR", physics.RAAR_FLOOR)
    np.testing.assert_allclose(first, physics.error_reduction_step(amplitude, probe, rel, size, 1), atol=1e-12)
    flat = physics.far_field_amplitude(physics.illuminate(np.ones((4, N, N)), probe))[None]
    np.testing.assert_allclose(physics.error_reduction_step(flat, probe, rel, size, 5, "raar"), 0, atol=1e-6)
    with pytest.raises(ValueError, match="solver='hio'; expected one of er, raar"):
        physics.error_reduction_step(amplitude, probe, rel, size, 3, "hio")
    with pytest.raises(ValueError, match="groups, members"):
        physics.raar_iterates(np.ones((2, 16, 16)), np.ones((16, 16)), np.zeros((2, 2)), 20)


@pytest.mark.parametrize("mean", [10.0, 100.0, 10_000.0])
def test_square_root_of_poisson_counts_has_standard_deviation_one_half(mean):
    """Variance stabilisation: std √n → 1/2 for Poisson n (the delta method: Var √n ≈ Var n/(4 mean)),
    whatever the mean once it exceeds a few counts: the noise band's unit (SQRT_COUNT_STD)."""
    counts = np.random.default_rng(3).poisson(mean, size=200_000)
    assert np.sqrt(counts).std() == pytest.approx(physics.SQRT_COUNT_STD, rel=0.04)


def test_modulus_band_keeps_a_modulus_within_the_noise_and_clips_the_rest():
    measured = np.array([4.0, 4.0, 4.0, 0.5, 0.0, 0.0])
    magnitude = np.array([4.3, 5.0, 2.0, 0.1, 0.3, 3.0])
    np.testing.assert_allclose(physics.modulus_band(magnitude, measured, 0.5), [4.3, 4.5, 3.5, 0.1, 0.3, 0.5])
    np.testing.assert_array_equal(physics.modulus_band(magnitude, measured, 0.0), measured)


def test_a_noise_band_that_holds_the_flat_objects_patterns_keeps_the_flat_object():
    """P_M leaves a wave alone whose far-field modulus lies within the band: from O = 1, patterns within
    ±band of the flat object's keep every iterate at O = 1, where the exact projection moves off it;
    a negative or NaN band is named."""
    rng = np.random.default_rng(5)
    N, size = 32, 48
    probe = simulate.make_probe(N).astype(np.complex128)
    rel = np.array([[[-3.0, -3.0], [3.0, -3.0], [-3.0, 3.0], [3.0, 3.0]]])
    flat = physics.far_field_amplitude(physics.illuminate(np.ones((4, N, N)), probe))[None]
    noisy = np.maximum(flat + rng.uniform(-0.04, 0.04, flat.shape), 0.0)  # within ±0.05 of the flat patterns
    for solver in physics.GROUP_SOLVERS:
        np.testing.assert_allclose(physics.error_reduction_step(noisy, probe, rel, size, 10, solver, band=0.05), 0,
                                   atol=1e-6)
        assert np.abs(physics.error_reduction_step(noisy, probe, rel, size, 10, solver)).max() > 1e-3
    for band in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="band must be a finite amplitude ≥ 0"):
            physics.error_reduction_step(noisy, probe, rel, size, 3, "raar", band=band)


def test_error_reduction_step_names_bad_shapes():
    with pytest.raises(ValueError, match="groups, members"):
        physics.error_reduction_step(np.ones((2, 16, 16)), np.ones((16, 16)), np.zeros((2, 2)), 20)


def test_place_patches_is_the_adjoint_of_extract_patches_and_matches_place():
    """⟨extract(O), Y⟩ = ⟨O, place(Y)⟩ for the gather form, and place_patches = Σ physics.place,
    including a patch that hangs over the image's edge."""
    rng = np.random.default_rng(6)
    shape, N = (40, 52), 16
    xs, ys = np.array([10.3, 30.75, 47.5]), np.array([12.6, 20.0, 35.25])
    image = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    patches = rng.standard_normal((3, N, N)) + 1j * rng.standard_normal((3, N, N))
    placed = physics.place_patches(patches, xs, ys, shape)
    assert placed.shape == shape and placed.dtype == patches.dtype
    assert np.vdot(physics.extract_patches(image, xs, ys, N), patches) == pytest.approx(np.vdot(image, placed),
                                                                                        rel=1e-10)
    np.testing.assert_allclose(placed, physics.place(patches, np.column_stack([xs, ys]), shape).sum(axis=0),
                               atol=1e-5)
