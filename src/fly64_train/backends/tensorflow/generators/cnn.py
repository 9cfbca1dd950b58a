"""The cnn generator in TensorFlow: the reference's encoder-decoder (architecture.py, 'cnn')."""
from __future__ import annotations

import math

import tensorflow as tf

from fly64_train import architecture
from fly64_train.architecture import Geometry
from fly64_train.backends.tensorflow.model import AMP_ACTIVATIONS, conv2d, swish, upsample2


class Generator:
    def __init__(self, geometry: Geometry, variables: dict[str, tf.Variable]):
        self.geometry, self.variables = geometry, variables
        self.border_mask = tf.constant(geometry.border_mask()[None, :, :, None])
        self.amp_activation = AMP_ACTIVATIONS[geometry.amp_activation]

    def __call__(self, x: tf.Tensor, scale: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Amplitude and phase (b, N, N, out) for input x (b, N, N, in) scaled by `scale`."""
        h = x
        for i, block in enumerate(self.geometry.encoder()):
            for j, conv in enumerate(block):
                h = tf.nn.relu(conv2d(h, self.variables, conv, scale=scale if i == j == 0 else None))
            h = tf.nn.max_pool2d(h, ksize=2, strides=2, padding="VALID")
        return self._decoder(h, "amp"), self._decoder(h, "phase")

    def _decoder(self, h: tf.Tensor, branch: str) -> tf.Tensor:
        g, v = self.geometry, self.variables
        layers = g.decoder(branch)
        for block in layers["blocks"]:
            for conv in block:
                h = tf.nn.relu(conv2d(h, v, conv))
            h = upsample2(h)
        act = self.amp_activation if branch == "amp" else (lambda t: math.pi * tf.tanh(t))
        if not g.pad_object:  # the full head: the last block already upsampled to N
            return act(conv2d(h, v, layers["head"]))
        border = architecture.BORDER_CHANNELS
        trunk, x2 = tf.split(h, [h.shape[-1] - border, border], axis=-1)  # concat gradient (no slice grads)
        x1 = act(conv2d(trunk, v, layers["head"]))
        q = g.N // 4
        x1 = tf.pad(x1, [[0, 0], [q, q], [q, q], [0, 0]])
        if g.border_path:
            for conv in layers["border_block"]:
                x2 = tf.nn.relu(conv2d(x2, v, conv))
            x2 = upsample2(x2)
            x1 = x1 + swish(conv2d(x2, v, layers["border_out"])) * self.border_mask
        return x1
