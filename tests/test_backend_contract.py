"""The backend contract, run against every backend in the registry whose framework is installed: the
forward pass against an independent NumPy implementation of architecture.py, the loss, training
through the shared loop, determinism, resume, several geometries in one process, the initial
weights (architecture.initial_weights, so the same seed starts every backend alike) and the
weight/optimiser boundary with its errors. A new backend runs this file unchanged."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fly64_train import architecture, physics
from fly64_train.backends import registry
from fly64_train.backends.base import Backend, Prediction
from fly64_train.config import TrainingConfig
from fly64_train.specs import loop_settings
from fly64_train.training import run_training
from tests.backend_support import (GENERATOR_FIELDS, deterministic_weights, installed_backend, make_spec,
                                   numpy_forward, smooth_probe, synthetic_groups)


@pytest.fixture(scope="module", params=list(registry.BACKENDS))
def backend(request):
    return installed_backend(request.param)


def spec_for(backend, **fields):
    """make_spec with the backend's default step mode (compiled where the registry says it compiles)."""
    return make_spec(compile=registry.entry(backend.name).compiles, **fields)


def perturbed_weights(model, seed: int) -> dict[str, np.ndarray]:
    """The model's weights with random biases, O(0.1) kernels where they start near zero (the unet's
    heads, so the layers beneath them show in the output) and a shifted log_scale (so every term is
    exercised)."""
    rng = np.random.default_rng(seed)
    weights = model.get_weights()
    for name in weights:
        if name.endswith("/bias"):
            weights[name] = rng.normal(0, 0.05, weights[name].shape).astype(np.float32)
        elif name.endswith("/kernel") and np.abs(weights[name]).max() < 0.02:
            weights[name] = rng.normal(0, 0.1, weights[name].shape).astype(np.float32)
    weights["log_scale"] = np.float32(weights["log_scale"] + 0.1)
    return weights


# ---------------------------------------------------------------------------------------------
# The forward pass and the loss

@pytest.mark.parametrize("gridsize,object_big,probe_big,activation,encoding,pad_object,generator", [
    (1, True, True, "sigmoid", "shared", True, "cnn"), (2, True, True, "sigmoid", "shared", True, "cnn"),
    (2, True, True, "relu", "stacked", True, "cnn"), (2, False, False, "swish", "stacked", True, "cnn"),
    (2, True, False, "softplus", "shared", True, "cnn"),
    # the full head (pad_object=False): writes the whole patch, members meet in a plain mean
    (1, True, True, "sigmoid", "shared", False, "cnn"), (2, True, True, "sigmoid", "shared", False, "cnn"),
    (2, True, False, "swish", "stacked", False, "cnn"),
    # the ffno (always the whole patch); stacked: the members are its input channels, C heads
    (1, True, True, "sigmoid", "shared", False, "ffno"), (2, True, True, "sigmoid", "shared", False, "ffno"),
    (2, False, True, "softplus", "stacked", False, "ffno"),
    # larger groups on a grouped view (model.gridsize=3: 9 members)
    (3, True, True, "sigmoid", "shared", False, "cnn"), (3, True, False, "relu", "stacked", True, "cnn")])
