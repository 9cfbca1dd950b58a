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

ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-7  # Keras' default, so both backends use the same optimiser settings
REQUIRED_PARAMS = ("intensity_scale", "learning_rate", "probe.trainable", "intensity_scale.trainable",
                   "nll_weight", "mae_weight")
STEP_KEY = "step"
MOMENT_KEYS = ("exp_avg", "exp_avg_sq")


def _oihw_to_hwio(kernel: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(kernel.detach().permute(2, 3, 1, 0).numpy())


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
        trainable = [p for p in self.network.parameters() if p.requires_grad]
        lr = float(params["learning_rate"])
        if not lr > 0:
            raise ValueError(f"learning_rate must be positive, got {lr}")
        self.optimizer = torch.optim.Adam(trainable, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPSILON,
                                          foreach=True)

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
        return float(self.optimizer.param_groups[0]["lr"])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        value = float(value)
        if not value > 0:
            raise ValueError(f"learning_rate must be positive, got {value}")
        for group in self.optimizer.param_groups:
            group["lr"] = value

    def _trainable_names(self) -> list[str]:
        return [name for name, tensor in self._tensors.items() if tensor.requires_grad]

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """{'step': int64, 'exp_avg/<name>', 'exp_avg_sq/<name>'} (kernels HWIO, probe complex)."""
        step = 0
        state: dict[str, np.ndarray] = {}
        for name in self._trainable_names():
            param_state = self.optimizer.state.get(self._tensors[name])
            if not param_state:
                continue
            step = int(param_state["step"])
            for key in MOMENT_KEYS:
                tensor = param_state[key]
                state[f"{key}/{name}"] = (_oihw_to_hwio(tensor) if name.endswith("/kernel")
                                          else tensor.detach().numpy().copy())
        state[STEP_KEY] = np.array(step, dtype=np.int64)
        return state

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        if STEP_KEY not in state:
            raise KeyError(f"optimizer state misses {STEP_KEY!r}")
        step = int(np.asarray(state[STEP_KEY]))
        names = self._trainable_names()
        expected = {f"{key}/{name}" for name in names for key in MOMENT_KEYS} if step > 0 else set()
        given = set(state) - {STEP_KEY}
        if given != expected:
            raise KeyError(f"optimizer state does not match the trainable parameters: missing "
                           f"{sorted(expected - given)}, unexpected {sorted(given - expected)}")
        restored: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        for name in names if step > 0 else []:
            param = self._tensors[name]
            entry = {"step": torch.tensor(float(step), dtype=torch.float32)}
            for key in MOMENT_KEYS:
                value = np.asarray(state[f"{key}/{name}"])
                shape = self._shapes[name]
                if value.shape != tuple(shape):
                    raise ValueError(f"optimizer state {key}/{name} has shape {value.shape}, expected {shape}")
                tensor = (_hwio_to_oihw(value.astype(np.float32)) if name.endswith("/kernel")
                          else torch.from_numpy(value.astype(np.complex64 if name == "probe" else np.float32)))
                entry[key] = _like(param, tensor)
            restored[param] = entry
        self.optimizer.state.clear()
        for param, entry in restored.items():
            self.optimizer.state[param] = entry

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
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.network.loss(xt, relt)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def loss(self, x: np.ndarray, rel: np.ndarray) -> float:
        xt, relt = self._inputs(x, rel)
        with torch.inference_mode():
            return float(self.network.loss(xt, relt))

    def predict(self, x: np.ndarray, rel: np.ndarray) -> Prediction:
        xt, relt = self._inputs(x, rel)
        with torch.inference_mode():
            out = self.network(xt, relt)
        return Prediction(
            trimmed=_to_complex(out["trimmed"]),
            patches=_to_complex(out["patches"]),
            amplitude=np.ascontiguousarray(out["amplitude"].permute(0, 2, 3, 1).numpy(), dtype=np.float32),
        )


def _to_complex(planes: torch.Tensor) -> np.ndarray:
    """(B, 2, ...) real/imaginary planes → (B, ...) complex64."""
    planes = planes.numpy()
    out = np.empty(planes[:, 0].shape, dtype=np.complex64)
    out.real, out.imag = planes[:, 0], planes[:, 1]
    return out


def _like(param: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` with the parameter's memory format (channels_last kernels stay channels_last)."""
    out = torch.empty_like(param)
    out.copy_(value)
    return out
