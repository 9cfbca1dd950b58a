"""The PyTorch backend: physics layers against physics.py, the full forward pass against the NumPy
reference, training through the shared loop, determinism, several geometries in one process, and
the weight/optimiser boundary (names, HWIO layout, clear errors)."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fly64_train import architecture, physics  # noqa: E402
from fly64_train.backends.base import get_backend  # noqa: E402
from fly64_train.backends.pytorch import PyTorchBackend  # noqa: E402
from fly64_train.backends.pytorch import model as tm  # noqa: E402
from fly64_train.training import LoopSettings, run_training  # noqa: E402
from tests.backend_support import deterministic_weights, make_params, smooth_probe  # noqa: E402


def window_matrices(windows) -> tuple[np.ndarray, np.ndarray]:
    """The dense (B, C, n, P) row/column sampling matrices a MemberWindows stands for."""
    k = np.arange(windows.size)
    out = []
    for start, frac in ((windows.row_start, windows.row_frac), (windows.col_start, windows.col_frac)):
        first = start.numpy()[..., None, None] + np.arange(windows.n)[:, None]  # (B, C, n, 1)
        f = frac.numpy().astype(np.float64)[..., None, None]
        out.append((k == first) * (1 - f) + (k == first + 1) * f)
    return out[0], out[1]


def synthetic_groups(N: int, gridsize: int, n_groups: int, seed: int = 0):
    """Diffraction amplitudes (B, N, N, C) of a smooth complex object, member offsets rel (B, C, 2)."""
    rng = np.random.default_rng(seed)
    size = 3 * N
    yy, xx = np.mgrid[:size, :size] / size
    obj = ((0.5 + 0.3 * np.sin(7 * xx) * np.cos(5 * yy))
           * np.exp(1j * 0.8 * np.sin(4 * xx + 3 * yy))).astype(np.complex64)
    probe = smooth_probe(N)
    C = gridsize * gridsize
    centres = rng.uniform(N, 2 * N, size=(n_groups, 2))
    rel = rng.uniform(-5, 5, size=(n_groups, C, 2)) if C > 1 else np.zeros((n_groups, 1, 2))
    rel = rel - rel.mean(axis=1, keepdims=True)
    positions = (centres[:, None, :] + rel).reshape(-1, 2)
    patches = physics.extract_patches(obj, positions[:, 0], positions[:, 1], N)
    amp = physics.far_field_amplitude(physics.illuminate(patches, probe)).astype(np.float32)
    x = np.moveaxis(amp.reshape(n_groups, C, N, N), 1, -1)
    return np.ascontiguousarray(x), rel.astype(np.float32), probe


@pytest.fixture(scope="module")
def backend():
    b = get_backend("pytorch")
    b.configure(threads=0, deterministic=False, seed=0)
    return b


# ---------------------------------------------------------------------------------------------
# Physics layers against physics.py

def test_member_windows_are_physics_sampling_matrices():
    rel = np.array([[[0.0, 0.0], [3.25, -2.7], [-39.0, 38.5], [41.999, -0.5]]])
    for n, size in ((64, 78), (8, 5)):
        windows = tm.member_windows(torch.from_numpy(rel), n, size)
        rows, cols = window_matrices(windows)
        centres = size // 2 + rel
        np.testing.assert_allclose(rows[0], physics.sampling_matrix(centres[0, :, 1], n, size), atol=1e-7)
        np.testing.assert_allclose(cols[0], physics.sampling_matrix(centres[0, :, 0], n, size), atol=1e-7)


def test_extract_and_place_match_numpy_reference():
    """Including members whose windows leave the canvas (zeros outside, as physics.py)."""
    rng = np.random.default_rng(1)
    B, C, N, P = 3, 4, 16, 26
    rel = rng.uniform(-8.5, 8.5, size=(B, C, 2))
    rel[0, 0] = (-12.0, 11.5)  # far outside
    windows = tm.member_windows(torch.from_numpy(rel), N, P)
    assert windows.margin > 0
    centres = (P // 2 + rel).reshape(-1, 2)

    canvas = rng.normal(size=(B, 2, P, P)).astype(np.float32)
    ours = tm.extract_members(torch.from_numpy(canvas), windows).numpy()  # (B, C, 2, N, N)
    for k in range(2):
        ref = physics.extract(np.repeat(canvas[:, k], C, axis=0), centres, N).reshape(B, C, N, N)
        np.testing.assert_allclose(ours[:, :, k], ref, atol=1e-5)

    parts = rng.normal(size=(B, C, 2, N, N)).astype(np.float32)
    ours = tm.place_sum(torch.from_numpy(parts), windows).numpy()  # (B, 2, P, P)
    for k in range(2):
        ref = physics.place(parts[:, :, k].reshape(B * C, N, N), centres, (P, P)).reshape(B, C, P, P).sum(1)
        np.testing.assert_allclose(ours[:, k], ref, atol=1e-5)

    cover = tm.coverage(windows).numpy()
    ref = physics.place(np.ones((B * C, N, N)), centres, (P, P)).reshape(B, C, P, P).sum(1)
    np.testing.assert_allclose(cover, ref, atol=1e-5)
    centre = np.zeros((N, N))
    centre[N // 4:3 * N // 4, N // 4:3 * N // 4] = 1.0
    ref = physics.place(np.broadcast_to(centre, (B * C, N, N)), centres, (P, P)).reshape(B, C, P, P).sum(1)
    np.testing.assert_allclose(tm.coverage(windows, inset=N // 4).numpy(), ref, atol=1e-5)

    weight = 0.01 + 0.99 * centre
    ours = tm.weighted_mean_canvas(torch.from_numpy(parts), windows, torch.from_numpy(weight).float(), 0.01).numpy()
    for b in range(B):
        for k in range(2):
            ref, _ = physics.weighted_mean(parts[b, :, k], centres.reshape(B, C, 2)[b], (P, P), weight)
            np.testing.assert_allclose(ours[b, k], ref, atol=1e-4)

    # place is the adjoint of extract: <extract(canvas), parts> = <canvas, place(parts)>.
    lhs = float((tm.extract_members(torch.from_numpy(canvas), windows).double() * torch.from_numpy(parts)).sum())
    rhs = float((torch.from_numpy(canvas).double() * tm.place_sum(torch.from_numpy(parts), windows)).sum())
    assert lhs == pytest.approx(rhs, abs=1e-3)  # float32 sums of ~6000 O(1) terms


def test_far_field_matches_numpy_reference():
    rng = np.random.default_rng(2)
    psi = (rng.normal(size=(2, 3, 64, 64)) + 1j * rng.normal(size=(2, 3, 64, 64))).astype(np.complex64)
    ours = tm.far_field_amplitude(torch.from_numpy(psi.real.copy()), torch.from_numpy(psi.imag.copy())).numpy()
    ref = physics.far_field_amplitude(psi)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    # Parseval: Σ A² = Σ |ψ|².
    np.testing.assert_allclose((ours ** 2).sum(axis=(-2, -1)), (np.abs(psi) ** 2).sum(axis=(-2, -1)), rtol=1e-4)


@pytest.mark.parametrize("out_channels", [1, 4])
def test_upsampled_border_conv_matches_conv_of_upsampled_input(out_channels):
    """The border head's projection-first form equals conv3×3(nearest-upsample×2(x)), gradients too."""
    torch.manual_seed(0)
    x = torch.randn(2, 64, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(out_channels, 64, 3, 3, requires_grad=True)
    bias = torch.randn(out_channels, requires_grad=True)
    ours = tm.upsampled_conv3x3(x, weight, bias)
    ref = torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"),
                                     weight, bias, padding=1)
    np.testing.assert_allclose(ours.detach().numpy(), ref.detach().numpy(), atol=1e-4)
    probe = torch.randn_like(ref)
    grads = torch.autograd.grad((ours * probe).sum(), (x, weight, bias))
    ref_grads = torch.autograd.grad((ref * probe).sum(), (x, weight, bias))
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-4, atol=1e-3)