def test_full_model_matches_numpy_reference(backend, gridsize, object_big, probe_big, activation, encoding,
                                            pad_object, generator):
    spec = spec_for(backend, gridsize=gridsize, object_big=object_big, probe_big=probe_big, amp_activation=activation,
                     n_filters_scale=1, member_encoding=encoding, seed=3, pad_object=pad_object, generator=generator)
    N, C = 64, gridsize * gridsize
    x, rel, probe, _ = synthetic_groups(N, gridsize, 2, seed=gridsize)
    model = backend.build(spec)
    weights = perturbed_weights(model, seed=4)
    weights["probe"] = probe
    model.set_weights(weights)
    prediction = model.predict(x, rel)
    assert isinstance(prediction, Prediction)
    assert prediction.trimmed.shape == (2, N, N) and prediction.trimmed.dtype == np.complex64
    assert prediction.patches.shape == (2, C, N, N) and prediction.patches.dtype == np.complex64
    assert prediction.amplitude.shape == (2, N, N, C) and prediction.amplitude.dtype == np.float32

    # Diffraction of the model's own patches through the NumPy physics (tight: physics only).
    log_scale = float(weights["log_scale"])
    reference = physics.far_field_amplitude(physics.illuminate(prediction.patches, probe))
    np.testing.assert_allclose(np.moveaxis(prediction.amplitude, -1, 1), reference * math.exp(log_scale),
                               rtol=1e-4, atol=1e-4)

    # The whole forward pass against the independent NumPy implementation.
    trimmed, patches, amplitude = numpy_forward(weights, spec, x, rel)
    scale = np.abs(trimmed).max()
    np.testing.assert_allclose(prediction.trimmed, trimmed, atol=1e-4 * scale)
    np.testing.assert_allclose(prediction.patches, patches, atol=1e-4 * scale)
    np.testing.assert_allclose(prediction.amplitude, amplitude, rtol=1e-3, atol=1e-3 * amplitude.max())

    # Loss per architecture.py from the predicted amplitude.
    s = spec.intensity_scale
    intensity = prediction.amplitude.astype(np.float64) ** 2
    counts = (s * x.astype(np.float64)) ** 2
    expected = np.mean(intensity - counts * np.log(intensity + architecture.NLL_EPSILON))
    assert model.loss(x, rel) == pytest.approx(expected, rel=1e-4)


def test_loss_with_mae_weight(backend):
    spec = spec_for(backend, gridsize=1, n_filters_scale=1, nll_weight=0.5, mae_weight=0.25)
    x, rel, probe, _ = synthetic_groups(64, 1, 2, seed=5)
    model = backend.build(spec)
    amplitude = model.predict(x, rel).amplitude.astype(np.float64)
    s = spec.intensity_scale
    nll = np.mean(amplitude ** 2 - (s * x) ** 2 * np.log(amplitude ** 2 + architecture.NLL_EPSILON))
    mae = np.mean(np.abs(amplitude - s * x))
    assert model.loss(x, rel) == pytest.approx(0.5 * nll + 0.25 * mae, rel=1e-4)


@pytest.mark.parametrize("generator", list(GENERATOR_FIELDS))
def test_gradients_reach_every_parameter(backend, generator):
    """One Adam step moves every trainable parameter (a parameter the loss does not reach keeps its value)."""
    spec = spec_for(backend, gridsize=2, n_filters_scale=1, seed=2, **GENERATOR_FIELDS[generator])
    x, rel, _, _ = synthetic_groups(64, 2, 4, seed=1)
    model = backend.build(spec)
    before = model.get_weights()
    model.train_step(x, rel)
    after = model.get_weights()
    assert set(model.trainable) == set(before) - {"probe"}
    frozen = [name for name in model.trainable if np.array_equal(before[name], after[name])]
    assert not frozen, f"{generator}: no gradient reached {frozen}"


@pytest.mark.parametrize("probe_trainable", [True, False])
def test_trainable_flags(backend, probe_trainable):
    spec = spec_for(backend, gridsize=1, n_filters_scale=1, probe_trainable=probe_trainable,
                     intensity_scale_trainable=not probe_trainable)
    model = backend.build(spec)
    assert float(model.get_weights()["log_scale"]) == pytest.approx(math.log(spec.intensity_scale), rel=1e-6)
    state = model.optimizer_state()
    assert ("m/probe" in state) is probe_trainable and ("m/log_scale" in state) is not probe_trainable
    if probe_trainable:
        assert state["m/probe"].dtype == np.complex64
    x, rel, _, _ = synthetic_groups(64, 1, 4, seed=0)
    before = model.get_weights()
    model.train_step(x, rel)
    after = model.get_weights()
    assert np.array_equal(before["probe"], after["probe"]) is not probe_trainable
    assert np.array_equal(before["log_scale"], after["log_scale"]) is probe_trainable


# ---------------------------------------------------------------------------------------------
# Training through the shared loop

