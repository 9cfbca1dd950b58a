"""The TensorFlow backend: physics layers against physics.py, the whole forward pass against an
independent NumPy implementation of architecture.py, training through the shared loop,
determinism, several geometries in one process, and the weight/optimiser boundary."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from fly64_train import architecture, config, legacy, physics  # noqa: E402
from fly64_train.backends.base import Prediction, get_backend  # noqa: E402
from fly64_train.backends.tensorflow import TensorFlowBackend  # noqa: E402
from fly64_train.backends.tensorflow import model as tfm  # noqa: E402
from fly64_train.training import LoopSettings, run_training  # noqa: E402
from tests.backend_support import deterministic_weights, make_params, smooth_probe  # noqa: E402







def smooth_object(size: int, seed: int = 0) -> np.ndarray:
    """A small random smooth complex object: amplitude in ~[0.2, 0.8], phase within ±1 rad."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    amp, phase = np.full_like(xx, 0.5), np.zeros_like(xx)
    for _ in range(4):
        fx, fy, p1, p2 = rng.uniform(2, 9), rng.uniform(2, 9), rng.uniform(0, 6), rng.uniform(0, 6)
        amp += 0.15 * np.sin(fx * xx + p1) * np.cos(fy * yy + p2)
        phase += 0.4 * np.sin(fy * xx + p2) * np.cos(fx * yy + p1)
    return (amp * np.exp(1j * phase)).astype(np.complex64)


def synthetic_groups(N: int, gridsize: int, n_groups: int, seed: int = 0, spread: float = 5.0):
    """Diffraction amplitudes x (B,N,N,C), offsets rel (B,C,2), the probe and true patches (B,C,N,N)."""
    rng = np.random.default_rng(seed)
    obj = smooth_object(3 * N, seed)
    probe = smooth_probe(N)
    C = gridsize * gridsize
    centres = rng.uniform(N, 2 * N, size=(n_groups, 2))
    rel = rng.uniform(-spread, spread, size=(n_groups, C, 2)) if C > 1 else np.zeros((n_groups, 1, 2))
    rel = rel - rel.mean(axis=1, keepdims=True)
    positions = (centres[:, None, :] + rel).reshape(-1, 2)
    patches = physics.extract_patches(obj, positions[:, 0], positions[:, 1], N)
    amp = physics.far_field_amplitude(physics.illuminate(patches, probe)).astype(np.float32)
    x = np.ascontiguousarray(np.moveaxis(amp.reshape(n_groups, C, N, N), 1, -1))
    return x, rel.astype(np.float32), probe, patches.reshape(n_groups, C, N, N)


@pytest.fixture(scope="module")
def backend():
    b = get_backend("tensorflow")
    b.configure(threads=0, deterministic=False, seed=0)
    return b


# ---------------------------------------------------------------------------------------------
# An independent NumPy forward pass of architecture.py (float64)

def np_conv(x, weights, conv, act=None):
    kernel, bias = weights[f"{conv.name}/kernel"].astype(np.float64), weights[f"{conv.name}/bias"]
    H, W = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = sum(np.einsum("bhwc,co->bhwo", padded[:, i:i + H, j:j + W], kernel[i, j])
              for i in range(3) for j in range(3)) + bias
    return np.maximum(out, 0) if act == "relu" else out


def np_up(x):
    return x.repeat(2, axis=1).repeat(2, axis=2)


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


NP_ACT = {"sigmoid": np_sigmoid, "swish": lambda t: t * np_sigmoid(t), "relu": lambda t: np.maximum(t, 0),
          "softplus": lambda t: np.logaddexp(0, t)}


