"""Helpers shared by the backend tests: specs built the way the runner builds them, a focused probe,
synthetic grouped data, an independent NumPy forward pass of architecture.py, a determinism run."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from fly64_train import architecture, config, physics
from fly64_train.backends import registry
from fly64_train.backends.base import ModelSpec
from fly64_train.specs import loop_settings, spec_from_config
from fly64_train.training import run_training

VIEW_FOR_GRIDSIZE = {1: "baseline", 2: "dense", 3: "dense"}  # gridsize 3: the dense view's larger groups
TRAINER_FIELDS = {f.name for f in dataclasses.fields(config.TrainerConfig)}
INSTALLED = [name for name in registry.BACKENDS if registry.available(name)]
# The model fields of each network variant the backend tests run: every generator (all but the cnn
# write the whole patch) and every input transform; er with 3 iterations runs its first step (all of
# er_iterations=1), the forward-only later ones (with a noise band: er_tolerance) and the residual heads
# on its estimate.
GENERATOR_FIELDS = {"cnn": {}, "ffno": {"generator": "ffno", "pad_object": False},
                    "unet": {"generator": "unet", "pad_object": False, "unet_width": 4},
                    "cnn_backprop": {"input_transform": "backprop", "pad_object": False},
                    "cnn_er": {"input_transform": "er", "er_iterations": 3, "er_residual": True,
                               "er_tolerance": 1.0, "pad_object": False},
                    "cnn_raar": {"input_transform": "er", "er_solver": "raar", "er_iterations": 2,
                                 "pad_object": False}}
assert {f.get("generator", "cnn") for f in GENERATOR_FIELDS.values()} == set(architecture.GENERATORS), \
    "a generator without test fields"
assert {f.get("input_transform", "none") for f in GENERATOR_FIELDS.values()} == set(architecture.INPUT_TRANSFORMS), \
    "an input transform without test fields"
assert {f.get("er_solver", "er") for f in GENERATOR_FIELDS.values()} == set(architecture.ER_SOLVERS), \
    "an er solver without test fields"


def installed_backend(name: str):
    """The configured backend `name`, or a skip when its framework is not installed."""
    if name not in INSTALLED:
        pytest.skip(f"backend {name}: {registry.BACKENDS[name].framework} is not installed")
    backend = registry.get_backend(name)
    backend.configure(threads=0, deterministic=False, seed=0)
    return backend


def make_spec(gridsize: int = 2, N: int = 64, padded_size: int | None = None, reach: float = 6.0,
              probe: np.ndarray | None = None, seed: int = 0, compile: bool = False, **fields) -> ModelSpec:
    """The spec the runner builds (config → validate → spec_from_config); the canvas fits member offsets
    up to `reach` px. `fields` are ModelConfig or TrainerConfig fields."""
    trainer = {k: v for k, v in fields.items() if k in TRAINER_FIELDS}
    model = {k: v for k, v in fields.items() if k not in TRAINER_FIELDS}
    if gridsize > 2:
        trainer.setdefault("neighbor_count", gridsize * gridsize)
    cfg = config.validate(config.TrainingConfig(
        view=VIEW_FOR_GRIDSIZE[gridsize], seed=seed, model=config.ModelConfig(N=N, gridsize=gridsize, **model),
        trainer=config.TrainerConfig(**trainer), backend=config.BackendConfig(compile=False)))
    if padded_size is None:
        offsets = np.full((1, 2), reach) if gridsize > 1 else np.zeros((1, 2))
        padded_size = architecture.padded_size_for(N, offsets)
    return spec_from_config(cfg, padded_size, smooth_probe(N) if probe is None else probe).replace(compile=compile)


def smooth_probe(N: int, seed: int = 0, chirp: float = 0.002) -> np.ndarray:
    """A focused complex probe (Gaussian amplitude, quadratic phase), normalised as the model expects."""
    idx = np.arange(N) - N / 2 + 0.5
    r2 = idx[:, None] ** 2 + idx[None, :] ** 2
    probe = np.exp(-r2 / (2 * (N / 8) ** 2)) * np.exp(1j * chirp * r2 * (1 + seed))
    return architecture.model_probe(probe, N, object_amplitude=0.5, probe_mask=False)


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
    """Diffraction amplitudes x (B,N,N,C) of a smooth object, offsets rel (B,C,2), the probe, true patches."""
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


def deterministic_weights(backend, run_dir, x, rel, probe) -> dict[str, np.ndarray]:
    """Weights after a short deterministic training run (to compare two runs byte for byte)."""
    backend.configure(threads=0, deterministic=True, seed=7)
    model = backend.build(make_spec(gridsize=2, n_filters_scale=1, probe=probe, seed=11,
                                    compile=registry.entry(backend.name).compiles))
    run_dir.mkdir()
    run_training(model, x, rel, loop_settings(config.TrainingConfig(), epochs=2, batch_size=4, checkpoint=False), run_dir)
    return model.get_weights()


# ---------------------------------------------------------------------------------------------
# An independent NumPy forward pass of architecture.py (float64)

def np_conv(x, weights, conv, act=None):
    kernel, bias = weights[f"{conv.name}/kernel"].astype(np.float64), weights[f"{conv.name}/bias"]
    H, W = x.shape[1:3]
    k = conv.size
    padded = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    out = sum(np.einsum("bhwc,co->bhwo", padded[:, i:i + H, j:j + W], kernel[i, j])
              for i in range(k) for j in range(k)) + bias
    return np.maximum(out, 0) if act == "relu" else out


def np_up(x):
    return x.repeat(2, axis=1).repeat(2, axis=2)


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


NP_ACT = {"sigmoid": np_sigmoid, "swish": lambda t: t * np_sigmoid(t), "relu": lambda t: np.maximum(t, 0),
          "softplus": lambda t: np.logaddexp(0, t)}


def np_gelu(x):
    from scipy.special import erf
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def np_spectral(h, wx, wy, modes):
    """The factorised spectral convolution by NumPy's rfft/irfft (not the backends' DFT matrices)."""
    N = h.shape[1]
    out = 0
    for axis, weight in ((2, wx), (1, wy)):
        spectrum = np.fft.rfft(h, axis=axis)  # (B, H, k, c) or (B, k, W, c)
        kept = np.take(spectrum, np.arange(modes), axis=axis)
        mixing = weight[..., 0] + 1j * weight[..., 1]  # (c, o, k)
        mixed = (np.einsum("bhkc,cok->bhko", kept, mixing) if axis == 2
                 else np.einsum("bkwc,cok->bkwo", kept, mixing))
        full = np.zeros(spectrum.shape[:3] + (mixed.shape[-1],), complex)
        index = [slice(None)] * 4
        index[axis] = slice(0, modes)
        full[tuple(index)] = mixed
        out = out + np.fft.irfft(full, n=N, axis=axis)
    return out


def numpy_ffno(weights, g, h):
    """amplitude, phase (B, N, N, out) of the ffno generator (architecture.FfnoLayers) for scaled input h."""
    layers = g.ffno()
    h = np_conv(np_gelu(np_conv(h, weights, layers.lift[0])), weights, layers.lift[1])
    gate = float(weights[layers.gate.name])
    wx, wy = (weights[f"{layers.spectral.name}/{axis}"].astype(np.float64) for axis in ("x", "y"))
    for mlp0, mlp1 in layers.blocks:
        u = np_spectral(h, wx, wy, g.ffno_modes)
        u = np_instance_norm(u)
        h = h + gate * np_conv(np_gelu(np_conv(u, weights, mlp0)), weights, mlp1)
    for conv0, conv1 in layers.refiners:
        h = h + np_conv(np_gelu(np_conv(h, weights, conv0)), weights, conv1)
    return (NP_ACT[g.amp_activation](np_conv(h, weights, layers.head_amp)),
            math.pi * np.tanh(np_conv(h, weights, layers.head_phase)))


def np_max_pool(h):
    B, H, W, C = h.shape
    return h.reshape(B, H // 2, 2, W // 2, 2, C).max(axis=(2, 4))


def numpy_unet(weights, g, h):
    """amplitude, phase (B, N, N, out) of the unet generator (architecture.UnetLayers) for scaled input h."""
    layers = g.unet()

    def block(convs, v):
        return np_gelu(np_conv(np_gelu(np_conv(v, weights, convs[0])), weights, convs[1]))

    skips = []
    for i, convs in enumerate(layers.encoder):
        h = block(convs, h if i == 0 else np_max_pool(h))
        skips.append(h)
    h = block(layers.bottleneck, np_max_pool(h))
    for convs, skip in zip(layers.decoder, reversed(skips)):
        h = block(convs, np.concatenate([np_up(h), skip], axis=-1))
    return (NP_ACT[g.amp_activation](np_conv(h, weights, layers.head_amp)),
            math.pi * np.tanh(np_conv(h, weights, layers.head_phase)))


def np_instance_norm(v):
    """Per sample and channel (B, N, N, k): zero mean, unit variance over the image, no affine."""
    mean = v.mean(axis=(1, 2), keepdims=True)
    return (v - mean) / np.sqrt(v.var(axis=(1, 2), keepdims=True) + architecture.INSTANCE_NORM_EPSILON)


def numpy_features(weights, spec: ModelSpec, x, rel):
    """The generator's input (B, N, N, k·C) float64: h, then the transform's re and im (architecture.py),
    and the transform's d (B, C, N, N) complex (None without a transform)."""
    g = spec.geometry
    h = x.astype(np.float64) * spec.intensity_scale / np.exp(float(weights["log_scale"]))
    if g.input_transform == "none":
        return h, None
    amplitude = np.moveaxis(h, -1, 1)  # (B, C, N, N)
    if g.input_transform == "er":  # the noise band in h: √counts = h·exp(log_scale)
        band = g.er_tolerance * physics.SQRT_COUNT_STD / np.exp(float(weights["log_scale"]))
        estimate = physics.error_reduction_step(amplitude, weights["probe"], rel, g.padded_size, g.er_iterations,
                                                g.er_solver, band)
    else:
        estimate = physics.backpropagate(amplitude, weights["probe"])
    d = np.moveaxis(estimate, 1, -1)
    features = np.concatenate([h, np_instance_norm(d.real), np_instance_norm(d.imag)], axis=-1)
    return features, estimate