def _amplitude_error(model, x, rel, s) -> float:
    """Relative misfit ‖A_pred − s·x‖/‖s·x‖ of the predicted diffraction amplitudes."""
    amplitude = model.predict(x, rel).amplitude
    return float(np.linalg.norm(amplitude - s * x) / np.linalg.norm(s * x))


@pytest.mark.parametrize("gridsize", [1, 2])
def test_training_loss_falls_and_fit_improves(backend, tmp_path, gridsize):
    spec = spec_for(backend, gridsize=gridsize, n_filters_scale=1, seed=1)
    x, rel, probe, _ = synthetic_groups(64, gridsize, 48, seed=10 + gridsize)
    model = backend.build(spec)
    s = spec.intensity_scale
    loss_before, error_before = model.loss(x, rel), _amplitude_error(model, x, rel, s)
    settings = loop_settings(TrainingConfig(), epochs=6, batch_size=8, validation_fraction=0.1, checkpoint=False, seed=4)
    result = run_training(model, x, rel, settings, tmp_path)
    losses = [row["loss"] for row in result.history]
    assert result.epochs_completed == 6 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    assert model.loss(x, rel) < loss_before
    assert _amplitude_error(model, x, rel, s) < error_before


def test_deterministic_training_gives_identical_weight_bytes(backend, tmp_path):
    try:
        x, rel, probe, _ = synthetic_groups(64, 2, 12, seed=3)
        first = deterministic_weights(backend, tmp_path / "a", x, rel, probe)
        second = deterministic_weights(backend, tmp_path / "b", x, rel, probe)
    finally:
        backend.configure(threads=0, deterministic=False, seed=0)
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].tobytes() == second[name].tobytes(), name


def test_optimizer_state_resume_is_exact(backend):
    backend.configure(threads=0, deterministic=True, seed=0)
    try:
        spec = spec_for(backend, gridsize=2, n_filters_scale=1, seed=2)
        x, rel, _, _ = synthetic_groups(64, 2, 8, seed=6)
        a = backend.build(spec)
        a.train_step(x[:4], rel[:4])
        a.learning_rate = 5e-4
        a.train_step(x[4:7], rel[4:7])  # a smaller last batch
        weights, state = a.get_weights(), a.optimizer_state()
        assert int(state["iterations"]) == 2 and state["iterations"].dtype == np.int64
        loss_a = a.train_step(x[4:], rel[4:])

        b = backend.build(spec_for(backend, gridsize=2, n_filters_scale=1, seed=99, probe=smooth_probe(64, seed=1)))
        b.set_weights(weights)
        b.set_optimizer_state(state)
        b.learning_rate = 5e-4
        loss_b = b.train_step(x[4:], rel[4:])
    finally:
        backend.configure(threads=0, deterministic=False, seed=0)
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
    with pytest.raises(ValueError, match="iterations"):
        b.set_optimizer_state({**state, "iterations": np.int64(-1)})
    with pytest.raises(ValueError, match="positive"):
        b.learning_rate = 0.0


# ---------------------------------------------------------------------------------------------
# Geometries, initial weights, the weights boundary

def test_several_gridsizes_and_sizes_in_one_process(backend):
    models = {}
    for gridsize, N in ((1, 64), (2, 64), (2, 128), (1, 128)):
        models[gridsize, N] = backend.build(spec_for(backend, gridsize=gridsize, N=N, n_filters_scale=1))
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


def test_initial_weights_are_architectures(backend):
    """Every backend starts from architecture.initial_weights: the same seed, the same bytes."""
    spec = spec_for(backend, gridsize=2, seed=5)
    weights = backend.build(spec).get_weights()
    expected = spec.initial_weights()
    assert list(weights) == list(expected) == list(spec.geometry.parameter_shapes())
    for name, value in expected.items():
        assert weights[name].dtype == value.dtype and weights[name].tobytes() == value.tobytes(), name
    other = backend.build(spec_for(backend, gridsize=2, seed=6)).get_weights()
    assert not np.array_equal(weights["encoder/block0/conv0/kernel"], other["encoder/block0/conv0/kernel"])