def numpy_object(weights, params, x):
    g = architecture.geometry_from_params(params)
    if g.shared_members:  # each member through the single-pattern network
        B, N, _, C = x.shape
        members = np.moveaxis(x, -1, 1).reshape(B * C, N, N, 1)
        return numpy_object(weights, {**params, "gridsize": 1}, members).reshape(B, C, N, N)
    h = x.astype(np.float64) * params["intensity_scale"] / np.exp(float(weights["log_scale"]))
    for block in g.encoder():
        for conv in block:
            h = np_conv(h, weights, conv, "relu")
        B, H, W, C = h.shape
        h = h.reshape(B, H // 2, 2, W // 2, 2, C).max(axis=(2, 4))
    out = {}
    for branch in ("amp", "phase"):
        layers, d = g.decoder(branch), h
        for block in layers["blocks"]:
            for conv in block:
                d = np_conv(d, weights, conv, "relu")
            d = np_up(d)
        act = NP_ACT[g.amp_activation] if branch == "amp" else (lambda t: math.pi * np.tanh(t))
        q = g.N // 4
        x1 = np.pad(act(np_conv(d[..., :-4], weights, layers["head"])), ((0, 0), (q, q), (q, q), (0, 0)))
        if g.probe_big:
            x2 = d[..., -4:]
            for conv in layers["border_block"]:
                x2 = np_conv(x2, weights, conv, "relu")
            x2 = np_conv(np_up(x2), weights, layers["border_out"])
            x1 = x1 + x2 * np_sigmoid(x2) * g.border_mask()[None, :, :, None]
        out[branch] = x1
    return np.moveaxis(out["amp"] * np.exp(1j * out["phase"]), -1, 1)  # (B, C_out, N, N)


def numpy_forward(weights, params, x, rel):
    """trimmed (B,N,N), patches (B,C,N,N), amplitude (B,N,N,C) by physics.py from numpy_object."""
    g = architecture.geometry_from_params(params)
    N, P, C = g.N, g.padded_size, g.channels
    obj = numpy_object(weights, params, x)
    centres = P // 2 + rel.astype(np.float64)
    canvases = []
    for b in range(len(x)):
        if g.object_big:
            canvases.append(physics.weighted_mean(obj[b], centres[b], (P, P), g.canvas_weight())[0])
        else:
            canvases.append(physics.place(obj[b], np.array([[P // 2, P // 2]]), (P, P))[0])
    canvases = np.stack(canvases)
    trimmed = physics.extract(canvases, np.full((len(x), 2), P // 2), N)
    patches = np.stack([physics.extract(np.repeat(canvases[b:b + 1], C, 0), centres[b], N)
                        for b in range(len(x))])
    probe = weights["probe"].astype(np.complex128)
    amplitude = physics.far_field_amplitude(physics.illuminate(patches, probe)) * np.exp(float(weights["log_scale"]))
    return trimmed, patches, np.moveaxis(amplitude, 1, -1)


def perturbed_weights(model, seed: int) -> dict[str, np.ndarray]:
    """The model's weights with random biases and a shifted log_scale (so every term is exercised)."""
    rng = np.random.default_rng(seed)
    weights = model.get_weights()
    for name in weights:
        if name.endswith("/bias"):
            weights[name] = rng.normal(0, 0.05, weights[name].shape).astype(np.float32)
    weights["log_scale"] = np.float32(weights["log_scale"] + 0.1)
    return weights


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
# The full model

@pytest.mark.parametrize("gridsize,object_big,probe_big,activation,encoding", [
    (1, True, True, "sigmoid", "shared"), (2, True, True, "sigmoid", "shared"),
    (2, True, True, "sigmoid", "stacked"), (2, False, False, "swish", "stacked"),
    (2, True, False, "softplus", "shared")])
def test_full_model_matches_numpy_reference(backend, gridsize, object_big, probe_big, activation, encoding):
    params = make_params(gridsize=gridsize, object_big=object_big, probe_big=probe_big,
                         amp_activation=activation, n_filters_scale=1, member_encoding=encoding)
    N, C = 64, gridsize * gridsize
    x, rel, probe, _ = synthetic_groups(N, gridsize, 2, seed=gridsize)
    model = backend.build(params, probe, seed=3)
    weights = perturbed_weights(model, seed=4)
    model.set_weights(weights)
    prediction = model.predict(x, rel)
    assert isinstance(prediction, Prediction)
    assert prediction.trimmed.shape == (2, N, N) and prediction.trimmed.dtype == np.complex64
    assert prediction.patches.shape == (2, C, N, N) and prediction.patches.dtype == np.complex64
    assert prediction.amplitude.shape == (2, N, N, C) and prediction.amplitude.dtype == np.float32

    # Diffraction of the model's own patches through the NumPy physics (tight: physics only).
    log_scale = float(weights["log_scale"])
    reference = physics.far_field_amplitude(physics.illuminate(prediction.patches, weights["probe"]))
    np.testing.assert_allclose(np.moveaxis(prediction.amplitude, -1, 1), reference * math.exp(log_scale),
                               rtol=1e-4, atol=1e-4)

    # The whole forward pass against the independent NumPy implementation.
    trimmed, patches, amplitude = numpy_forward(weights, params, x, rel)
    scale = np.abs(trimmed).max()
    np.testing.assert_allclose(prediction.trimmed, trimmed, atol=1e-4 * scale)
    np.testing.assert_allclose(prediction.patches, patches, atol=1e-4 * scale)
    np.testing.assert_allclose(prediction.amplitude, amplitude, rtol=1e-3, atol=1e-3 * amplitude.max())

    # Loss per architecture.py from the predicted amplitude.
    s = params["intensity_scale"]
    intensity = prediction.amplitude.astype(np.float64) ** 2
    counts = (s * x.astype(np.float64)) ** 2
    expected = np.mean(intensity - counts * np.log(intensity + architecture.NLL_EPSILON))
    assert model.loss(x, rel) == pytest.approx(expected, rel=1e-4)


def test_loss_with_mae_weight(backend):
    params = make_params(gridsize=1, n_filters_scale=1)
    params.update(nll_weight=0.5, mae_weight=0.25)
    x, rel, probe, _ = synthetic_groups(64, 1, 2, seed=5)
    model = backend.build(params, probe, seed=0)
    amplitude = model.predict(x, rel).amplitude.astype(np.float64)
    s = params["intensity_scale"]
    nll = np.mean(amplitude ** 2 - (s * x) ** 2 * np.log(amplitude ** 2 + architecture.NLL_EPSILON))
    mae = np.mean(np.abs(amplitude - s * x))
    assert model.loss(x, rel) == pytest.approx(0.5 * nll + 0.25 * mae, rel=1e-4)


def test_trainable_flags(backend):
    params = make_params(gridsize=1, n_filters_scale=1)
    params["probe.trainable"] = True
    params["intensity_scale.trainable"] = False
    model = backend.build(params, smooth_probe(64), seed=0)
    assert float(model.get_weights()["log_scale"]) == pytest.approx(math.log(params["intensity_scale"]), rel=1e-6)
    state = model.optimizer_state()
    assert "m/probe" in state and "m/log_scale" not in state and state["m/probe"].dtype == np.complex64
    x, rel, _, _ = synthetic_groups(64, 1, 4, seed=0)
    before = model.get_weights()
    model.train_step(x, rel)
    after = model.get_weights()
    assert not np.array_equal(before["probe"], after["probe"])
    assert np.array_equal(before["log_scale"], after["log_scale"])

    params["probe.trainable"], params["intensity_scale.trainable"] = False, True
    model = backend.build(params, smooth_probe(64), seed=0)
    before = model.get_weights()
    model.train_step(x, rel)
    after = model.get_weights()
    assert np.array_equal(before["probe"], after["probe"])
    assert not np.array_equal(before["log_scale"], after["log_scale"])


def test_eager_mode_matches_compiled(backend):
    params = make_params(gridsize=2, n_filters_scale=1)
    x, rel, probe, _ = synthetic_groups(64, 2, 3, seed=9)
    compiled = backend.build(params, probe, seed=0)
    eager = backend.build({**params, "compile": False}, probe, seed=0)
    assert not isinstance(eager._train_fn, tf.types.experimental.PolymorphicFunction)
    a, b = compiled.predict(x, rel), eager.predict(x, rel)
    np.testing.assert_allclose(a.amplitude, b.amplitude, rtol=1e-5, atol=1e-5)
    assert compiled.train_step(x, rel) == pytest.approx(eager.train_step(x, rel), rel=1e-5)
    for name, value in compiled.get_weights().items():
        np.testing.assert_allclose(eager.get_weights()[name], value, atol=1e-5, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Training through the shared loop

def _amplitude_error(model, x, rel, s) -> float:
    """Relative misfit ‖A_pred − s·x‖/‖s·x‖ of the predicted diffraction amplitudes."""
    amplitude = model.predict(x, rel).amplitude
    return float(np.linalg.norm(amplitude - s * x) / np.linalg.norm(s * x))


@pytest.mark.parametrize("gridsize", [1, 2])
def test_training_loss_falls_and_fit_improves(backend, tmp_path, gridsize):
    params = make_params(gridsize=gridsize, n_filters_scale=1)
    x, rel, probe, _ = synthetic_groups(64, gridsize, 64, seed=10 + gridsize)
    model = backend.build(params, probe, seed=1)
    s = params["intensity_scale"]
    loss_before, error_before = model.loss(x, rel), _amplitude_error(model, x, rel, s)
    # 8 epochs: after 5 the whole-set loss is still within Adam's step noise of the start
    settings = LoopSettings(epochs=8, batch_size=8, validation_fraction=0.1, checkpoint=False, seed=4)
    result = run_training(model, x, rel, settings, tmp_path)
    losses = [row["loss"] for row in result.history]
    assert result.epochs_completed == 8 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    assert model.loss(x, rel) < loss_before - 0.005
    assert _amplitude_error(model, x, rel, s) < error_before




def test_deterministic_training_gives_identical_weight_bytes(backend, tmp_path):
    try:
        x, rel, probe, _ = synthetic_groups(64, 2, 12, seed=3)
        first = deterministic_weights(backend, tmp_path / "a", x, rel, probe, threads=0)
        second = deterministic_weights(backend, tmp_path / "b", x, rel, probe, threads=0)
    finally:
        backend.configure(threads=0, deterministic=False, seed=0)
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].tobytes() == second[name].tobytes(), name


def test_optimizer_state_resume_is_exact_and_lr_change_does_not_retrace(backend):
    params = make_params(gridsize=2, n_filters_scale=1)
    x, rel, probe, _ = synthetic_groups(64, 2, 8, seed=6)
    a = backend.build(params, probe, seed=2)
    a.train_step(x[:4], rel[:4])
    a.learning_rate = 5e-4
    a.train_step(x[4:7], rel[4:7])  # a smaller last batch
    assert a._train_fn.experimental_get_tracing_count() == 1
    weights, state = a.get_weights(), a.optimizer_state()
    assert int(state["iterations"]) == 2 and state["iterations"].dtype == np.int64
    loss_a = a.train_step(x[4:], rel[4:])

    b = backend.build(params, smooth_probe(64, seed=1), seed=99)
    b.set_weights(weights)
    b.set_optimizer_state(state)
    b.learning_rate = 5e-4
    loss_b = b.train_step(x[4:], rel[4:])
    assert loss_a == loss_b
    for name, value in a.get_weights().items():
        assert value.tobytes() == b.get_weights()[name].tobytes(), name
    assert b.learning_rate == pytest.approx(5e-4)
    with pytest.raises(KeyError, match="m/log_scale"):
        b.set_optimizer_state({k: v for k, v in state.items() if k != "m/log_scale"})
    bad = dict(state)
    bad["v/log_scale"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="v/log_scale"):
        b.set_optimizer_state(bad)
    with pytest.raises(ValueError, match="positive"):
        b.learning_rate = 0.0


# ---------------------------------------------------------------------------------------------
# Several geometries in one process, the weights boundary, the backend object

def test_several_gridsizes_and_sizes_in_one_process(backend):
    models = {}
    for gridsize, N in ((1, 64), (2, 64), (2, 128), (1, 128)):
        models[gridsize, N] = backend.build(make_params(gridsize=gridsize, N=N, n_filters_scale=1),
                                            smooth_probe(N), seed=0)
    for (gridsize, N), model in models.items():  # interleaved use after all were built
        C = gridsize * gridsize
        x = np.random.default_rng(N + C).random((2, N, N, C)).astype(np.float32)
        rel = np.random.default_rng(C).uniform(-3, 3, (2, C, 2)).astype(np.float32)
        out = model.predict(x, rel)
        assert out.amplitude.shape == (2, N, N, C) and out.trimmed.shape == (2, N, N)
        assert np.isfinite(out.amplitude).all()
        assert list(model.get_weights()) == list(model.geometry.parameter_shapes())
        assert math.isfinite(model.train_step(x, rel))
        assert math.isfinite(model.loss(x, rel))


def test_weight_names_layout_and_seeded_init(backend):
    params = make_params(gridsize=2)
    geometry = architecture.geometry_from_params(params)
    a = backend.build(params, smooth_probe(64), seed=5)
    weights = a.get_weights()
    shapes = geometry.parameter_shapes()
    assert list(weights) == list(shapes)
    for name, shape in shapes.items():
        assert weights[name].shape == tuple(shape), name
        assert weights[name].dtype == (np.complex64 if name == "probe" else np.float32), name
    assert sum(int(np.prod(s)) for k, s in shapes.items() if k != "probe") + 1 > 2_300_000
    for conv in geometry.convs():
        limit = math.sqrt(6.0 / (9 * conv.in_channels + 9 * conv.out_channels))
        kernel = weights[f"{conv.name}/kernel"]
        assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.8 * limit
        assert not weights[f"{conv.name}/bias"].any()
    np.testing.assert_array_equal(weights["probe"], smooth_probe(64))
    same = backend.build(params, smooth_probe(64), seed=5).get_weights()
    other = backend.build(params, smooth_probe(64), seed=6).get_weights()
    assert all(np.array_equal(weights[k], same[k]) for k in weights)
    assert not np.array_equal(weights["encoder/block0/conv0/kernel"], other["encoder/block0/conv0/kernel"])


def test_weight_round_trip_and_errors(backend):
    params = make_params(gridsize=2, n_filters_scale=1, member_encoding="stacked")
    x, rel, probe, _ = synthetic_groups(64, 2, 2, seed=8)
    a = backend.build(params, probe, seed=1)
    b = backend.build(params, smooth_probe(64, seed=3), seed=2)
    weights = a.get_weights()
    b.set_weights(weights)
    for name, value in b.get_weights().items():
        assert value.tobytes() == weights[name].tobytes(), name
    pa, pb = a.predict(x, rel), b.predict(x, rel)
    np.testing.assert_array_equal(pa.amplitude, pb.amplitude)
    np.testing.assert_array_equal(pa.patches, pb.patches)

    untouched = b.get_weights()
    with pytest.raises(KeyError, match="decoder_phase/head/bias"):
        b.set_weights({k: v for k, v in weights.items() if k != "decoder_phase/head/bias"})
    with pytest.raises(KeyError, match="unexpected.*extra/kernel"):
        b.set_weights({**weights, "extra/kernel": np.zeros(1)})
    wrong = dict(weights)
    wrong["encoder/block0/conv0/kernel"] = np.transpose(weights["encoder/block0/conv0/kernel"], (3, 2, 0, 1))
    with pytest.raises(ValueError, match=r"encoder/block0/conv0/kernel.*\(3, 3, 4, 32\)"):
        b.set_weights(wrong)
    with pytest.raises(ValueError, match="must be real"):
        b.set_weights({**weights, "log_scale": np.complex64(1 + 1j)})
    with pytest.raises(ValueError, match="probe"):
        b.set_weights({**weights, "probe": np.zeros((32, 32), np.complex64)})
    gs1 = backend.build(make_params(gridsize=1, n_filters_scale=1), probe, seed=0)
    with pytest.raises(ValueError, match="encoder/block0/conv0/kernel"):
        gs1.set_weights(weights)  # a gridsize-2 network's weights into a gridsize-1 network
    for name, value in b.get_weights().items():  # failed loads changed nothing
        assert value.tobytes() == untouched[name].tobytes(), name


def test_input_and_build_errors(backend):
    params = make_params(gridsize=2, n_filters_scale=1)
    model = backend.build(params, smooth_probe(64), seed=0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 64, 64, 4\)"):
        model.predict(np.zeros((2, 64, 64, 1), np.float32), np.zeros((2, 4, 2), np.float32))
    with pytest.raises(ValueError, match=r"rel must have shape \(2, 4, 2\)"):
        model.predict(np.zeros((2, 64, 64, 4), np.float32), np.zeros((2, 1, 2), np.float32))
    with pytest.raises(ValueError, match="probe"):
        backend.build(params, smooth_probe(128), seed=0)
    with pytest.raises(KeyError, match="padded_size"):
        backend.build({k: v for k, v in params.items() if k != "padded_size"}, smooth_probe(64), seed=0)


def test_backend_identity_versions_and_configure(backend):
    assert isinstance(backend, TensorFlowBackend) and backend.name == "tensorflow"
    from tensorflow.python.framework import config as tf_config
    versions = backend.versions()
    assert versions["tensorflow"] == tf.__version__ and "keras" in versions
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
    with pytest.raises(ValueError, match="threads"):
        backend.configure(threads=-1, deterministic=False, seed=0)
