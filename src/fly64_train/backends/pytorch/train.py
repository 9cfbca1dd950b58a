"""The backend Model for torch: optimiser, steps, prediction and the weight/optimiser boundary.

This is the only place where tensors meet the contract's NumPy arrays: inputs arrive NHWC
(B, N, N, C), outputs leave as base.Prediction, and parameters leave/arrive under their
architecture.py names with conv kernels in HWIO (the network keeps torch's OIHW).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fly64_train import legacy
from fly64_train.architecture import Geometry, geometry_from_params
from fly64_train.backends.base import Model, Prediction
from fly64_train.backends.pytorch.model import PtychoPINN, build_network, module_key

BETA_1 = 0.9
BETA_2 = 0.999
EPSILON = 1e-7  # Keras' default
ITERATIONS_KEY = "iterations"
PREDICT_CHUNK = 128  # groups per forward call in predict
REQUIRED_PARAMS = ("intensity_scale", "learning_rate", "probe.trainable", "intensity_scale.trainable",
                   "nll_weight", "mae_weight")


class KerasAdam:
    """Adam in Keras' form (the TensorFlow backend's update, so both backends train alike):

    m ← m + (g − m)(1 − β1),  v ← v + (g² − v)(1 − β2),
    θ ← θ − lr·sqrt(1 − β2ᵗ)/(1 − β1ᵗ) · m / (sqrt(v) + ε)

    (torch.optim.Adam adds ε to sqrt(v)/sqrt(1 − β2ᵗ) instead.) Complex parameters are updated as
    their real and imaginary components. Slots are shaped like the parameters (the probe's (N, N, 2)).
    """

    def __init__(self, params: list[torch.nn.Parameter], lr: float):
        self.params = params
        self.lr = float(lr)
        self.iterations = 0
        self.m = [torch.zeros_like(self._real(p)) for p in params]
        self.v = [torch.zeros_like(self._real(p)) for p in params]

    @staticmethod
    def _real(tensor: torch.Tensor) -> torch.Tensor:
        return torch.view_as_real(tensor) if tensor.is_complex() else tensor

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that received a gradient (Keras skips the others too)."""
        self.iterations += 1
        t = self.iterations
        alpha = self.lr * math.sqrt(1.0 - BETA_2 ** t) / (1.0 - BETA_1 ** t)
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self._real(self.params[i]) for i in live]
        grads = [self._real(self.params[i].grad) for i in live]
        m = [self.m[i] for i in live]
        v = [self.v[i] for i in live]
        torch._foreach_lerp_(m, grads, 1.0 - BETA_1)
        torch._foreach_lerp_(v, torch._foreach_mul(grads, grads), 1.0 - BETA_2)
        denominators = torch._foreach_sqrt(v)
        torch._foreach_add_(denominators, EPSILON)
        torch._foreach_addcdiv_(params, m, denominators, value=-alpha)


def _oihw_to_hwio(kernel: torch.Tensor) -> np.ndarray:
    # Always a copy: for a 1-channel kernel the permuted view can already be contiguous, and
    # np.ascontiguousarray would then hand out the live parameter memory (it changed under the caller).
    return np.array(kernel.detach().permute(2, 3, 1, 0).numpy(), order="C", copy=True)


def _hwio_to_oihw(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1))))