def test_get_weights_returns_copies(backend):
    model = backend.build(spec_for(backend, gridsize=2, n_filters_scale=1, member_encoding="stacked"))
    weights = model.get_weights()
    for value in weights.values():
        value[...] = 0
    assert model.get_weights()["encoder/block0/conv0/kernel"].any()


def test_weight_round_trip_and_errors(backend):
    spec = spec_for(backend, gridsize=2, n_filters_scale=1, member_encoding="stacked", seed=1)
    x, rel, probe, _ = synthetic_groups(64, 2, 2, seed=8)
    a = backend.build(spec)
    b = backend.build(spec_for(backend, gridsize=2, n_filters_scale=1, member_encoding="stacked", seed=2,
                                probe=smooth_probe(64, seed=3)))
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
    with pytest.raises(ValueError, match="NaN or infinite"):
        b.set_weights({**weights, "decoder_amp/head/bias": np.full(4, np.nan, np.float32)})
    with pytest.raises(ValueError, match="probe"):
        b.set_weights({**weights, "probe": np.zeros((32, 32), np.complex64)})
    gs1 = backend.build(spec_for(backend, gridsize=1, n_filters_scale=1))
    with pytest.raises(ValueError, match="encoder/block0/conv0/kernel"):
        gs1.set_weights(weights)  # a gridsize-2 network's weights into a gridsize-1 network
    for name, value in b.get_weights().items():  # failed loads changed nothing
        assert value.tobytes() == untouched[name].tobytes(), name


def test_predict_in_chunks_and_empty_batch(backend):
    model = backend.build(spec_for(backend, gridsize=2, n_filters_scale=1))
    x, rel, _, _ = synthetic_groups(64, 2, 5, seed=2)
    whole = model.predict(x, rel)
    model.predict_chunk = 2
    chunked = model.predict(x, rel)
    for key in ("trimmed", "patches", "amplitude"):  # oneDNN may block a smaller batch differently
        reference = getattr(whole, key)
        np.testing.assert_allclose(getattr(chunked, key), reference, atol=1e-5 * np.abs(reference).max())
    empty = model.predict(x[:0], rel[:0])
    assert empty.trimmed.shape == (0, 64, 64) and empty.patches.shape == (0, 4, 64, 64)
    assert empty.amplitude.shape == (0, 64, 64, 4) and empty.amplitude.dtype == np.float32


def test_input_errors(backend):
    model = backend.build(spec_for(backend, gridsize=2, n_filters_scale=1))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 64, 64, 4\)"):
        model.predict(np.zeros((2, 64, 64, 1), np.float32), np.zeros((2, 4, 2), np.float32))
    with pytest.raises(ValueError, match=r"rel must have shape \(2, 4, 2\)"):
        model.train_step(np.zeros((2, 64, 64, 4), np.float32), np.zeros((2, 1, 2), np.float32))


# ---------------------------------------------------------------------------------------------
# Backend options and identity

def test_compile_works_or_is_rejected(backend):
    """backend.compile: compiled steps give the eager results, or the backend refuses in one line."""
    spec = make_spec(gridsize=2, n_filters_scale=1)
    if not registry.entry(backend.name).compiles:
        with pytest.raises(ValueError, match=f"backend.compile=true is not supported by the {backend.name}"):
            backend.build(spec.replace(compile=True))
        return
    x, rel, _, _ = synthetic_groups(64, 2, 3, seed=9)
    compiled, eager = backend.build(spec.replace(compile=True)), backend.build(spec)
    np.testing.assert_allclose(compiled.predict(x, rel).amplitude, eager.predict(x, rel).amplitude,
                               rtol=1e-5, atol=1e-5)
    assert compiled.train_step(x, rel) == pytest.approx(eager.train_step(x, rel), rel=1e-5)
    for name, value in compiled.get_weights().items():
        np.testing.assert_allclose(eager.get_weights()[name], value, atol=1e-5, err_msg=name)


