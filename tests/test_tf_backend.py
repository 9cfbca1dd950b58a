"""TensorFlow-specific parts of the TensorFlow backend: its physics layers against physics.py, the
compiled step (no retracing), thread pools and op determinism. The contract every backend meets
(forward pass, training, weights, errors) is tests/test_backend_contract.py."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from fly64_train import architecture, physics  # noqa: E402
from fly64_train.backends.tensorflow import TensorFlowBackend  # noqa: E402
from fly64_train.backends.tensorflow import model as tfm  # noqa: E402
from tests.backend_support import installed_backend, make_spec, smooth_object, synthetic_groups  # noqa: E402


@pytest.fixture(scope="module")
def backend():
    return installed_backend("tensorflow")


# ---------------------------------------------------------------------------------------------
# Physics layers against physics.py

def test_sampling_matrix_matches_numpy_reference():
    centres = np.array([0.0, 3.25, 39.0, 38.5, -2.7, 80.9, 41.999], dtype=np.float32)
    for n_out, n_in in ((64, 78), (8, 5)):
        ours = tfm.sampling_matrix(tf.constant(centres), n_out, n_in).numpy()
        np.testing.assert_allclose(ours, physics.sampling_matrix(centres, n_out, n_in), atol=1e-5)


def test_extract_place_and_reassembly_match_numpy_reference():
    rng = np.random.default_rng(1)
    B, C, N, P = 3, 4, 16, 28
    rel = rng.uniform(-5.5, 5.5, size=(B, C, 2)).astype(np.float32)
    rows, cols = tfm.member_sampling(tf.constant(rel), N, P)
    centres = (P // 2 + rel.astype(np.float64)).reshape(-1, 2)

    canvas = (rng.normal(size=(B, P, P)) + 1j * rng.normal(size=(B, P, P))).astype(np.complex64)
    planes = np.stack([canvas.real, canvas.imag], axis=1)  # (B, 2, P, P)
    ours = tfm.extract(tf.constant(planes)[:, None], rows[:, :, None], cols[:, :, None]).numpy()  # (B,C,2,N,N)
    ref = physics.extract(np.repeat(canvas, C, axis=0), centres, N).reshape(B, C, N, N)
    np.testing.assert_allclose(ours[:, :, 0] + 1j * ours[:, :, 1], ref, atol=2e-5)

    patches = (rng.normal(size=(B, C, N, N)) + 1j * rng.normal(size=(B, C, N, N))).astype(np.complex64)
    parts = np.stack([patches.real, patches.imag], axis=2)  # (B, C, 2, N, N)
    weight = np.full((N, N), 0.01)  # written out here, not taken from architecture.canvas_weight
    weight[N // 4:3 * N // 4, N // 4:3 * N // 4] = 1.0
    canvas_ours = tfm.reassemble(tf.constant(parts), rows, cols, border_weight=0.01).numpy()  # (B, 2, P, P)
    for b in range(B):
        expected, cover = physics.weighted_mean(patches[b], centres.reshape(B, C, 2)[b], (P, P), weight)
        np.testing.assert_allclose(canvas_ours[b, 0] + 1j * canvas_ours[b, 1], expected, atol=2e-5)
        assert (cover < 1e-6).any()  # the test covers the uncovered (undivided) border as well


def test_far_field_matches_numpy_reference():
    rng = np.random.default_rng(2)
    psi = (rng.normal(size=(2, 3, 64, 64)) + 1j * rng.normal(size=(2, 3, 64, 64))).astype(np.complex64)
    ours = tfm.far_field_amplitude(tf.constant(psi.real), tf.constant(psi.imag)).numpy()
    ref = physics.far_field_amplitude(psi)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose((ours ** 2).sum(axis=(-2, -1)), (np.abs(psi) ** 2).sum(axis=(-2, -1)), rtol=1e-4)
    # The gradient stays finite where the amplitude is exactly zero.
    zeros = tf.zeros((1, 8, 8))
    with tf.GradientTape() as tape:
        tape.watch(zeros)
        total = tf.reduce_sum(tfm.far_field_amplitude(zeros, zeros))
    assert np.isfinite(tape.gradient(total, zeros).numpy()).all()


def test_translation_direction_delta_lands_at_offset():
    """A delta at the patch centre placed with rel=(+3, −2) lands at canvas [row P//2−2, col P//2+3]."""
    N, P = 64, 78
    parts = np.zeros((1, 1, 2, N, N), np.float32)
    parts[0, 0, 0, N // 2, N // 2] = 1.0
    rel = tf.constant([[[3.0, -2.0]]])
    rows, cols = tfm.member_sampling(rel, N, P)
    canvas = tfm.reassemble(tf.constant(parts), rows, cols, architecture.CANVAS_BORDER_WEIGHT).numpy()[0, 0]
    peak = np.unravel_index(np.argmax(canvas), canvas.shape)
    assert peak == (P // 2 - 2, P // 2 + 3)
    assert np.count_nonzero(canvas) == 1 and canvas[peak] == pytest.approx(1.0)
    ref = physics.place(parts[0, :, 0], np.array([[P // 2 + 3, P // 2 - 2]]), (P, P))[0]
    assert np.unravel_index(np.argmax(ref), ref.shape) == peak
    back = tfm.extract(tf.constant(canvas[None, None]), rows, cols).numpy()[0, 0]
    assert np.unravel_index(np.argmax(back), back.shape) == (N // 2, N // 2)


def test_reassemble_then_extract_returns_consistent_patches():
    """Patches cut from one object (integer offsets) survive reassembly → extraction exactly."""
    rng = np.random.default_rng(3)
    N, P, C = 32, 52, 4
    obj = smooth_object(P, seed=1)
    rel = rng.integers(-8, 9, size=(2, C, 2)).astype(np.float32)
    centres = P // 2 + rel.astype(np.float64)
    patches = np.stack([physics.extract(np.repeat(obj[None], C, 0), centres[b], N) for b in range(2)])
    rows, cols = tfm.member_sampling(tf.constant(rel), N, P)
    canvas = tfm.reassemble(tf.constant(np.stack([patches.real, patches.imag], 2).astype(np.float32)), rows, cols,
                            architecture.CANVAS_BORDER_WEIGHT)
    back = tfm.extract(canvas[:, None], rows[:, :, None], cols[:, :, None]).numpy()
    np.testing.assert_allclose(back[:, :, 0] + 1j * back[:, :, 1], patches, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The compiled step and the runtime

def test_learning_rate_change_and_a_smaller_batch_do_not_retrace(backend):
    model = backend.build(make_spec(gridsize=2, n_filters_scale=1, compile=True))
    x, rel, _, _ = synthetic_groups(64, 2, 7, seed=6)
    model.train_step(x[:4], rel[:4])
    model.learning_rate = 5e-4
    model.train_step(x[4:], rel[4:])  # a smaller last batch
    assert isinstance(model._train_fn, tf.types.experimental.PolymorphicFunction)
    assert model._train_fn.experimental_get_tracing_count() == 1
    eager = backend.build(make_spec(gridsize=2, n_filters_scale=1))
    assert not isinstance(eager._train_fn, tf.types.experimental.PolymorphicFunction)


def test_configure_determinism_seeds_and_threads(backend):
    assert isinstance(backend, TensorFlowBackend) and "keras" in backend.versions()
    from tensorflow.python.framework import config as tf_config
    backend.configure(threads=0, deterministic=True, seed=3)
    assert tf_config.is_op_determinism_enabled()
    first = tf.random.uniform([3]).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same request again is silent
        backend.configure(threads=0, deterministic=True, seed=3)
    assert np.array_equal(first, tf.random.uniform([3]).numpy())  # seeded again
    backend.configure(threads=0, deterministic=False, seed=0)
    assert not tf_config.is_op_determinism_enabled()
    tf.constant(1.0) + 1.0  # the runtime is initialised: a different thread count cannot apply now
    with pytest.warns(RuntimeWarning, match="threads are already fixed"):
        backend.configure(threads=tf.config.threading.get_intra_op_parallelism_threads() + 1,
                          deterministic=False, seed=0)
