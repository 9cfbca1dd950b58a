"""The TensorFlow `base.Model`: PtychoPINN with its Adam optimiser and compiled steps.

The training loop itself is framework-free (training.py); this class only steps, evaluates and
predicts batches and moves parameters and optimiser state in and out as NumPy arrays.

Adam follows Keras (and TF's fused ResourceApplyAdam): m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g²,
θ ← θ − lr·sqrt(1−β2ᵗ)/(1−β1ᵗ) · m/(sqrt(v) + ε), β1 0.9, β2 0.999, ε 1e-7. Its state as arrays:
'iterations' (int64 step count), 'm/<name>' and 'v/<name>' per trainable parameter under the
architecture.py names (the complex probe's moments as complex64: real and imaginary parts are
moments of the real and imaginary components).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from fly64_train.backends import base
from fly64_train.backends.tensorflow.model import PROBE_NAME, PtychoPINN

BETA_1 = 0.9
BETA_2 = 0.999
EPSILON = 1e-7
PREDICT_CHUNK = 256  # groups per forward call in predict (bounds memory on large test sets)


class TensorFlowModel(base.Model):
    """One PtychoPINN network (model.PtychoPINN) with Adam and tf.function-compiled steps."""

    def __init__(self, params: dict[str, Any], probe: np.ndarray, seed: int):
        self.net = PtychoPINN(params, probe, seed)
        g = self.net.geometry
        self.geometry = g
        lr = float(params.get("learning_rate", 1e-3))
        if not lr > 0:
            raise ValueError(f"params['learning_rate'] must be positive, got {lr}")
        self._lr = tf.Variable(lr, dtype=tf.float32, trainable=False, name="learning_rate")
        self._iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self._params = self.net.trainable_parameters()  # neutral name → [variables]
        self._vars = [var for group in self._params.values() for var in group]
        self._m = [tf.Variable(tf.zeros_like(v), trainable=False, name=f"m_{i}") for i, v in enumerate(self._vars)]
        self._v = [tf.Variable(tf.zeros_like(v), trainable=False, name=f"v_{i}") for i, v in enumerate(self._vars)]

        compile_steps = bool(params.get("compile", True))
        jit = bool(params.get("jit_compile", False)) and compile_steps
        C, N = g.channels, g.N
        signature = [tf.TensorSpec([None, N, N, C], tf.float32), tf.TensorSpec([None, C, 2], tf.float32)]
        if compile_steps:
            self._train_fn = tf.function(self._train_step, input_signature=signature, jit_compile=jit)
            self._loss_fn = tf.function(self._loss, input_signature=signature, jit_compile=jit)
            self._predict_fn = tf.function(self._predict, input_signature=signature, jit_compile=jit)
        else:
            self._train_fn, self._loss_fn, self._predict_fn = self._train_step, self._loss, self._predict

    # ---- graph functions -----------------------------------------------------------------
    def _train_step(self, x: tf.Tensor, rel: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = self.net.loss(x, self.net.forward(x, rel)["amplitude"])
        grads = tape.gradient(loss, self._vars)
        step = self._iterations.assign_add(1)
        t = tf.cast(step, tf.float32)
        beta1_power = tf.pow(tf.constant(BETA_1, tf.float32), t)
        beta2_power = tf.pow(tf.constant(BETA_2, tf.float32), t)
        for var, m, v, grad in zip(self._vars, self._m, self._v, grads):
            if grad is None:  # a parameter the loss does not reach (none in architecture.py)
                continue
            tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, beta1_power=beta1_power,
                                         beta2_power=beta2_power, lr=self._lr, beta1=BETA_1, beta2=BETA_2,
                                         epsilon=EPSILON, grad=grad, use_locking=False)
        return loss

    def _loss(self, x: tf.Tensor, rel: tf.Tensor) -> tf.Tensor:
        return self.net.loss(x, self.net.forward(x, rel)["amplitude"])

    def _predict(self, x: tf.Tensor, rel: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.net.forward(x, rel)

    # ---- base.Model ----------------------------------------------------------------------
    def _inputs(self, x: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = self.geometry
        x = np.asarray(x, dtype=np.float32)
        rel = np.asarray(rel, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (g.N, g.N, g.channels):
            raise ValueError(f"x must have shape (B, {g.N}, {g.N}, {g.channels}) for N={g.N}, "
                             f"gridsize={g.gridsize}; got {x.shape}")
        if rel.shape != (x.shape[0], g.channels, 2):
            raise ValueError(f"rel must have shape ({x.shape[0]}, {g.channels}, 2) (member offsets in (x, y) "
                             f"pixels); got {rel.shape}")
        return x, rel

    def train_step(self, x: np.ndarray, rel: np.ndarray) -> float:
        x, rel = self._inputs(x, rel)
        return float(self._train_fn(tf.constant(x), tf.constant(rel)))

    def loss(self, x: np.ndarray, rel: np.ndarray) -> float:
        x, rel = self._inputs(x, rel)
        return float(self._loss_fn(tf.constant(x), tf.constant(rel)))

    def predict(self, x: np.ndarray, rel: np.ndarray) -> base.Prediction:
        x, rel = self._inputs(x, rel)
        pieces: dict[str, list[np.ndarray]] = {}
        for start in range(0, max(len(x), 1), PREDICT_CHUNK):
            out = self._predict_fn(tf.constant(x[start:start + PREDICT_CHUNK]),
                                   tf.constant(rel[start:start + PREDICT_CHUNK]))
            for key, value in out.items():
                pieces.setdefault(key, []).append(value.numpy())
        cat = {key: np.concatenate(value) for key, value in pieces.items()}
        return base.Prediction(
            trimmed=(cat["trimmed_re"] + 1j * cat["trimmed_im"]).astype(np.complex64),
            patches=(cat["patches_re"] + 1j * cat["patches_im"]).astype(np.complex64),
            amplitude=cat["amplitude"].astype(np.float32))

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.net.get_weights()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.net.set_weights(weights)

    @property
    def learning_rate(self) -> float:
        return float(self._lr.numpy())

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        value = float(value)
        if not value > 0:
            raise ValueError(f"learning rate must be positive, got {value}")
        self._lr.assign(value)

    def optimizer_state(self) -> dict[str, np.ndarray]:
        state = {"iterations": np.asarray(self._iterations.numpy(), dtype=np.int64)}
        i = 0
        for name, group in self._params.items():
            m = [self._m[i + k].numpy() for k in range(len(group))]
            v = [self._v[i + k].numpy() for k in range(len(group))]
            i += len(group)
            if name == PROBE_NAME:
                state[f"m/{name}"] = (m[0] + 1j * m[1]).astype(np.complex64)
                state[f"v/{name}"] = (v[0] + 1j * v[1]).astype(np.complex64)
            else:
                state[f"m/{name}"] = m[0].copy()
                state[f"v/{name}"] = v[0].copy()
        return state

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        expected = {"iterations"} | {f"{kind}/{name}" for name in self._params for kind in ("m", "v")}
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or extra:
            raise KeyError(f"optimizer state does not match this model (trainable parameters differ?): "
                           f"missing {missing[:6]}, unexpected {extra[:6]}")
        updates = []
        i = 0
        for name, group in self._params.items():
            for kind, slots in (("m", self._m), ("v", self._v)):
                value = np.asarray(state[f"{kind}/{name}"])
                if value.shape != tuple(group[0].shape):
                    raise ValueError(f"optimizer state {kind}/{name} has shape {value.shape}, "
                                     f"expected {tuple(group[0].shape)}")
                if name != PROBE_NAME and np.iscomplexobj(value):
                    raise ValueError(f"optimizer state {kind}/{name} must be real, got dtype {value.dtype}")
                parts = [np.real(value), np.imag(value)] if name == PROBE_NAME else [value]
                for k, part in enumerate(parts):
                    updates.append((slots[i + k], part.astype(np.float32)))
            i += len(group)
        iterations = np.asarray(state["iterations"])
        if iterations.shape != () or not np.issubdtype(iterations.dtype, np.number) or iterations < 0:
            raise ValueError(f"optimizer state 'iterations' must be a non-negative scalar, got {iterations}")
        for slot, value in updates:
            slot.assign(value)
        self._iterations.assign(int(iterations))
