"""The unet generator in TensorFlow (architecture.UnetLayers), NHWC."""
from __future__ import annotations

import math

import tensorflow as tf

from fly64_train.architecture import Geometry
from fly64_train.backends.tensorflow.model import AMP_ACTIVATIONS, conv2d, gelu, upsample2


def max_pool(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")


class Generator:
    def __init__(self, geometry: Geometry, variables: dict[str, tf.Variable]):
        self.layers, self.variables = geometry.unet(), variables
        self.amp_activation = AMP_ACTIVATIONS[geometry.amp_activation]

    def _block(self, block, h: tf.Tensor, scale: tf.Tensor | None = None) -> tf.Tensor:
        first, second = block
        return gelu(conv2d(gelu(conv2d(h, self.variables, first, scale=scale)), self.variables, second))

    def __call__(self, x: tf.Tensor, scale: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Amplitude and phase (b, N, N, out) for input x (b, N, N, in) scaled by `scale`."""
        layers, h, skips = self.layers, x, []
        for i, block in enumerate(layers.encoder):
            h = self._block(block, h if i == 0 else max_pool(h), scale if i == 0 else None)
            skips.append(h)
        h = self._block(layers.bottleneck, max_pool(h))
        for block, skip in zip(layers.decoder, reversed(skips)):
            h = self._block(block, tf.concat([upsample2(h), skip], axis=-1))
        amplitude = self.amp_activation(conv2d(h, self.variables, layers.head_amp))
        phase = math.pi * tf.tanh(conv2d(h, self.variables, layers.head_phase))
        return amplitude, phase
