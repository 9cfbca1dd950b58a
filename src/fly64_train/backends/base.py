"""The backend contract: what every backend builds from, and what its models do.

A backend turns a `ModelSpec` (frozen: network geometry, training settings, network probe,
intensity scale, seed; built from a TrainingConfig by `specs.spec_from_config`, or from a bundle
by `specs.spec_from_bundle`) into a `Model` that steps, evaluates and predicts NumPy batches and moves its
parameters and optimiser state in and out as backend-neutral arrays (names and layout of
architecture.py). The training loop (training.py), the bundle and evaluation are framework-free
and talk to a backend only through these classes.

`ArrayModel` holds everything both backends share (input, weight and optimiser-state checks,
chunked prediction, the initial weights of architecture.initial_weights), so a backend only
supplies the framework calls. The registry of backends is backends/registry.py.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from fly64_train import architecture
from fly64_train.architecture import PROBE_NAME, Geometry
from fly64_train.backends import registry

# Both backends' optimiser: Adam in Keras' form (TensorFlow's fused ResourceApplyAdam),
#   m ← β1·m + (1−β1)·g,  v ← β2·v + (1−β2)·g²,  θ ← θ − lr·sqrt(1−β2ᵗ)/(1−β1ᵗ) · m/(sqrt(v) + ε)
# (torch.optim.Adam adds ε to sqrt(v)/sqrt(1−β2ᵗ) instead). A complex parameter (the probe) is
# updated as its real and imaginary components; its moments travel as complex64.
ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-7
ITERATIONS_KEY = "iterations"  # optimiser state: int64 step count, plus 'm/<name>', 'v/<name>' per trainable


# ---------------------------------------------------------------------------------------------
# What a backend builds from

@dataclass(frozen=True)
class TrainingSettings:
    """How a model trains: the loss weights, what is trainable, the optimiser's rate, compiled steps.
    No defaults: specs.training_settings builds it from the config (the defaults live there)."""
    learning_rate: float
    nll_weight: float
    mae_weight: float
    probe_trainable: bool
    intensity_scale_trainable: bool
    compile: bool  # compiled steps (backend.compile); only backends whose registry entry compiles
    model_type: str  # architecture.MODEL_TYPES: supervised steps take the true patches

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not (self.nll_weight or self.mae_weight):
            raise ValueError("nll_weight and mae_weight are both 0: the loss would be empty")
        if self.model_type not in architecture.MODEL_TYPES:
            raise ValueError(f"model_type={self.model_type!r}; expected one of {', '.join(architecture.MODEL_TYPES)}")

    @property
    def supervised(self) -> bool:
        return self.model_type == "supervised"


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """Everything a backend needs to build a freshly initialised model (architecture.py's network)."""
    geometry: Geometry
    training: TrainingSettings
    probe: np.ndarray  # (N, N) complex64: the network probe (architecture.model_probe output)
    intensity_scale: float  # s: the network sees x·s/exp(log_scale); log_scale starts at ln s
    seed: int  # initial weights (architecture.initial_weights)

    def __post_init__(self):
        N = self.geometry.N
        probe = np.asarray(self.probe)
        if probe.shape != (N, N):
            raise ValueError(f"the network probe must have shape ({N}, {N}) for N={N}, got {probe.shape}")
        if not np.all(np.isfinite(probe)):
            raise ValueError("the network probe contains NaN or infinite values")
        if not self.intensity_scale > 0:
            raise ValueError(f"intensity_scale must be positive, got {self.intensity_scale}")
        if self.training.supervised and self.geometry.object_channels != self.geometry.channels:
            raise ValueError("model_type=supervised compares every member's patch with its truth: needs "
                             "object_big=True at gridsize > 1")
        probe = probe.astype(np.complex64)  # a copy, read-only: the spec is a value
        probe.flags.writeable = False
        object.__setattr__(self, "probe", probe)
        object.__setattr__(self, "intensity_scale", float(self.intensity_scale))
        object.__setattr__(self, "seed", int(self.seed))

    def initial_weights(self) -> dict[str, np.ndarray]:
        return architecture.initial_weights(self.geometry, self.seed, self.intensity_scale, self.probe)

    def replace(self, **training: Any) -> "ModelSpec":
        """The same spec with some training settings changed."""
        return dataclasses.replace(self, training=dataclasses.replace(self.training, **training))


# ---------------------------------------------------------------------------------------------
# Checks at the NumPy boundary (one definition for every backend)

def _names(names: list[str]) -> str:
    return f"{names[:8]}{' ...' if len(names) > 8 else ''}"


def _check_names(given: Mapping[str, Any], expected, what: str, geometry: Geometry) -> None:
    if not isinstance(given, Mapping):
        raise TypeError(f"{what} must be a dict of name → array, got {type(given).__name__}")
    missing = [key for key in expected if key not in given]
    extra = sorted(key for key in given if key not in expected)
    if missing or extra:
        parts = ([f"missing {_names(missing)}"] if missing else []) + ([f"unexpected {_names(extra)}"] if extra else [])
        raise KeyError(f"{what} do not match this model (N={geometry.N}, gridsize={geometry.gridsize}): "
                       + "; ".join(parts))


def _check_array(value: Any, label: str, shape: tuple, complex_ok: bool) -> np.ndarray:
    value = np.asarray(value)
    if value.shape != tuple(shape):
        raise ValueError(f"{label} has shape {value.shape}, expected {tuple(shape)} (kernels are HWIO)")
    if not complex_ok and np.iscomplexobj(value):
        raise ValueError(f"{label} must be real, got dtype {value.dtype}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{label} contains NaN or infinite values")
    return value.astype(np.complex64 if complex_ok else np.float32)


def check_weights(weights: Mapping[str, Any], geometry: Geometry) -> dict[str, np.ndarray]:
    """Every parameter of `geometry`, by name, with its shape, real (but the probe) and finite; float32 /
    complex64 copies in architecture order. Clear errors name the parameter."""
    shapes = geometry.parameter_shapes()
    _check_names(weights, shapes, "weights", geometry)
    return {name: _check_array(weights[name], f"weight {name!r}", shape, name == PROBE_NAME)
            for name, shape in shapes.items()}


def check_inputs(geometry: Geometry, x: Any, rel: Any) -> tuple[np.ndarray, np.ndarray]:
    """x (B, N, N, C) float32 normalised amplitudes and rel (B, C, 2) float32 member offsets."""
    x = np.asarray(x, dtype=np.float32)
    rel = np.asarray(rel, dtype=np.float32)
    g = geometry
    if x.ndim != 4 or x.shape[1:] != (g.N, g.N, g.channels):
        raise ValueError(f"x must have shape (B, {g.N}, {g.N}, {g.channels}) for N={g.N}, gridsize={g.gridsize}; "
                         f"got {x.shape}")
    if rel.shape != (x.shape[0], g.channels, 2):
        raise ValueError(f"rel must have shape ({x.shape[0]}, {g.channels}, 2) (member offsets in (x, y) pixels); "
                         f"got {rel.shape}")
    return x, rel


def check_truth(spec: "ModelSpec", x: np.ndarray, target: Any) -> Optional[np.ndarray]:
    """The true patches of a supervised batch as (B, C, 2, N, N) float32 (amplitude, phase); None for a
    pinn (which must get none). target: (B, C, N, N) complex, the members' true object patches."""
    g = spec.geometry
    if not spec.training.supervised:
        if target is not None:
            raise ValueError("true patches were given to a model_type=pinn model (it trains through the physics)")
        return None
    if target is None:
        raise ValueError("model_type=supervised trains on the true object patches: pass target (B, C, N, N)")
    target = np.asarray(target)
    if target.shape != (x.shape[0], g.channels, g.N, g.N):
        raise ValueError(f"target must have shape ({x.shape[0]}, {g.channels}, {g.N}, {g.N}) (the members' true "
                         f"object patches); got {target.shape}")
    if not np.all(np.isfinite(target)):
        raise ValueError("target contains NaN or infinite values")
    return np.ascontiguousarray(np.stack([np.abs(target), np.angle(target)], axis=2), dtype=np.float32)


def check_optimizer_state(state: Mapping[str, Any], geometry: Geometry,
                          trainable: list[str]) -> tuple[int, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(step count, {name: (m, v)}) of an optimiser state for the `trainable` parameters."""
    shapes = geometry.parameter_shapes()
    expected = [ITERATIONS_KEY] + [f"{kind}/{name}" for name in trainable for kind in ("m", "v")]
    _check_names(state, expected, "optimizer state entries (trainable parameters differ?)", geometry)
    iterations = np.asarray(state[ITERATIONS_KEY])
    if iterations.shape != () or not np.issubdtype(iterations.dtype, np.number) or iterations < 0:
        raise ValueError(f"optimizer state {ITERATIONS_KEY!r} must be a non-negative scalar, got {iterations}")
    moments = {name: tuple(_check_array(state[f"{kind}/{name}"], f"optimizer state {kind}/{name}", shapes[name],
                                        name == PROBE_NAME) for kind in ("m", "v"))
               for name in trainable}
    return int(iterations), moments


# ---------------------------------------------------------------------------------------------
# Models and backends

@dataclass
class Prediction:
    trimmed: np.ndarray  # (B, N, N) complex64: the canvas cropped to N around the group centre
    patches: np.ndarray  # (B, C, N, N) complex64: object at each member's position (before the probe)
    amplitude: np.ndarray  # (B, N, N, C) float32: predicted diffraction amplitude, pred_amp_scaled

    @classmethod
    def concatenate(cls, parts: list["Prediction"]) -> "Prediction":
        return cls(**{f.name: np.ascontiguousarray(np.concatenate([getattr(p, f.name) for p in parts]))
                      for f in dataclasses.fields(cls)})

    @classmethod
    def empty(cls, geometry: Geometry) -> "Prediction":
        g = geometry
        return cls(trimmed=np.zeros((0, g.N, g.N), np.complex64),
                   patches=np.zeros((0, g.channels, g.N, g.N), np.complex64),
                   amplitude=np.zeros((0, g.N, g.N, g.channels), np.float32))


class Model(ABC):
    """One built PtychoPINN network with its optimiser, as the training loop sees it."""

    @abstractmethod
    def train_step(self, x: np.ndarray, rel: np.ndarray, target: Optional[np.ndarray] = None) -> float:
        """One optimiser step on a batch; x (B,N,N,C) float32 normalised amplitude, rel (B,C,2) float32;
        target (B,C,N,N) complex: the members' true patches (model_type=supervised only)."""

    @abstractmethod
    def loss(self, x: np.ndarray, rel: np.ndarray, target: Optional[np.ndarray] = None) -> float:
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


class ArrayModel(Model):
    """The Model both backends implement: the checks, chunking and (de)serialisation of the contract
    around a handful of framework calls (the `_` methods). Subclasses create their parameters in
    `__init__` and then call `super().__init__(spec)`, which loads `spec.initial_weights()`."""

    predict_chunk = 128  # groups per forward call in predict (bounds memory on whole test sets)

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.geometry = spec.geometry
        self.set_weights(spec.initial_weights())

    # ---- framework calls ---------------------------------------------------------------------
    @property
    @abstractmethod
    def trainable(self) -> list[str]:
        """Names of the parameters the optimiser updates, in architecture order."""

    @abstractmethod
    def _train_step(self, x: np.ndarray, rel: np.ndarray, truth: Optional[np.ndarray]) -> float:
        """truth: None (pinn) or (B, C, 2, N, N) float32 true amplitude and phase (check_truth)."""

    @abstractmethod
    def _loss(self, x: np.ndarray, rel: np.ndarray, truth: Optional[np.ndarray]) -> float: ...

    @abstractmethod
    def _predict(self, x: np.ndarray, rel: np.ndarray) -> Prediction:
        """Forward pass of one chunk (checked inputs, at most predict_chunk groups)."""

    @abstractmethod
    def _read_weights(self) -> dict[str, np.ndarray]:
        """Copies of every parameter in the contract's layout."""

    @abstractmethod
    def _write_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Assign checked parameters (contract layout, float32/complex64)."""

    @abstractmethod
    def _read_moments(self) -> tuple[int, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """(step count, {trainable name: (m, v)}) in the contract's layout (copies)."""

    @abstractmethod
    def _write_moments(self, iterations: int, moments: dict[str, tuple[np.ndarray, np.ndarray]]) -> None: ...

    @abstractmethod
    def _get_learning_rate(self) -> float: ...

    @abstractmethod
    def _set_learning_rate(self, value: float) -> None: ...

    # ---- base.Model ------------------------------------------------------------------------
    def train_step(self, x: np.ndarray, rel: np.ndarray, target: Optional[np.ndarray] = None) -> float:
        x, rel = check_inputs(self.geometry, x, rel)
        return float(self._train_step(x, rel, check_truth(self.spec, x, target)))

    def loss(self, x: np.ndarray, rel: np.ndarray, target: Optional[np.ndarray] = None) -> float:
        x, rel = check_inputs(self.geometry, x, rel)
        return float(self._loss(x, rel, check_truth(self.spec, x, target)))

    def predict(self, x: np.ndarray, rel: np.ndarray) -> Prediction:
        x, rel = check_inputs(self.geometry, x, rel)
        if len(x) == 0:
            return Prediction.empty(self.geometry)
        step = self.predict_chunk
        return Prediction.concatenate([self._predict(x[i:i + step], rel[i:i + step]) for i in range(0, len(x), step)])

    def get_weights(self) -> dict[str, np.ndarray]:
        weights = self._read_weights()
        return {name: weights[name] for name in self.geometry.parameter_shapes()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self._write_weights(check_weights(weights, self.geometry))  # all checked first: nothing half-loaded

    @property
    def learning_rate(self) -> float:
        return float(self._get_learning_rate())

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        value = float(value)
        if not value > 0:
            raise ValueError(f"learning rate must be positive, got {value}")
        self._set_learning_rate(value)

    def optimizer_state(self) -> dict[str, np.ndarray]:
        iterations, moments = self._read_moments()
        state = {ITERATIONS_KEY: np.asarray(iterations, dtype=np.int64)}
        for name in self.trainable:
            state[f"m/{name}"], state[f"v/{name}"] = moments[name]
        return state

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self._write_moments(*check_optimizer_state(state, self.geometry, self.trainable))


class Backend(ABC):
    """One framework. Found through backends/registry.py; `name` is its registry name."""
    name: str

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Framework name → version, recorded in manifests and bundles."""

    def configure(self, threads: int, deterministic: bool, seed: int) -> None:
        """Thread count (0 = all cores), determinism flags and framework seeds, before any build.
        Safe to call again: every call sets all three."""
        if threads < 0:
            raise ValueError(f"threads must be 0 (all cores) or a positive count, got {threads}")
        self._configure(int(threads), bool(deterministic), int(seed))

    @abstractmethod
    def _configure(self, threads: int, deterministic: bool, seed: int) -> None: ...

    def build(self, spec: ModelSpec) -> Model:
        """A freshly initialised model (architecture.initial_weights of the spec)."""
        if spec.training.compile and not registry.entry(self.name).compiles:
            raise ValueError(f"backend.compile=true is not supported by the {self.name} backend "
                             "(it runs eagerly); set backend.compile=false")
        return self._build(spec)

    @abstractmethod
    def _build(self, spec: ModelSpec) -> Model: ...