def test_translation_direction_delta_lands_at_offset(backend):
    """A delta at the patch centre placed with rel=(+3, −2) lands at canvas [row P//2−2, col P//2+3],
    and extracting at the same offset brings it back to the patch centre."""
    params = make_params(gridsize=2)
    model = backend.build(params, smooth_probe(64), seed=0)
    N, P = 64, params["padded_size"]
    amp = torch.zeros(1, 4, N, N)
    amp[0, 0, N // 2, N // 2] = 1.0
    rel = torch.tensor([[[3.0, -2.0], [-3.0, 0.0], [0.0, 3.0], [1.0, -1.0]]])
    with torch.no_grad():
        canvas, patches = model.network.canvas_and_patches(amp, torch.zeros_like(amp), rel)
    real = canvas[0, 0].numpy()
    peak = np.unravel_index(np.argmax(real), real.shape)
    assert peak == (P // 2 - 2, P // 2 + 3)
    assert np.count_nonzero(real) == 1
    # The peak lies in every member's central N/2 (offsets ≤ 3 px), so the weighted mean is 1/4.
    assert real[peak] == pytest.approx(0.25, abs=1e-6)
    np.testing.assert_allclose(patches[0, 0, 0].numpy(), 0.25 * amp[0, 0].numpy(), atol=1e-6)  # (B, C, 2, N, N)
    # Numpy reference agrees on where the member lands.
    ref = physics.place(amp[0, :1].numpy(), np.array([[P // 2 + 3, P // 2 - 2]]), (P, P))[0]
    assert np.unravel_index(np.argmax(ref), ref.shape) == peak


# ---------------------------------------------------------------------------------------------
# The full model against the NumPy reference

@pytest.mark.parametrize("gridsize,object_big,encoding", [(1, True, "shared"), (2, True, "shared"),
                                                         (2, True, "stacked"), (2, False, "stacked")])
def test_full_model_matches_numpy_physics(backend, gridsize, object_big, encoding):
    params = make_params(gridsize=gridsize, object_big=object_big, member_encoding=encoding)
    N, P, C = 64, params["padded_size"], gridsize * gridsize
    x, rel, probe = synthetic_groups(N, gridsize, 3, seed=gridsize)
    model = backend.build(params, probe, seed=3)
    prediction = model.predict(x, rel)
    assert prediction.trimmed.shape == (3, N, N) and prediction.trimmed.dtype == np.complex64
    assert prediction.patches.shape == (3, C, N, N) and prediction.patches.dtype == np.complex64
    assert prediction.amplitude.shape == (3, N, N, C) and prediction.amplitude.dtype == np.float32

    # Object heads → canvas → trimmed object and member patches, in NumPy.
    with torch.no_grad():
        amp, phase = model.network.object_planes(torch.from_numpy(x).permute(0, 3, 1, 2))
    obj = (amp.numpy() * np.exp(1j * phase.numpy())).astype(np.complex128)  # (B, C_out, N, N)
    assert obj.shape[1] == (C if object_big else 1)
    centres = P // 2 + rel.astype(np.float64)
    canvases = []
    for b in range(3):
        if object_big:
            weight = model.network.geometry.canvas_weight()
            canvases.append(physics.weighted_mean(obj[b], centres[b], (P, P), weight)[0])
        else:
            canvases.append(physics.place(obj[b], np.array([[P // 2, P // 2]]), (P, P))[0])
    canvases = np.stack(canvases)
    trimmed = physics.extract(canvases, np.full((3, 2), P // 2), N)
    np.testing.assert_allclose(prediction.trimmed, trimmed, atol=2e-5)
    patches = np.stack([physics.extract(np.repeat(canvases[b:b + 1], C, 0), centres[b], N) for b in range(3)])
    np.testing.assert_allclose(prediction.patches, patches, atol=2e-5)

    # Diffraction of the predicted patches through the NumPy physics.
    log_scale = float(model.get_weights()["log_scale"])
    reference = physics.far_field_amplitude(physics.illuminate(prediction.patches, probe)) * math.exp(log_scale)
    np.testing.assert_allclose(np.moveaxis(prediction.amplitude, -1, 1), reference, rtol=1e-4, atol=1e-4)

    # Loss per architecture.py from the predicted amplitude.
    s = params["intensity_scale"]
    intensity = prediction.amplitude.astype(np.float64) ** 2
    counts = (s * x.astype(np.float64)) ** 2
    expected = np.mean(intensity - counts * np.log(intensity + architecture.NLL_EPSILON))
    assert model.loss(x, rel) == pytest.approx(expected, rel=1e-4)


def test_loss_with_mae_weight(backend):
    params = make_params(gridsize=1)
    params.update(nll_weight=0.5, mae_weight=0.25)
    x, rel, probe = synthetic_groups(64, 1, 2, seed=5)
    model = backend.build(params, probe, seed=0)
    amplitude = model.predict(x, rel).amplitude.astype(np.float64)
    s = params["intensity_scale"]
    nll = np.mean(amplitude ** 2 - (s * x) ** 2 * np.log(amplitude ** 2 + architecture.NLL_EPSILON))
    mae = np.mean(np.abs(amplitude - s * x))
    assert model.loss(x, rel) == pytest.approx(0.5 * nll + 0.25 * mae, rel=1e-4)


def test_amplitude_sqrt_has_finite_gradient_at_zero():
    power = torch.tensor([0.0, 4.0], requires_grad=True)
    root = tm.safe_sqrt(power)
    root.sum().backward()
    assert root.tolist() == [0.0, 2.0]
    assert torch.isfinite(power.grad).all() and power.grad[1] == pytest.approx(0.25)


def test_input_scaling_and_trainable_flags(backend):
    params = make_params(gridsize=1)
    params["probe.trainable"] = True
    params["intensity_scale.trainable"] = False
    model = backend.build(params, smooth_probe(64), seed=0)
    assert model.network.probe.requires_grad and not model.network.log_scale.requires_grad
    assert float(model.get_weights()["log_scale"]) == pytest.approx(math.log(params["intensity_scale"]), rel=1e-6)
    state = model.optimizer_state()
    assert "m/probe" in state and "m/log_scale" not in state and state["m/probe"].dtype == np.complex64
    x, rel, _ = synthetic_groups(64, 1, 4, seed=0)
    before = model.get_weights()
    model.train_step(x, rel)
    after = model.get_weights()
    assert not np.array_equal(before["probe"], after["probe"])
    assert np.array_equal(before["log_scale"], after["log_scale"])


# ---------------------------------------------------------------------------------------------
# Training through the shared loop

@pytest.mark.parametrize("gridsize", [1, 2])
def test_training_loss_falls(backend, tmp_path, gridsize):
    params = make_params(gridsize=gridsize, n_filters_scale=1)
    x, rel, probe = synthetic_groups(64, gridsize, 40, seed=10 + gridsize)
    model = backend.build(params, probe, seed=1)
    settings = LoopSettings(epochs=3, batch_size=8, validation_fraction=0.1, checkpoint=False, seed=4)
    result = run_training(model, x, rel, settings, tmp_path)
    losses = [row["loss"] for row in result.history]
    assert result.epochs_completed == 3 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses


def test_deterministic_training_gives_identical_weight_bytes(backend, tmp_path):
    try:
        x, rel, probe = synthetic_groups(64, 2, 12, seed=3)
        first = deterministic_weights(backend, tmp_path / "a", x, rel, probe, threads=2)
        second = deterministic_weights(backend, tmp_path / "b", x, rel, probe, threads=2)
    finally:
        backend.configure(threads=0, deterministic=False, seed=0)
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].tobytes() == second[name].tobytes(), name


def test_optimizer_state_resume_is_exact(backend):
    backend.configure(threads=2, deterministic=True, seed=0)
    try:
        params = make_params(gridsize=2, n_filters_scale=1)
        x, rel, probe = synthetic_groups(64, 2, 8, seed=6)
        a = backend.build(params, probe, seed=2)
        a.train_step(x[:4], rel[:4])
        a.learning_rate = 5e-4
        weights, state = a.get_weights(), a.optimizer_state()
        assert int(state["iterations"]) == 1
        loss_a = a.train_step(x[4:], rel[4:])

        b = backend.build(params, probe, seed=99)
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


# ---------------------------------------------------------------------------------------------
# Several geometries in one process, weights boundary

def test_several_gridsizes_and_sizes_in_one_process(backend):
    models = {}
    for gridsize, N in ((1, 64), (2, 64), (2, 128), (1, 128)):
        models[gridsize, N] = backend.build(make_params(gridsize=gridsize, N=N, n_filters_scale=1),
                                            smooth_probe(N), seed=0)
    for (gridsize, N), model in models.items():  # interleaved use after all were built
        C = gridsize * gridsize
        x = np.random.default_rng(N + C).random((2, N, N, C)).astype(np.float32)
        rel = np.zeros((2, C, 2), np.float32)
        out = model.predict(x, rel)
        assert out.amplitude.shape == (2, N, N, C) and out.trimmed.shape == (2, N, N)
        assert set(model.get_weights()) == set(model.geometry.parameter_shapes())
        assert math.isfinite(model.train_step(x, rel))


def test_weight_names_layout_and_seeded_init(backend):
    params = make_params(gridsize=2)
    geometry = architecture.geometry_from_params(params)
    a = backend.build(params, smooth_probe(64), seed=5)
    weights = a.get_weights()
    shapes = geometry.parameter_shapes()
    assert list(weights) == list(shapes)
    for name, shape in shapes.items():
        assert weights[name].shape == tuple(shape), name
    assert weights["probe"].dtype == np.complex64 and weights["log_scale"].dtype == np.float32
    # HWIO at the boundary: the torch OIHW kernel transposed.
    conv = geometry.encoder()[0][0]
    torch_kernel = a.network.named_conv(conv).weight.detach().numpy()
    np.testing.assert_array_equal(weights[f"{conv.name}/kernel"], np.transpose(torch_kernel, (2, 3, 1, 0)))
    # Glorot-uniform kernels, zero biases; same seed → same weights, another seed → others.
    for conv in geometry.convs():
        limit = math.sqrt(6.0 / (9 * conv.in_channels + 9 * conv.out_channels))
        kernel = weights[f"{conv.name}/kernel"]
        assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.8 * limit
        assert not weights[f"{conv.name}/bias"].any()
    same = backend.build(params, smooth_probe(64), seed=5).get_weights()
    other = backend.build(params, smooth_probe(64), seed=6).get_weights()
    assert all(np.array_equal(weights[k], same[k]) for k in weights)
    assert not np.array_equal(weights[f"{conv.name}/kernel"], other[f"{conv.name}/kernel"])


def test_weight_round_trip_and_errors(backend):
    params = make_params(gridsize=2, member_encoding="stacked")
    x, rel, probe = synthetic_groups(64, 2, 2, seed=8)
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
    missing = {k: v for k, v in weights.items() if k != "decoder_phase/head/bias"}
    with pytest.raises(KeyError, match="decoder_phase/head/bias"):
        b.set_weights(missing)
    with pytest.raises(KeyError, match="unexpected.*extra/kernel"):
        b.set_weights({**weights, "extra/kernel": np.zeros(1)})
    wrong = dict(weights)
    wrong["encoder/block0/conv0/kernel"] = np.transpose(weights["encoder/block0/conv0/kernel"], (3, 2, 0, 1))
    with pytest.raises(ValueError, match=r"encoder/block0/conv0/kernel.*\(3, 3, 4, 64\)"):
        b.set_weights(wrong)
    with pytest.raises(ValueError, match="must be real"):
        b.set_weights({**weights, "log_scale": np.complex64(1 + 1j)})
    with pytest.raises(ValueError, match="NaN or infinite"):
        b.set_weights({**weights, "decoder_amp/head/bias": np.full(4, np.nan, np.float32)})
    gs1 = backend.build(make_params(gridsize=1), probe, seed=0)
    with pytest.raises(ValueError, match="encoder/block0/conv0/kernel"):
        gs1.set_weights(weights)  # a gridsize-2 bundle into a gridsize-1 network
    # A failed load leaves the model as it was.
    for name, value in b.get_weights().items():
        assert value.tobytes() == untouched[name].tobytes(), name


def test_predict_in_chunks_and_empty_batch(backend, monkeypatch):
    from fly64_train.backends.pytorch import train as torch_train

    params = make_params(gridsize=2, n_filters_scale=1)
    x, rel, probe = synthetic_groups(64, 2, 5, seed=2)
    model = backend.build(params, probe, seed=0)
    whole = model.predict(x, rel)
    monkeypatch.setattr(torch_train, "PREDICT_CHUNK", 2)
    chunked = model.predict(x, rel)
    for key in ("trimmed", "patches", "amplitude"):  # oneDNN may block a smaller batch differently
        reference = getattr(whole, key)
        np.testing.assert_allclose(getattr(chunked, key), reference, atol=1e-5 * np.abs(reference).max())
    empty = model.predict(x[:0], rel[:0])
    assert empty.trimmed.shape == (0, 64, 64) and empty.patches.shape == (0, 4, 64, 64)
    assert empty.amplitude.shape == (0, 64, 64, 4) and empty.amplitude.dtype == np.float32


def test_input_and_build_errors(backend):
    params = make_params(gridsize=2)
    model = backend.build(params, smooth_probe(64), seed=0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 64, 64, 4\)"):
        model.predict(np.zeros((2, 64, 64, 1), np.float32), np.zeros((2, 4, 2), np.float32))
    with pytest.raises(ValueError, match=r"rel must have shape \(2, 4, 2\)"):
        model.predict(np.zeros((2, 64, 64, 4), np.float32), np.zeros((2, 1, 2), np.float32))
    with pytest.raises(ValueError, match="probe"):
        backend.build(params, smooth_probe(128), seed=0)
    with pytest.raises(ValueError, match="both 0"):
        backend.build({**params, "nll_weight": 0.0, "mae_weight": 0.0}, smooth_probe(64), seed=0)
    with pytest.raises(KeyError, match="padded_size"):
        backend.build({k: v for k, v in params.items() if k != "padded_size"}, smooth_probe(64), seed=0)


def test_get_backend_limits_openmp_spinning_before_torch_loads():
    """libgomp reads GOMP_SPINCOUNT once, when torch is imported: get_backend sets it first unless the
    user chose an OpenMP wait policy."""
    import os
    import subprocess
    import sys

    code = ("import os, sys; from fly64_train.backends.base import get_backend; "
            "assert 'torch' not in sys.modules; get_backend('pytorch'); print(os.environ.get('GOMP_SPINCOUNT'))")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "1000", out.stderr
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "None", out.stderr


def test_backend_identity_and_configure(backend):
    assert isinstance(backend, PyTorchBackend) and backend.name == "pytorch"
    assert backend.versions() == {"torch": torch.__version__}
    backend.configure(threads=1, deterministic=True, seed=3)
    assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    first = torch.rand(3)
    backend.configure(threads=1, deterministic=True, seed=3)
    assert torch.equal(first, torch.rand(3))  # torch seeded
    backend.configure(threads=0, deterministic=False, seed=0)
    assert not torch.are_deterministic_algorithms_enabled()
    from fly64_train.backends.pytorch import machine_threads
    assert torch.get_num_threads() == machine_threads()
    with pytest.raises(ValueError, match="threads"):
        backend.configure(threads=-1, deterministic=False, seed=0)