def test_backend_identity_versions_and_threads(backend):
    entry = registry.entry(backend.name)
    assert isinstance(backend, Backend) and backend.name in registry.BACKENDS
    assert entry.framework in backend.versions()
    with pytest.raises(ValueError, match="threads"):
        backend.configure(threads=-1, deterministic=False, seed=0)


# ---------------------------------------------------------------------------------------------
# model_type=supervised: the same generator on the true patches, no physics

@pytest.mark.parametrize("generator", list(GENERATOR_FIELDS))
def test_supervised_loss_is_amplitude_texture_level_and_mean_free_phase_mae(backend, generator):
    from tests.backend_support import numpy_object

    spec = spec_for(backend, gridsize=2, n_filters_scale=1, seed=3, model_type="supervised",
                    **GENERATOR_FIELDS[generator])
    x, rel, probe, truth = synthetic_groups(64, 2, 2, seed=4)
    model = backend.build(spec)
    weights = perturbed_weights(model, seed=5)
    model.set_weights(weights)
    obj = numpy_object(weights, spec, x, rel)  # (B, C, N, N) from the generator alone

    def level(t):
        return t.mean(axis=(-2, -1), keepdims=True)

    def mean_free(t):
        return t - level(t)

    def expected_loss(true_amplitude):  # the phase is always the truth's
        amp_texture = np.mean(np.abs(mean_free(np.abs(obj)) - mean_free(true_amplitude)))
        amp_level = np.mean(np.abs(level(np.abs(obj)) - level(true_amplitude)))
        phase = np.mean(np.abs(mean_free(np.angle(obj)) - mean_free(np.angle(truth))))
        return amp_texture + architecture.SUPERVISED_LEVEL_WEIGHT * amp_level + phase

    expected = expected_loss(np.abs(truth))
    assert model.loss(x, rel, truth) == pytest.approx(expected, rel=1e-4)
    # a patch's constant phase does not count: the truth with a phase offset per patch scores the same
    offsets = np.exp(1j * np.random.default_rng(0).uniform(-1, 1, size=(2, 4, 1, 1)))
    assert model.loss(x, rel, truth * offsets) == pytest.approx(expected, rel=1e-4)
    # the amplitude's level counts with its small weight: a per-patch gain of the truth's amplitude
    # changes the loss by exactly the weighted level and texture differences it makes
    gain = np.random.default_rng(1).uniform(0.8, 1.2, size=(2, 4, 1, 1))
    expected_scaled = expected_loss(np.abs(truth) * gain)
    assert model.loss(x, rel, truth * gain) == pytest.approx(expected_scaled, rel=1e-4)
    assert abs(expected_scaled - expected) > 1e-3  # the check above can tell the two apart
    before = model.get_weights()
    model.train_step(x, rel, truth)
    frozen = [n for n in model.trainable if np.array_equal(before[n], model.get_weights()[n])]
    assert not frozen, f"no gradient reached {frozen}"
    with pytest.raises(ValueError, match="model_type=supervised trains on the true object patches"):
        model.train_step(x, rel)
    with pytest.raises(ValueError, match=r"target must have shape \(2, 4, 64, 64\)"):
        model.loss(x, rel, truth[:, :1])


def test_supervised_training_through_the_loop(backend, tmp_path):
    spec = spec_for(backend, gridsize=1, n_filters_scale=1, seed=1, model_type="supervised")
    x, rel, _, truth = synthetic_groups(64, 1, 24, seed=2)
    model = backend.build(spec)
    loss_before = model.loss(x, rel, truth)
    settings = loop_settings(TrainingConfig(), epochs=3, batch_size=8, validation_fraction=0.1, checkpoint=False, seed=4)
    result = run_training(model, x, rel, settings, tmp_path, targets=lambda batch: truth[batch])
    assert all(math.isfinite(row["val_loss"]) for row in result.history)
    assert model.loss(x, rel, truth) < loss_before
    pinn = backend.build(spec_for(backend, gridsize=1, n_filters_scale=1))
    with pytest.raises(ValueError, match="model_type=pinn"):
        pinn.loss(x, rel, truth)
