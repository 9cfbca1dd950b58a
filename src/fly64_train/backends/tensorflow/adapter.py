"""The TensorFlow model of the backend contract: PtychoPINN with Adam and (optionally) compiled steps.

base.ArrayModel does the checks, chunking and conversions of the contract; this class supplies
the TensorFlow calls. Adam is base's (Keras' form) through TensorFlow's fused ResourceApplyAdam;
the complex probe's moments are those of its real and imaginary variables.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from fly64_train.architecture import PROBE_NAME
from fly64_train.backends import base
from fly64_train.backends.tensorflow.model import PtychoPINN


class TensorFlowModel(base.ArrayModel):
    """One PtychoPINN network (model.PtychoPINN) with Adam; steps tf.function-compiled when spec.training.compile."""

    predict_chunk = 256

    def __init__(self, spec: base.ModelSpec):
        self.net = PtychoPINN(spec)
        g = spec.geometry
        self._lr = tf.Variable(spec.training.learning_rate, dtype=tf.float32, trainable=False, name="learning_rate")
        self._iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self._params = self.net.trainable_parameters()  # neutral name → [variables]
        self._vars = [var for group in self._params.values() for var in group]
        self._m = [tf.Variable(tf.zeros_like(v), trainable=False, name=f"m_{i}") for i, v in enumerate(self._vars)]
        self._v = [tf.Variable(tf.zeros_like(v), trainable=False, name=f"v_{i}") for i, v in enumerate(self._vars)]
        self._supervised = spec.training.supervised
        if spec.training.compile:
            signature = [tf.TensorSpec([None, g.N, g.N, g.channels], tf.float32),
                         tf.TensorSpec([None, g.channels, 2], tf.float32)]
            # supervised steps also take the truth (B, C, 2, N, N)
            steps = signature + ([tf.TensorSpec([None, g.channels, 2, g.N, g.N], tf.float32)]
                                 if self._supervised else [])
            self._train_fn = tf.function(self._step, input_signature=steps)
            self._loss_fn = tf.function(self._batch_loss, input_signature=steps)
            self._predict_fn = tf.function(self.net.forward, input_signature=signature)
        else:
            self._train_fn, self._loss_fn, self._predict_fn = self._step, self._batch_loss, self.net.forward
        super().__init__(spec)

    # ---- graph functions -----------------------------------------------------------------
    def _step(self, x: tf.Tensor, rel: tf.Tensor, truth: tf.Tensor | None = None) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = self._batch_loss(x, rel, truth)
        grads = tape.gradient(loss, self._vars)
        step = self._iterations.assign_add(1)
        t = tf.cast(step, tf.float32)
        beta1_power = tf.pow(tf.constant(base.ADAM_BETA_1, tf.float32), t)
        beta2_power = tf.pow(tf.constant(base.ADAM_BETA_2, tf.float32), t)
        for var, m, v, grad in zip(self._vars, self._m, self._v, grads):
            if grad is None:  # a parameter the loss does not reach (none in architecture.py)
                continue
            tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, beta1_power=beta1_power,
                                         beta2_power=beta2_power, lr=self._lr, beta1=base.ADAM_BETA_1,
                                         beta2=base.ADAM_BETA_2, epsilon=base.ADAM_EPSILON, grad=grad,
                                         use_locking=False)
        return loss

    def _batch_loss(self, x: tf.Tensor, rel: tf.Tensor, truth: tf.Tensor | None = None) -> tf.Tensor:
        if self._supervised:
            return self.net.supervised_loss(x, rel, truth)
        return self.net.loss(x, self.net.forward(x, rel)["amplitude"])

    # ---- base.ArrayModel -----------------------------------------------------------------
    @property
    def trainable(self) -> list[str]:
        return list(self._params)

    @staticmethod
    def _arguments(x: np.ndarray, rel: np.ndarray, truth) -> list[tf.Tensor]:
        return [tf.constant(x), tf.constant(rel)] + ([] if truth is None else [tf.constant(truth)])

    def _train_step(self, x: np.ndarray, rel: np.ndarray, truth) -> float:
        return float(self._train_fn(*self._arguments(x, rel, truth)))

    def _loss(self, x: np.ndarray, rel: np.ndarray, truth) -> float:
        return float(self._loss_fn(*self._arguments(x, rel, truth)))

    def _predict(self, x: np.ndarray, rel: np.ndarray) -> base.Prediction:
        out = {key: value.numpy() for key, value in self._predict_fn(tf.constant(x), tf.constant(rel)).items()}
        return base.Prediction(trimmed=(out["trimmed_re"] + 1j * out["trimmed_im"]).astype(np.complex64),
                               patches=(out["patches_re"] + 1j * out["patches_im"]).astype(np.complex64),
                               amplitude=out["amplitude"].astype(np.float32))

    def _read_weights(self) -> dict[str, np.ndarray]:
        return self.net.get_weights()

    def _write_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.net.set_weights(weights)

    def _get_learning_rate(self) -> float:
        return float(self._lr.numpy())

    def _set_learning_rate(self, value: float) -> None:
        self._lr.assign(value)

    def _slots(self):
        """(name, [m slots], [v slots]) per trainable parameter (the probe: [real, imag] each)."""
        i = 0
        for name, group in self._params.items():
            yield name, self._m[i:i + len(group)], self._v[i:i + len(group)]
            i += len(group)

    def _read_moments(self):
        def value(slots):
            parts = [slot.numpy() for slot in slots]
            return (parts[0] + 1j * parts[1]).astype(np.complex64) if len(parts) == 2 else parts[0].copy()

        return int(self._iterations.numpy()), {name: (value(m), value(v)) for name, m, v in self._slots()}

    def _write_moments(self, iterations, moments) -> None:
        for name, m_slots, v_slots in self._slots():
            for slots, value in zip((m_slots, v_slots), moments[name]):
                parts = [value.real, value.imag] if name == PROBE_NAME else [value]
                for slot, part in zip(slots, parts):
                    slot.assign(part.astype(np.float32))
        self._iterations.assign(iterations)
