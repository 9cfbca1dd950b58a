"""The ffno generator in TensorFlow (architecture.FfnoLayers), NHWC at constant N×N resolution."""
from __future__ import annotations

import math

import tensorflow as tf

from fly64_train import architecture
from fly64_train.architecture import Geometry
from fly64_train.backends.tensorflow.model import AMP_ACTIVATIONS, conv2d, gelu, instance_norm


class Generator:
    def __init__(self, geometry: Geometry, variables: dict[str, tf.Variable]):
        self.layers, self.variables = geometry.ffno(), variables
        self.basis = [tf.constant(m) for m in architecture.spectral_basis(geometry.N, geometry.ffno_modes)]
        self.amp_activation = AMP_ACTIVATIONS[geometry.amp_activation]

    def spectral(self, h: tf.Tensor) -> tf.Tensor:
        """The factorised spectral convolution (architecture.SpectralConv) of h (b, N, N, w)."""
        fc, fs, ic, is_ = self.basis
        name = self.layers.spectral.name
        out = 0.0
        for axis, (into, mix, back) in (("x", ("bhwc,wk->bhkc", "bhkc,cok->bhko", "bhko,kw->bhwo")),
                                        ("y", ("bhwc,hk->bkwc", "bkwc,cok->bkwo", "bkwo,kh->bhwo"))):
            weight = self.variables[f"{name}/{axis}"]
            w_re, w_im = weight[..., 0], weight[..., 1]
            x_re, x_im = tf.einsum(into, h, fc), tf.einsum(into, h, fs)
            y_re = tf.einsum(mix, x_re, w_re) - tf.einsum(mix, x_im, w_im)
            y_im = tf.einsum(mix, x_re, w_im) + tf.einsum(mix, x_im, w_re)
            out = out + tf.einsum(back, y_re, ic) + tf.einsum(back, y_im, is_)
        return out

    def __call__(self, x: tf.Tensor, scale: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Amplitude and phase (b, N, N, out) for input x (b, N, N, in) scaled by `scale`."""
        layers, v = self.layers, self.variables
        h = conv2d(gelu(conv2d(x, v, layers.lift[0], scale=scale)), v, layers.lift[1])
        gate = v[layers.gate.name]
        for first, second in layers.blocks:
            update = conv2d(gelu(conv2d(instance_norm(self.spectral(h)), v, first)), v, second)
            h = h + gate * update
        for first, second in layers.refiners:
            h = h + conv2d(gelu(conv2d(h, v, first)), v, second)
        amplitude = self.amp_activation(conv2d(h, v, layers.head_amp))
        phase = math.pi * tf.tanh(conv2d(h, v, layers.head_phase))
        return amplitude, phase
