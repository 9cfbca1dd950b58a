"""What a backend does: build the network from the legacy params, step it, predict, and move its
parameters in and out as backend-neutral NumPy arrays (names and layout of architecture.py).

The training loop (training.py), the bundle and evaluation are framework-free and talk to a
backend only through these two classes, so both backends share schedule, checkpoints and files.
"""
from __future__ import annotations

import importlib
import os
import sys
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Prediction:
    trimmed: np.ndarray  # (B, N, N) complex64: the canvas cropped to N around the group centre
    patches: np.ndarray  # (B, C, N, N) complex64: object at each member's position (before the probe)
    amplitude: np.ndarray  # (B, N, N, C) float32: predicted diffraction amplitude, pred_amp_scaled


class Model(ABC):
    """One built PtychoPINN network with its optimiser."""

    @abstractmethod
    def train_step(self, x: np.ndarray, rel: np.ndarray) -> float:
        """One optimiser step on a batch; x (B,N,N,C) float32 normalised amplitude, rel (B,C,2) float32."""

    @abstractmethod
    def loss(self, x: np.ndarray, rel: np.ndarray) -> float:
        """Loss of a batch without updating (validation)."""

    @abstractmethod
    def predict(self, x: np.ndarray, rel: np.ndarray) -> Prediction:
        """Forward pass of a batch."""

    @abstractmethod
    def get_weights(self) -> dict[str, np.ndarray]:
        """Every parameter under its architecture.py name and layout (kernels HWIO), probe complex64."""

    @abstractmethod
    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load `get_weights` output (from either backend); missing or misshapen names are errors."""

    @property
    @abstractmethod
    def learning_rate(self) -> float: ...

    @learning_rate.setter
    @abstractmethod
    def learning_rate(self, value: float) -> None: ...

    @abstractmethod
    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimiser's state (moments, step count) as arrays, for per-epoch checkpoints."""

    @abstractmethod
    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None: ...


class Backend(ABC):
    name: str

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Framework name → version, recorded in manifests and bundles."""

    @abstractmethod
    def configure(self, threads: int, deterministic: bool, seed: int) -> None:
        """Thread count (0 = all cores), determinism flags and framework seeds, before any build."""

    @abstractmethod
    def build(self, params: dict[str, Any], probe: np.ndarray, seed: int) -> Model:
        """A freshly initialised model for the geometry in `params` (architecture.geometry_from_params),
        with the network probe `probe` (N,N) complex64 (architecture.model_probe output)."""


# Backend name → (module, class, pip requirement shown when the framework is missing).
_BACKENDS = {
    "tensorflow": ("fly64_train.backends.tensorflow", "TensorFlowBackend", "tensorflow-cpu"),
    "pytorch": ("fly64_train.backends.pytorch", "PyTorchBackend", "torch==2.13.0"),
}


class BackendUnavailable(RuntimeError):
    """The chosen backend's framework cannot be imported (never silently replaced by the other)."""


# C++ start-up notes TensorFlow prints before absl logging is initialised (so TF_CPP_MIN_LOG_LEVEL
# cannot silence them): filtered out of the framework import's stderr; anything else passes.
_STARTUP_NOISE = ("All log messages before absl::InitializeLog()", "oneDNN custom operations are on")


def _import_quietly(module_name: str) -> None:
    if sys.modules.get(module_name) is not None:  # already imported (None marks a blocked import)
        return
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no file-backed stderr: a plain import
        importlib.import_module(module_name)
        return
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), stderr_fd)
        try:
            importlib.import_module(module_name)
        finally:
            os.dup2(saved, stderr_fd)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip() and not any(noise in line for noise in _STARTUP_NOISE):
                    print(line, file=sys.stderr)


def get_backend(name: str) -> Backend:
    if name not in _BACKENDS:
        raise ValueError(f"backend.name={name!r} is not a backend; expected one of {', '.join(_BACKENDS)}")
    module_name, class_name, requirement = _BACKENDS[name]
    framework = "tensorflow" if name == "tensorflow" else "torch"
    # TensorFlow's C++ start-up chatter (oneDNN, CPU features) is noise in a job log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if framework == "torch" and "OMP_WAIT_POLICY" not in os.environ:
        # torch's OpenMP (libgomp) reads this once, at import. By default idle threads spin ~300k
        # iterations at every barrier: on a busy machine (parallel sweep jobs) that makes a torch
        # step 2-10x slower; 1000 spins cost nothing measurable on an idle machine.
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")
    try:
        _import_quietly(framework)
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend={name} needs {framework}, which cannot be imported ({exc}); "
            f"install it with: pip install '{requirement}'") from exc
    module = importlib.import_module(module_name)
    return getattr(module, class_name)()
