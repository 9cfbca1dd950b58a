"""The torch model of the backend contract: optimiser, steps, prediction and the layout conversions.

base.ArrayModel does the contract's checks and chunking; this is the only place where tensors meet
its NumPy arrays: inputs arrive NHWC (B, N, N, C), outputs leave as base.Prediction, and
parameters leave/arrive under their architecture.py names with conv kernels in HWIO (the network
keeps torch's OIHW).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from fly64_train.architecture import LOG_SCALE_NAME, PROBE_NAME
from fly64_train.backends.base import ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON, ArrayModel, ModelSpec, Prediction
from fly64_train.backends.pytorch.model import PtychoPINN


class KerasAdam:
    """base's Adam (Keras' form, as the TensorFlow backend's update) on torch parameters, with
    m ← m + (g − m)(1 − β1) and v ← v + (g² − v)(1 − β2) as lerps. Complex parameters are updated
    as their real and imaginary components: slots are shaped like the (real view of the) parameters."""

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
        alpha = self.lr * math.sqrt(1.0 - ADAM_BETA_2 ** t) / (1.0 - ADAM_BETA_1 ** t)
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self._real(self.params[i]) for i in live]
        grads = [self._real(self.params[i].grad) for i in live]
        m = [self.m[i] for i in live]
        v = [self.v[i] for i in live]
        torch._foreach_lerp_(m, grads, 1.0 - ADAM_BETA_1)
        torch._foreach_lerp_(v, torch._foreach_mul(grads, grads), 1.0 - ADAM_BETA_2)
        denominators = torch._foreach_sqrt(v)
        torch._foreach_add_(denominators, ADAM_EPSILON)
        torch._foreach_addcdiv_(params, m, denominators, value=-alpha)


class TorchModel(ArrayModel):
    """One PtychoPINN network with its Adam optimiser (base.ArrayModel's torch calls)."""

    def __init__(self, spec: ModelSpec, channels_last: bool = True):
        self.network = PtychoPINN(spec, channels_last=channels_last)
        self._tensors = self._named_parameters(spec)
        self._trainable = [name for name, tensor in self._tensors.items() if tensor.requires_grad]
        self.optimizer = KerasAdam([self._tensors[name] for name in self._trainable], spec.training.learning_rate)
        super().__init__(spec)

    def _named_parameters(self, spec: ModelSpec) -> dict[str, torch.nn.Parameter]:
        """architecture.py name → the torch parameter holding it (kernels OIHW), in architecture order."""
        tensors: dict[str, torch.nn.Parameter] = self.network.generator.named_tensors()
        tensors[LOG_SCALE_NAME] = self.network.log_scale
        tensors[PROBE_NAME] = self.network.probe
        return tensors

    # -- base.ArrayModel: parameters ----------------------------------------------------------------
    @property
    def trainable(self) -> list[str]:
        return list(self._trainable)

    def _read_weights(self) -> dict[str, np.ndarray]:
        return {name: self._export(name, tensor) for name, tensor in self._tensors.items()}

    def _write_weights(self, weights: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for name, tensor in self._tensors.items():
                tensor.copy_(self._import(name, weights[name], like=tensor))

    def _get_learning_rate(self) -> float:
        return self.optimizer.lr

    def _set_learning_rate(self, value: float) -> None:
        self.optimizer.lr = value

    def _read_moments(self):
        moments = {name: (self._export(name, m), self._export(name, v))
                   for name, m, v in zip(self._trainable, self.optimizer.m, self.optimizer.v)}
        return self.optimizer.iterations, moments

    def _write_moments(self, iterations, moments) -> None:
        with torch.no_grad():
            for i, name in enumerate(self._trainable):
                for slot, value in zip((self.optimizer.m[i], self.optimizer.v[i]), moments[name]):
                    slot.copy_(self._import(name, value, like=slot))
        self.optimizer.iterations = int(iterations)

    @staticmethod
    def _export(name: str, tensor: torch.Tensor) -> np.ndarray:
        """A parameter or optimiser slot as a contract array (a copy): kernels HWIO, the probe complex64
        (its slots are (N, N, 2) real views)."""
        tensor = tensor.detach()
        if name.endswith("/kernel"):
            # Always a copy: for a 1-channel kernel the permuted view can already be contiguous, and
            # np.ascontiguousarray would then hand out the live parameter memory.
            return np.array(tensor.permute(2, 3, 1, 0).numpy(), order="C", copy=True)
        if name == PROBE_NAME:
            if not tensor.is_complex():
                tensor = torch.view_as_complex(tensor.contiguous())
            return tensor.numpy().astype(np.complex64, copy=True)
        return tensor.numpy().astype(np.float32, copy=True)

    @staticmethod
    def _import(name: str, value: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        """A checked contract array in the layout of `like` (a parameter or an optimiser slot)."""
        if name.endswith("/kernel"):
            return torch.from_numpy(np.ascontiguousarray(np.transpose(value, (3, 2, 0, 1))))
        tensor = torch.from_numpy(np.array(value, order="C"))  # (ascontiguousarray would make 0-d 1-d)
        return torch.view_as_real(tensor) if name == PROBE_NAME and not like.is_complex() else tensor

    # -- base.ArrayModel: steps ---------------------------------------------------------------------
    @staticmethod
    def _tensors_of(x: np.ndarray, rel: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # NHWC → NCHW view: its strides are already channels_last.
        return torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(rel)

    def _objective(self, x: np.ndarray, rel: np.ndarray, truth) -> torch.Tensor:
        xt, relt = self._tensors_of(x, rel)
        if truth is not None:  # model_type=supervised
            return self.network.supervised_loss(xt, relt, torch.from_numpy(truth))
        return self.network.loss(xt, relt)

    def _train_step(self, x: np.ndarray, rel: np.ndarray, truth) -> float:
        self.network.train()
        self.optimizer.zero_grad()
        loss = self._objective(x, rel, truth)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def _loss(self, x: np.ndarray, rel: np.ndarray, truth) -> float:
        with torch.inference_mode():
            return float(self._objective(x, rel, truth))

    def _predict(self, x: np.ndarray, rel: np.ndarray) -> Prediction:
        with torch.inference_mode():
            out = self.network(*self._tensors_of(x, rel))
            return Prediction(trimmed=_to_complex(out["trimmed"], axis=1), patches=_to_complex(out["patches"], axis=2),
                              amplitude=out["amplitude"].permute(0, 2, 3, 1).numpy())


def _to_complex(planes: torch.Tensor, axis: int = 1) -> np.ndarray:
    """Real/imaginary planes along `axis` (size 2) → complex64 without that axis."""
    planes = planes.numpy()
    real, imag = np.take(planes, 0, axis=axis), np.take(planes, 1, axis=axis)
    out = np.empty(real.shape, dtype=np.complex64)
    out.real, out.imag = real, imag
    return out
