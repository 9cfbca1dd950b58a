"""The likelihood-limited yardstick: extraction conventions, the exact gradient, and recovery."""
import numpy as np
import pytest

from fly64_train import physics
from fly64_train.data.contract import StudyData
from fly64_train.evaluation import likelihood_bound as lb

N = 16


def _probe(n: int = N) -> np.ndarray:
    y, x = np.mgrid[:n, :n] - n / 2 + 0.5
    radius2 = (x ** 2 + y ** 2) / (0.3 * n) ** 2
    return (np.exp(-radius2) * np.exp(1j * (0.8 * radius2 + 0.3 * x / n))).astype(np.complex64)


def _smooth_object(shape, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:shape[0], :shape[1]] / shape[0]
    amplitude = 0.7 + 0.2 * np.sin(2 * np.pi * (x * rng.uniform(1, 2) + y * rng.uniform(0.5, 1.5)))
    phase = 0.6 * np.cos(2 * np.pi * (x * rng.uniform(0.5, 1.5) - y * rng.uniform(1, 2)))
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


RELATIVE = np.array([[[-2.25, -1.5], [2.75, -1.5], [-2.25, 1.5], [1.75, 1.5]],
                     [[0.4, 0.3], [-0.4, -0.3], [3.1, -2.2], [-3.1, 2.2]]])


def test_members_are_cut_as_the_physics_cuts_patches():
    P = lb.canvas_size(RELATIVE, N)
    canvas = np.stack([_smooth_object((P, P), seed) for seed in (0, 1)])
    members = lb.extract_members(canvas, lb._layout(RELATIVE, N), N)
    for g in range(2):
        centres = P // 2 + RELATIVE[g]
        expected = physics.extract_patches(canvas[g], centres[:, 0], centres[:, 1], N)
        np.testing.assert_allclose(members[g], expected, atol=1e-5)


def test_placing_is_the_adjoint_of_extracting():
    rng = np.random.default_rng(3)
    P = lb.canvas_size(RELATIVE, N)
    layout = lb._layout(RELATIVE, N)
    canvas = rng.standard_normal((2, P, P)) + 1j * rng.standard_normal((2, P, P))
    patches = rng.standard_normal((2, 4, N, N)) + 1j * rng.standard_normal((2, 4, N, N))
    left = np.vdot(lb.extract_members(canvas, layout, N), patches)
    right = np.vdot(canvas, lb.place_members(patches, layout))
    assert left == pytest.approx(right, rel=1e-10)


def test_nll_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    probe = _probe()
    patches = (_smooth_object((N, N), 2) * np.ones((1, 2, 1, 1))).astype(np.complex128)
    # counts drawn from another object: the gradient is far from zero, and dark pixels count 0 (a
    # pixel with counts but λ ≈ 0 has curvature c/λ² that no finite difference resolves)
    other = _smooth_object((N, N), 7)[None, None] * np.ones((1, 2, 1, 1))
    expected = (np.abs(np.fft.fft2(other * probe, norm="ortho")) * 3.0) ** 2
    counts = rng.poisson(expected).astype(np.float64)
    _, gradient = lb._nll(patches, counts, probe.astype(np.complex128), 3.0, with_gradient=True)
    direction = rng.standard_normal(patches.shape) + 1j * rng.standard_normal(patches.shape)
    step = 1e-6
    plus = lb._nll(patches + step * direction, counts, probe, 3.0)[0].sum()
    minus = lb._nll(patches - step * direction, counts, probe, 3.0)[0].sum()
    numeric = (plus - minus) / (2 * step)
    analytic = 2.0 * np.real(np.vdot(gradient, direction))  # dL = 2 Re⟨∂L/∂X*, dX⟩
    assert analytic == pytest.approx(numeric, rel=1e-5)


def test_public_nll_reads_counts_in_the_data_layout():
    probe = _probe()
    patch = _smooth_object((N, N), 4)[None, None]
    amplitude = physics.far_field_amplitude(physics.illuminate(patch, probe))  # fftshifted, as stored
    expected = (amplitude * 5.0) ** 2
    nll = lb.poisson_nll(patch, expected, probe, 5.0)[0]
    # At λ = c the Poisson NLL is Σ c − c log c: the truth is the minimum for its own expected counts.
    lam = expected + lb.LAMBDA_EPSILON
    assert nll == pytest.approx(float(np.sum(lam - expected * np.log(lam))), rel=1e-5)


def test_mle_recovers_the_likelihood_of_noiseless_overlapping_data():
    probe = _probe()
    P = lb.canvas_size(RELATIVE[:1], N)
    truth_canvas = _smooth_object((P, P), 6)[None]
    truth = lb.extract_members(truth_canvas, lb._layout(RELATIVE[:1], N), N)
    scale = 20.0
    counts = (physics.far_field_amplitude(physics.illuminate(truth, probe)) * scale) ** 2  # expected, no noise
    flat_nll = lb.poisson_nll(np.ones_like(truth), counts, probe, scale)[0]
    true_nll = lb.poisson_nll(truth, counts, probe, scale)[0]
    result = lb.group_mle(counts, probe, RELATIVE[:1], scale, iterations=600, learning_rate=0.03)
    assert result.patches.shape == truth.shape and result.patches.dtype == np.complex64
    # closes nearly all of the flat → truth likelihood gap (the truth is the global minimum here)
    assert (flat_nll - result.nll[0]) / (flat_nll - true_nll) > 0.98
    assert result.history[0][1] > result.history[-1][1]


@pytest.mark.parametrize("change, message", [
    (lambda c, p, r: (c[0], p, r), "counts must be"),
    (lambda c, p, r: (-c, p, r), "non-negative"),
    (lambda c, p, r: (c * np.nan, p, r), "finite"),
    (lambda c, p, r: (c, p[:8, :8], r), "probe"),
    (lambda c, p, r: (c, p, r[:, :2]), "relative_xy"),
])
def test_bad_input_is_named(change, message):
    counts = np.ones((2, 4, N, N))
    with pytest.raises(ValueError, match=message):
        lb.group_mle(*change(counts, _probe(), RELATIVE), 1.0, iterations=1)


def test_yardstick_on_a_study_dataset():
    obj = _smooth_object((64, 64), 8)
    probe = _probe()
    ys, xs = np.mgrid[20:44:3, 20:44:3].reshape(2, -1).astype(np.float64) + 0.25
    scale = 30.0
    rng = np.random.default_rng(9)
    amplitude = physics.forward_amplitude(obj, probe, xs, ys)
    diffraction = (np.sqrt(rng.poisson((amplitude * scale) ** 2)) / scale).astype(np.float32)
    data = StudyData(diffraction=diffraction, xcoords=xs, ycoords=ys, probe=probe, obj=obj,
                     metadata={"photon_scale": scale})
    report = lb.likelihood_limited(data, gridsize=2, n_groups=4, seed=1, iterations=400, learning_rate=0.03)
    assert report["groups"] == 4 and report["gridsize"] == 2 and report["crop"] == N // 2
    assert -1.0 <= report["amplitude_patch_corr"] <= 1.0 and -1.0 <= report["phase_patch_corr"] <= 1.0
    # the MLE fits the noisy counts at least as well as the truth does (it may fit the noise too)
    assert report["nll_per_pattern"] <= report["true_nll_per_pattern"] + 1.0
    assert report["phase_patch_corr"] > 0.5  # smooth object, 4 overlapping views: the phase is determined