class TorchModel(Model):
    """One PtychoPINN network with its Adam optimiser (base.Model)."""

    def __init__(self, params: dict[str, Any], probe: np.ndarray, seed: int, channels_last: bool = True):
        legacy.require(params, *REQUIRED_PARAMS)
        self.geometry: Geometry = geometry_from_params(params)
        self.network: PtychoPINN = build_network(self.geometry, params, probe, channels_last=channels_last)
        self._shapes = self.geometry.parameter_shapes()
        self._tensors = self._named_parameters()
        self._initialise(seed)
        self._trainable = [name for name, tensor in self._tensors.items() if tensor.requires_grad]
        lr = float(params["learning_rate"])
        if not lr > 0:
            raise ValueError(f"learning_rate must be positive, got {lr}")
        self.optimizer = KerasAdam([self._tensors[name] for name in self._trainable], lr)

    # -- parameters -------------------------------------------------------------------------------
    def _named_parameters(self) -> dict[str, torch.nn.Parameter]:
        """architecture.py name → the torch parameter holding it (kernels OIHW)."""
        tensors: dict[str, torch.nn.Parameter] = {}
        for conv in self.geometry.convs():
            module = self.network.convs[module_key(conv.name)]
            tensors[f"{conv.name}/kernel"] = module.weight
            tensors[f"{conv.name}/bias"] = module.bias
        tensors["log_scale"] = self.network.log_scale
        tensors["probe"] = self.network.probe
        missing = set(self._shapes) ^ set(tensors)
        assert not missing, f"network and architecture disagree on {sorted(missing)}"
        return tensors

    def _initialise(self, seed: int) -> None:
        """Glorot-uniform kernels and zero biases, drawn in architecture order from `seed` alone."""
        generator = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for conv in self.geometry.convs():
                module = self.network.convs[module_key(conv.name)]
                fan_in, fan_out = 9 * conv.in_channels, 9 * conv.out_channels
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                # Drawn in HWIO order so the draw sequence is the bundle's layout.
                kernel = torch.empty(3, 3, conv.in_channels, conv.out_channels).uniform_(
                    -limit, limit, generator=generator)
                module.weight.copy_(kernel.permute(3, 2, 0, 1))
                module.bias.zero_()

    def get_weights(self) -> dict[str, np.ndarray]:
        weights: dict[str, np.ndarray] = {}
        for name, tensor in self._tensors.items():
            if name.endswith("/kernel"):
                weights[name] = _oihw_to_hwio(tensor)
            elif name == "probe":
                weights[name] = tensor.detach().numpy().astype(np.complex64, copy=True)
            else:
                weights[name] = tensor.detach().numpy().astype(np.float32, copy=True)
        return weights

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self._check_names(weights, "weights")
        converted: dict[str, torch.Tensor] = {}
        for name, expected in self._shapes.items():
            value = np.asarray(weights[name])
            if value.shape != tuple(expected):
                raise ValueError(f"weight {name!r} has shape {value.shape}, expected {tuple(expected)} "
                                 f"(kernels are HWIO) for geometry {self.geometry.to_dict()}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"weight {name!r} contains NaN or infinite values")
            if name == "probe":
                converted[name] = torch.from_numpy(value.astype(np.complex64))
            else:
                if np.iscomplexobj(value):
                    raise ValueError(f"weight {name!r} must be real, got dtype {value.dtype}")
                value = value.astype(np.float32)
                converted[name] = _hwio_to_oihw(value) if name.endswith("/kernel") else torch.from_numpy(value)
        with torch.no_grad():  # all checked first: nothing is half-loaded
            for name, value in converted.items():
                self._tensors[name].copy_(value)

    def _check_names(self, given: dict[str, Any], what: str) -> None:
        missing = sorted(set(self._shapes) - set(given))
        extra = sorted(set(given) - set(self._shapes))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"unexpected {extra}")
            raise KeyError(f"{what} do not match the network (N={self.geometry.N}, "
                           f"gridsize={self.geometry.gridsize}): " + "; ".join(parts))

    # -- optimiser --------------------------------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        return self.optimizer.lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        value = float(value)
        if not value > 0:
            raise ValueError(f"learning_rate must be positive, got {value}")
        self.optimizer.lr = value

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """{'iterations': int64, 'm/<name>', 'v/<name>'} per trainable parameter (kernels HWIO,
        the probe's moments complex64), the same arrays the TensorFlow backend writes."""
        state: dict[str, np.ndarray] = {ITERATIONS_KEY: np.asarray(self.optimizer.iterations, dtype=np.int64)}
        for name, m, v in zip(self._trainable, self.optimizer.m, self.optimizer.v):
            state[f"m/{name}"] = self._export(name, m)
            state[f"v/{name}"] = self._export(name, v)
        return state

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        expected = {ITERATIONS_KEY} | {f"{kind}/{name}" for name in self._trainable for kind in ("m", "v")}
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or extra:
            raise KeyError(f"optimizer state does not match the trainable parameters of this model: "
                           f"missing {missing}, unexpected {extra}")
        iterations = np.asarray(state[ITERATIONS_KEY])
        if iterations.shape != () or not np.issubdtype(iterations.dtype, np.number) or iterations < 0:
            raise ValueError(f"optimizer state {ITERATIONS_KEY!r} must be a non-negative scalar, got {iterations}")
        moments = {}
        for kind in ("m", "v"):
            for name in self._trainable:
                value = np.asarray(state[f"{kind}/{name}"])
                if value.shape != tuple(self._shapes[name]):
                    raise ValueError(f"optimizer state {kind}/{name} has shape {value.shape}, "
                                     f"expected {tuple(self._shapes[name])}")
                moments[kind, name] = self._import(name, value)
        with torch.no_grad():  # all checked first: nothing is half-loaded
            for kind, slots in (("m", self.optimizer.m), ("v", self.optimizer.v)):
                for name, slot in zip(self._trainable, slots):
                    slot.copy_(moments[kind, name])
        self.optimizer.iterations = int(iterations)

    def _export(self, name: str, slot: torch.Tensor) -> np.ndarray:
        """An optimiser slot (shaped like the torch parameter; the probe's as (N, N, 2)) as a contract array."""
        if name.endswith("/kernel"):
            return _oihw_to_hwio(slot)
        if name == "probe":
            return torch.view_as_complex(slot.detach().contiguous()).numpy().copy()
        return slot.detach().numpy().astype(np.float32, copy=True)

    def _import(self, name: str, value: np.ndarray) -> torch.Tensor:
        if name == "probe":
            return torch.view_as_real(torch.from_numpy(value.astype(np.complex64)))
        if np.iscomplexobj(value):
            raise ValueError(f"optimizer state for {name!r} must be real, got dtype {value.dtype}")
        value = value.astype(np.float32)
        return _hwio_to_oihw(value) if name.endswith("/kernel") else torch.from_numpy(value)

    # -- steps ------------------------------------------------------------------------------------
    def _inputs(self, x: np.ndarray, rel: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.asarray(x, dtype=np.float32)
        rel = np.asarray(rel, dtype=np.float32)
        geometry = self.geometry
        expected_x = (geometry.N, geometry.N, geometry.channels)
        if x.ndim != 4 or x.shape[1:] != expected_x:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, expected_x))}), got {x.shape}")
        if rel.shape != (x.shape[0], geometry.channels, 2):
            raise ValueError(f"rel must have shape ({x.shape[0]}, {geometry.channels}, 2), got {rel.shape}")
        # NHWC → NCHW view: its strides are already channels_last.
        return torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(rel)

    def train_step(self, x: np.ndarray, rel: np.ndarray) -> float:
        xt, relt = self._inputs(x, rel)
        self.network.train()
        self.optimizer.zero_grad()
        loss = self.network.loss(xt, relt)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def loss(self, x: np.ndarray, rel: np.ndarray) -> float:
        xt, relt = self._inputs(x, rel)
        with torch.inference_mode():
            return float(self.network.loss(xt, relt))

    def predict(self, x: np.ndarray, rel: np.ndarray) -> Prediction:
        """Forward pass in chunks of PREDICT_CHUNK groups (bounded memory on whole test sets)."""
        xt, relt = self._inputs(x, rel)
        g = self.geometry
        if len(xt) == 0:
            return Prediction(trimmed=np.zeros((0, g.N, g.N), np.complex64),
                              patches=np.zeros((0, g.channels, g.N, g.N), np.complex64),
                              amplitude=np.zeros((0, g.N, g.N, g.channels), np.float32))
        pieces: dict[str, list[np.ndarray]] = {"trimmed": [], "patches": [], "amplitude": []}
        with torch.inference_mode():
            for start in range(0, len(xt), PREDICT_CHUNK):
                out = self.network(xt[start:start + PREDICT_CHUNK], relt[start:start + PREDICT_CHUNK])
                pieces["trimmed"].append(_to_complex(out["trimmed"], axis=1))
                pieces["patches"].append(_to_complex(out["patches"], axis=2))
                pieces["amplitude"].append(out["amplitude"].permute(0, 2, 3, 1).numpy())
        return Prediction(**{key: np.ascontiguousarray(np.concatenate(value)) for key, value in pieces.items()})


def _to_complex(planes: torch.Tensor, axis: int = 1) -> np.ndarray:
    """Real/imaginary planes along `axis` (size 2) → complex64 without that axis."""
    planes = planes.numpy()
    real, imag = np.take(planes, 0, axis=axis), np.take(planes, 1, axis=axis)
    out = np.empty(real.shape, dtype=np.complex64)
    out.real, out.imag = real, imag
    return out