def numpy_object(weights, spec: ModelSpec, x, rel=None):
    """Object patches (B, C_out, N, N) complex of the network for x (B, N, N, C), rel (B, C, 2)."""
    g = spec.geometry
    features, estimate = numpy_features(weights, spec, x, rel)
    if g.shared_members:  # each member through the single-pattern network
        B, N, _, C = x.shape
        k = g.input_features
        members = np.moveaxis(features.reshape(B, N, N, k, C), -1, 1).reshape(B * C, N, N, k)
        single = architecture.Geometry(**{**g.to_dict(), "gridsize": 1})
        obj = numpy_generator(weights, single, members).reshape(B, C, N, N)
    else:
        obj = numpy_generator(weights, g, features)
    # er_residual: amplitude 2·σ·|1 + d|, phase φ + arg(1 + d), i.e. O = 2·G·(1 + d) for the generator's G
    return 2.0 * obj * (1.0 + estimate) if g.er_residual else obj


def numpy_generator(weights, g, h):
    """Object patches (b, out, N, N) complex of the generator for its input h (b, N, N, in)."""
    if g.generator in ("ffno", "unet"):
        amp, phase = (numpy_ffno if g.generator == "ffno" else numpy_unet)(weights, g, h)
        return np.moveaxis(amp * np.exp(1j * phase), -1, 1)
    for block in g.encoder():
        for conv in block:
            h = np_conv(h, weights, conv, "relu")
        h = np_max_pool(h)
    out = {}
    for branch in ("amp", "phase"):
        layers, d = g.decoder(branch), h
        for block in layers["blocks"]:
            for conv in block:
                d = np_conv(d, weights, conv, "relu")
            d = np_up(d)
        act = NP_ACT[g.amp_activation] if branch == "amp" else (lambda t: math.pi * np.tanh(t))
        if not g.pad_object:
            out[branch] = act(np_conv(d, weights, layers["head"]))
            continue
        q = g.N // 4
        x1 = np.pad(act(np_conv(d[..., :-4], weights, layers["head"])), ((0, 0), (q, q), (q, q), (0, 0)))
        if g.border_path:
            x2 = d[..., -4:]
            for conv in layers["border_block"]:
                x2 = np_conv(x2, weights, conv, "relu")
            x2 = np_conv(np_up(x2), weights, layers["border_out"])
            x1 = x1 + x2 * np_sigmoid(x2) * g.border_mask()[None, :, :, None]
        out[branch] = x1
    return np.moveaxis(out["amp"] * np.exp(1j * out["phase"]), -1, 1)  # (B, C_out, N, N)


def numpy_forward(weights, spec: ModelSpec, x, rel):
    """trimmed (B,N,N), patches (B,C,N,N), amplitude (B,N,N,C) by physics.py from numpy_object."""
    g = spec.geometry
    N, P, C = g.N, g.padded_size, g.channels
    obj = numpy_object(weights, spec, x, rel)
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
