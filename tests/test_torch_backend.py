"""PyTorch-specific parts of the PyTorch backend: its physics layers (member windows, gather/scatter,
the projection-first border convolution) against physics.py, the OIHW ↔ HWIO boundary, threads and
OpenMP spinning. The contract every backend meets (forward pass, training, weights, errors) is
tests/test_backend_contract.py."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fly64_train import physics  # noqa: E402
from fly64_train.backends.pytorch import PyTorchBackend, machine_threads  # noqa: E402
from fly64_train.backends.pytorch import model as tm  # noqa: E402
from tests.backend_support import installed_backend, make_spec  # noqa: E402


def window_matrices(windows) -> tuple[np.ndarray, np.ndarray]:
    """The dense (B, C, n, P) row/column sampling matrices a MemberWindows stands for."""
    k = np.arange(windows.size)
    out = []
    for start, frac in ((windows.row_start, windows.row_frac), (windows.col_start, windows.col_frac)):
        first = start.numpy()[..., None, None] + np.arange(windows.n)[:, None]  # (B, C, n, 1)
        f = frac.numpy().astype(np.float64)[..., None, None]
        out.append((k == first) * (1 - f) + (k == first + 1) * f)
    return out[0], out[1]


@pytest.fixture(scope="module")
def backend():
    return installed_backend("pytorch")


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
    model = backend.build(make_spec(gridsize=2))
    N, P = 64, model.geometry.padded_size
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


def test_amplitude_sqrt_has_finite_gradient_at_zero():
    power = torch.tensor([0.0, 4.0], requires_grad=True)
    root = tm.safe_sqrt(power)
    root.sum().backward()
    assert root.tolist() == [0.0, 2.0]
    assert torch.isfinite(power.grad).all() and power.grad[1] == pytest.approx(0.25)


def test_get_backend_limits_openmp_spinning_before_torch_loads():
    """libgomp reads GOMP_SPINCOUNT once, when torch is imported: get_backend sets it first unless the
    user chose an OpenMP wait policy."""
    import os
    import subprocess
    import sys

    code = ("import os, sys; from fly64_train.backends.registry import get_backend; "
            "assert 'torch' not in sys.modules; get_backend('pytorch'); print(os.environ.get('GOMP_SPINCOUNT'))")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "1000", out.stderr
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "None", out.stderr


# ---------------------------------------------------------------------------------------------
# The boundary and the runtime

def test_kernels_leave_as_hwio_of_torchs_oihw(backend):
    model = backend.build(make_spec(gridsize=2, n_filters_scale=1))
    conv = model.geometry.encoder()[0][0]
    torch_kernel = model.network.generator.named_conv(conv).weight.detach().numpy()
    np.testing.assert_array_equal(model.get_weights()[f"{conv.name}/kernel"], np.transpose(torch_kernel, (2, 3, 1, 0)))


def test_configure_threads_determinism_and_seeds(backend):
    assert isinstance(backend, PyTorchBackend) and backend.versions() == {"torch": torch.__version__}
    backend.configure(threads=1, deterministic=True, seed=3)
    assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    first = torch.rand(3)
    backend.configure(threads=1, deterministic=True, seed=3)
    assert torch.equal(first, torch.rand(3))  # torch seeded
    backend.configure(threads=0, deterministic=False, seed=0)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == machine_threads()
