"""PtychoPINN in TensorFlow: the physics layers of architecture.py's forward pass around a generator (generators/).

Plain `tf.Variable`s and `tf.nn` ops (no Keras layers): every parameter lives under its
backend-neutral architecture.py name, kernels in HWIO (TensorFlow's own layout), so weights move
between backends without renaming or transposing. Nothing is built at import time; a
`PtychoPINN` holds all of its state, so models of different N/gridsize coexist in one process.

Physics conventions are those of physics.py: images [row, col] = [y, x], offsets (x, y), a patch
"centred at" c takes pixel N//2 from coordinate c, bilinear sampling matrices, `place` = adjoint
of `extract`, far field A = sqrt(fftshift(|FFT2 ψ|²)/N²).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from fly64_train import architecture, physics
from fly64_train.architecture import LOG_SCALE_NAME, PROBE_NAME, Conv
from fly64_train.backends.base import ModelSpec
from fly64_train.backends.tensorflow import generators


# --------------------------------------------------------------------------------------------
# Physics layers (graph-safe: everything from `rel` is built inside TensorFlow)
# --------------------------------------------------------------------------------------------

def sampling_matrix(centres: tf.Tensor, n_out: int, n_in: int) -> tf.Tensor:
    """Bilinear sampling rows (..., n_out, n_in) for output i = centres − n_out//2 + i (physics.py).

    Rows that leave the input are zero (tf.one_hot gives zeros for out-of-range indices).
    """
    coords = centres[..., None] + tf.constant(np.arange(n_out) - n_out // 2, dtype=tf.float32)
    lower = tf.floor(coords)
    frac = (coords - lower)[..., None]
    lower = tf.cast(lower, tf.int32)
    return (tf.one_hot(lower, n_in, dtype=tf.float32) * (1.0 - frac)
            + tf.one_hot(lower + 1, n_in, dtype=tf.float32) * frac)


def member_sampling(rel: tf.Tensor, N: int, P: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Row (y) and column (x) sampling matrices (B, C, N, P) of members at canvas P//2 + rel."""
    centres = rel + float(P // 2)
    rows = sampling_matrix(centres[..., 1], N, P)
    cols = sampling_matrix(centres[..., 0], N, P)
    return rows, cols


def extract(canvas: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """Patches rows @ canvas @ colsᵀ. canvas (B, ..., P, P), rows/cols broadcastable (B, ..., N, P)."""
    return tf.linalg.matmul(tf.linalg.matmul(rows, canvas), cols, transpose_b=True)


def place(patches: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """Adjoint of `extract`: rowsᵀ @ patches @ cols (B, ..., P, P)."""
    return tf.linalg.matmul(tf.linalg.matmul(rows, patches, transpose_a=True), cols)


def member_object(delta: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """Each member's patch of the object 1 + delta, delta = O − 1 (B, 2, P, P) → complex (B, C, N, N)."""
    patch = extract(delta[:, None], rows[:, :, None], cols[:, :, None])  # (B, C, 2, N, N)
    return tf.complex(1.0 + patch[:, :, 0], patch[:, :, 1])


def place_members(parts: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """Complex member patches (B, C, N, N) summed on the group canvas as (re, im) (B, 2, P, P)."""
    stacked = tf.stack([tf.math.real(parts), tf.math.imag(parts)], axis=2)
    return tf.reduce_sum(place(stacked, rows[:, :, None], cols[:, :, None]), axis=1)


def modulus_projection(wave: tf.Tensor, measured: tf.Tensor, band: Optional[tf.Tensor] = None) -> tf.Tensor:
    """physics: the exit waves (B, C, N, N) given the measured far-field modulus (unshifted, FFT scale,
    real); with a band, physics.modulus_band's target (|Ψ| kept within measured ± band)."""
    spectrum = tf.signal.fft2d(wave)
    magnitude = tf.abs(spectrum)
    floor = tf.maximum(magnitude, physics.BACKPROP_FLOOR * tf.reduce_max(magnitude, axis=(-2, -1), keepdims=True))
    target = measured if band is None else tf.minimum(tf.maximum(magnitude, tf.nn.relu(measured - band)),
                                                      measured + band)
    return tf.signal.ifft2d(spectrum * tf.cast(target / floor, spectrum.dtype))


def projection_terms(h: tf.Tensor, probe: tf.Tensor, n: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The group solvers' constants: the measured modulus |FFT ψ| (unshifted, FFT scale) of the
    amplitudes h (B, C, N, N), and 1/max|P|² (the corrections' scale, as physics)."""
    measured = tf.signal.ifftshift(h, axes=(-2, -1)) * float(n)
    return measured, tf.cast(1.0 / tf.reduce_max(tf.square(tf.abs(probe))), probe.dtype)


def band_width(tolerance: float, log_scale: tf.Tensor, n: int) -> Optional[tf.Tensor]:
    """The noise band of model.er_tolerance in the measured modulus' FFT scale (None: exact projection):
    √counts = h·exp(log_scale), so tolerance·SQRT_COUNT_STD √counts are that over exp(log_scale) in h."""
    if not tolerance:
        return None
    return tolerance * physics.SQRT_COUNT_STD * float(n) * tf.exp(-tf.stop_gradient(log_scale))


def reassemble(parts: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor, border_weight: float) -> tf.Tensor:
    """Weighted mean of the member patches on the canvas (architecture.py).

    parts (B, C, K, N, N): K real planes per member (real, imag); rows/cols (B, C, N, P).
    Returns (B, K, P, P) = Σ_c place(w·parts_c) / Σ_c place(w) where the denominator exceeds
    COVERAGE_EPSILON; w = 1 on the central N/2 square, `border_weight` outside it.
    """
    n = rows.shape[2]
    q = n // 4
    weight = architecture.canvas_weight(n, border_weight)
    placed = tf.reduce_sum(place(parts * weight, rows[:, :, None], cols[:, :, None]), axis=1)
    # Σ_c place(w) is separable: w = ε·1 + (1 − ε)·(centre square), and place(outer(a, b)) =
    # outer(rowsᵀa, colsᵀb), so only column sums of the sampling matrices are needed.
    def covered(inset: int) -> tf.Tensor:
        row_sums = tf.reduce_sum(rows[:, :, inset:n - inset], axis=2)  # (B, C, P)
        col_sums = tf.reduce_sum(cols[:, :, inset:n - inset], axis=2)
        return tf.linalg.matmul(row_sums, col_sums, transpose_a=True)  # (B, P, P)

    denominator = border_weight * covered(0) + (1.0 - border_weight) * covered(q)
    denominator = tf.where(denominator > architecture.COVERAGE_EPSILON, denominator, tf.ones_like(denominator))
    return placed / denominator[:, None]


def centre_crop(canvas: tf.Tensor, N: int, P: int) -> tf.Tensor:
    """The N×N patch centred at P//2 (extract at an integer centre)."""
    start = P // 2 - N // 2
    return canvas[..., start:start + N, start:start + N]


@tf.custom_gradient
def safe_sqrt(value: tf.Tensor):
    """sqrt with a finite gradient at 0 (forward unchanged)."""
    root = tf.sqrt(value)

    def grad(upstream):
        return upstream * 0.5 / tf.maximum(root, 1e-12)

    return root, grad


def backpropagate(h: tf.Tensor, probe: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """physics.backpropagate for amplitudes h (b, k, N, N) and the complex probe (N, N): re, im of d."""
    n = probe.shape[-1]
    spectrum = tf.signal.fftshift(tf.signal.fft2d(probe), axes=(-2, -1)) / n
    magnitude = tf.abs(spectrum)
    floor = tf.maximum(magnitude, physics.BACKPROP_FLOOR * tf.reduce_max(magnitude))
    unit = spectrum / tf.cast(floor, spectrum.dtype)
    wave = tf.complex(h, tf.zeros_like(h)) * unit
    field = tf.signal.ifft2d(tf.signal.ifftshift(wave, axes=(-2, -1))) * n
    d = tf.math.conj(probe) * (field - probe) / tf.cast(tf.reduce_max(tf.abs(probe) ** 2), probe.dtype)
    return tf.math.real(d), tf.math.imag(d)


def instance_norm(x: tf.Tensor) -> tf.Tensor:
    """Per sample and channel over the image (NHWC), no affine: zero mean, unit variance."""
    mean = tf.reduce_mean(x, axis=(1, 2), keepdims=True)
    centred = x - mean
    variance = tf.reduce_mean(tf.square(centred), axis=(1, 2), keepdims=True)
    return centred * tf.math.rsqrt(variance + architecture.INSTANCE_NORM_EPSILON)


def far_field_amplitude(psi_re: tf.Tensor, psi_im: tf.Tensor) -> tf.Tensor:
    """A = sqrt(fftshift(|FFT2 ψ|²)/N²) over the last two axes (float32 in, float32 out)."""
    n_pixels = float(psi_re.shape[-1] * psi_re.shape[-2])
    spectrum = tf.signal.fft2d(tf.complex(psi_re, psi_im))
    intensity = tf.math.real(spectrum) ** 2 + tf.math.imag(spectrum) ** 2
    return safe_sqrt(tf.signal.fftshift(intensity, axes=(-2, -1)) / n_pixels)


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------

def gelu(x: tf.Tensor) -> tf.Tensor:
    """The exact (erf) GELU, as torch's default: the ffno and unet generators."""
    return tf.nn.gelu(x, approximate=False)


def swish(x: tf.Tensor) -> tf.Tensor:
    return x * tf.sigmoid(x)


AMP_ACTIVATIONS = {
    "sigmoid": tf.sigmoid,
    "swish": swish,
    "softplus": tf.nn.softplus,
    "relu": tf.nn.relu,
}


@tf.custom_gradient
def upsample2(x: tf.Tensor):
    """Nearest-neighbour upsampling ×2 of NHWC; its gradient (2×2 sum pooling) as avg-pool·4,
    exact and several times faster than the gradient of broadcast_to."""
    shape = tf.shape(x)
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    y = tf.reshape(tf.broadcast_to(x[:, :, None, :, None, :], [shape[0], h, 2, w, 2, c]),
                   [shape[0], 2 * h, 2 * w, c])

    def grad(upstream):
        return tf.nn.avg_pool2d(upstream, ksize=2, strides=2, padding="VALID") * 4.0

    return y, grad


def conv2d(x: tf.Tensor, variables: dict[str, tf.Variable], conv: Conv, scale: tf.Tensor | None = None) -> tf.Tensor:
    """The 'same' convolution `conv` (architecture.Conv) with bias, reading `<name>/kernel` (HWIO) and
    `<name>/bias` from variables; `scale` multiplies the input (applied to the kernel instead:
    conv(x·a, W) = conv(x, a·W), so the scale's gradient needs no backprop to x)."""
    kernel = variables[f"{conv.name}/kernel"]
    if scale is not None:
        kernel = kernel * scale
    y = tf.nn.conv2d(x, kernel, strides=1, padding="SAME")
    return tf.nn.bias_add(y, variables[f"{conv.name}/bias"])


class PtychoPINN(tf.Module):
    """Variables and forward pass of one PtychoPINN (architecture.py)."""

    def __init__(self, spec: ModelSpec, name: str = "ptychopinn"):
        super().__init__(name=name)
        self.geometry = g = spec.geometry
        training = spec.training
        self.intensity_scale = spec.intensity_scale
        self.nll_weight = float(training.nll_weight)
        self.mae_weight = float(training.mae_weight)
        self.probe_trainable = bool(training.probe_trainable)
        self.log_scale_trainable = bool(training.intensity_scale_trainable)

        # Zeros of the right shapes; ArrayModel loads architecture.initial_weights into them.
        self.shapes = g.parameter_shapes()
        self.generator_vars: dict[str, tf.Variable] = {}
        with self.name_scope:
            for key, shape in self.shapes.items():
                if key in (PROBE_NAME, LOG_SCALE_NAME):
                    continue
                self.generator_vars[key] = tf.Variable(tf.zeros(shape), name=key.replace("/", "_"), trainable=True)
            self.log_scale = tf.Variable(0.0, name=LOG_SCALE_NAME, trainable=self.log_scale_trainable)
            self.probe_re = tf.Variable(tf.zeros((g.N, g.N)), name="probe_real", trainable=self.probe_trainable)
            self.probe_im = tf.Variable(tf.zeros((g.N, g.N)), name="probe_imag", trainable=self.probe_trainable)
        self.generator = generators.build(g, self.generator_vars)

    # ---- parameters by backend-neutral name -------------------------------------------------
    def trainable_parameters(self) -> dict[str, list[tf.Variable]]:
        """Neutral name → the real variables that hold it (probe: [real, imag])."""
        out: dict[str, list[tf.Variable]] = {key: [var] for key, var in self.generator_vars.items()}
        if self.log_scale_trainable:
            out[LOG_SCALE_NAME] = [self.log_scale]
        if self.probe_trainable:
            out[PROBE_NAME] = [self.probe_re, self.probe_im]
        return out

    def get_weights(self) -> dict[str, np.ndarray]:
        weights = {key: var.numpy().copy() for key, var in self.generator_vars.items()}
        weights[LOG_SCALE_NAME] = np.asarray(self.log_scale.numpy(), dtype=np.float32)
        weights[PROBE_NAME] = (self.probe_re.numpy() + 1j * self.probe_im.numpy()).astype(np.complex64)
        return weights

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Assign checked weights (base.check_weights: every name, float32 / complex64 probe)."""
        for key, var in self.generator_vars.items():
            var.assign(weights[key])
        self.log_scale.assign(weights[LOG_SCALE_NAME])
        self.probe_re.assign(weights[PROBE_NAME].real)
        self.probe_im.assign(weights[PROBE_NAME].imag)

    # ---- forward --------------------------------------------------------------------------
    def object_planes(self, x: tf.Tensor, rel: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Amplitude and phase (B, C_out, N, N) of the object patches from x (B, N, N, C), rel (B, C, 2)."""
        g = self.geometry
        features, scale, estimate = self.generator_input(x, rel)  # (B, N, N, k·C): [h …, re d …, im d …]
        if g.shared_members:
            # every member through the single-pattern network: members folded into the batch
            k = g.input_features
            members = tf.reshape(features, [-1, g.N, g.N, k, g.channels])
            members = tf.reshape(tf.transpose(members, [0, 4, 1, 2, 3]), [-1, g.N, g.N, k])
            amp, phase = self.generator(members, scale)
            amp, phase = (tf.reshape(amp, [-1, g.channels, g.N, g.N]),
                          tf.reshape(phase, [-1, g.channels, g.N, g.N]))
        else:
            amp, phase = self.generator(features, scale)
            amp, phase = tf.transpose(amp, [0, 3, 1, 2]), tf.transpose(phase, [0, 3, 1, 2])
        if g.er_residual:  # the heads correct the group's error-reduction estimate 1 + d (architecture.py)
            real, imag = tf.stop_gradient(estimate[0]), tf.stop_gradient(estimate[1])  # data: no gradient
            amp = 2.0 * amp * tf.sqrt(tf.square(1.0 + real) + tf.square(imag))
            phase = phase + tf.math.atan2(imag, 1.0 + real)
        return amp, phase

    def generator_input(self, x: tf.Tensor, rel: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, object]:
        """The generator's input (B, N, N, k·C), the scale its first kernel applies, and with er_residual
        the group estimate's d = O − 1 per member (re, im, each (B, C, N, N); else None)."""
        # h = (x·s)/exp(log_scale): without a transform the generator applies it to its first kernel
        scale = self.intensity_scale * tf.exp(-self.log_scale)
        if self.geometry.input_transform == "none":
            return x, scale, None
        h = x * scale
        probe = tf.complex(self.probe_re, self.probe_im)
        real, imag = backpropagate(tf.transpose(h, [0, 3, 1, 2]), probe)  # (B, C, N, N)
        if self.geometry.input_transform == "er":
            real, imag = self.group_step(real, imag, rel, probe, tf.transpose(h, [0, 3, 1, 2]))
        features = tf.concat([h, instance_norm(tf.transpose(real, [0, 2, 3, 1])),
                              instance_norm(tf.transpose(imag, [0, 2, 3, 1]))], axis=-1)
        return features, tf.constant(1.0), ((real, imag) if self.geometry.er_residual else None)

    def group_step(self, real: tf.Tensor, imag: tf.Tensor, rel: tf.Tensor, probe: tf.Tensor,
                   h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """physics.error_reduction_step(h, probe, rel, P, er_iterations) from the members' backprop images
        and amplitudes h (B, C, N, N)."""
        g = self.geometry
        rows, cols = member_sampling(rel, g.N, g.padded_size)  # (B, C, N, P)
        total = tf.reduce_sum(place(tf.stack([real, imag], axis=2), rows[:, :, None], cols[:, :, None]), axis=1)
        weight = tf.square(tf.abs(probe))
        weight = weight / tf.reduce_max(weight)
        coverage = tf.reduce_sum(place(tf.broadcast_to(weight, tf.shape(real)), rows, cols), axis=1)[:, None]
        cover = tf.maximum(coverage, physics.ER_FLOOR)  # (B, 1, P, P)
        delta = total / cover  # O − 1 after the first step (B, 2, P, P)
        # forward only (architecture.py): the value of the later steps (or of RAAR), the first's gradient
        if g.er_solver == "raar":
            later = self.raar(tf.stop_gradient(h), rows, cols, tf.stop_gradient(coverage), tf.stop_gradient(probe))
            delta = delta + tf.stop_gradient(later - delta)
        elif g.er_iterations > 1:
            later = self.error_reduction(tf.stop_gradient(delta), tf.stop_gradient(h), rows, cols, cover,
                                         tf.stop_gradient(probe))
            delta = delta + tf.stop_gradient(later - delta)
        members = extract(delta[:, None], rows[:, :, None], cols[:, :, None])  # (B, C, 2, N, N)
        return members[:, :, 0], members[:, :, 1]

    def error_reduction(self, delta: tf.Tensor, h: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor,
                        cover: tf.Tensor, probe: tf.Tensor) -> tf.Tensor:
        """Iterations 2..K of physics.error_reduction_step on the canvas increment delta = O − 1 (B, 2, P, P)
        after the first (exact) step; with a noise band all K from O = 1, the first within the band too."""
        measured, inverse_peak = projection_terms(h, probe, self.geometry.N)
        band = band_width(self.geometry.er_tolerance, self.log_scale, self.geometry.N)
        steps = self.geometry.er_iterations - 1
        if band is not None:
            delta, steps = tf.zeros_like(delta), steps + 1
        for _ in range(steps):
            wave = probe * member_object(delta, rows, cols)
            correction = tf.math.conj(probe) * (modulus_projection(wave, measured, band) - wave) * inverse_peak
            delta = delta + place_members(correction, rows, cols) / cover
        return delta

    def raar(self, h: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor, coverage: tf.Tensor, probe: tf.Tensor) -> tf.Tensor:
        """physics.raar_iterates' K-th iterate as the canvas increment O − 1 (B, 2, P, P); coverage
        Σ|P_c|²/max|P|² (B, 1, P, P)."""
        measured, inverse_peak = projection_terms(h, probe, self.geometry.N)
        band = band_width(self.geometry.er_tolerance, self.log_scale, self.geometry.N)
        cover = tf.maximum(coverage, physics.RAAR_FLOOR)
        beta = tf.cast(physics.RAAR_BETA, probe.dtype)

        def splat(waves):  # the members' least-squares object O − 1 on the canvas
            return place_members(tf.math.conj(probe) * (waves - probe) * inverse_peak, rows, cols) / cover

        wave = tf.broadcast_to(probe, tf.shape(measured))  # ψ_0 = P: the flat object
        for _ in range(self.geometry.er_iterations - 1):
            fitted = modulus_projection(wave, measured, band)
            overlap = probe * member_object(splat(2.0 * fitted - wave), rows, cols)
            wave = beta * (wave + overlap - fitted) + (1.0 - beta) * fitted
        return splat(modulus_projection(wave, measured, band))

    def forward(self, x: tf.Tensor, rel: tf.Tensor) -> dict[str, tf.Tensor]:
        """Every output of the model for x (B, N, N, C) float32, rel (B, C, 2) float32 (x, y).

        trimmed_re/im (B, N, N), patches_re/im (B, C, N, N), amplitude (B, N, N, C) = pred_amp_scaled.
        """
        g = self.geometry
        N, P = g.N, g.padded_size
        amp, phase = self.object_planes(x, rel)  # (B, C_out, N, N)
        obj = tf.stack([amp * tf.cos(phase), amp * tf.sin(phase)], axis=2)  # (B, C_out, 2, N, N)
        rows, cols = member_sampling(rel, N, P)  # (B, C, N, P)
        if g.object_big:
            canvas = reassemble(obj, rows, cols, g.canvas_border_weight)  # (B, 2, P, P)
        else:
            lo = P // 2 - N // 2
            canvas = tf.pad(obj[:, 0], [[0, 0], [0, 0], [lo, P - N - lo], [lo, P - N - lo]])
        trimmed = centre_crop(canvas, N, P)  # (B, 2, N, N)
        patches = extract(canvas[:, None], rows[:, :, None], cols[:, :, None])  # (B, C, 2, N, N)
        o_re, o_im = tf.unstack(patches, axis=2)  # gradient: a stack, not two zero-padded slices
        psi_re = self.probe_re * o_re - self.probe_im * o_im
        psi_im = self.probe_re * o_im + self.probe_im * o_re
        amplitude = far_field_amplitude(psi_re, psi_im) * tf.exp(self.log_scale)  # (B, C, N, N)
        return {"trimmed_re": trimmed[:, 0], "trimmed_im": trimmed[:, 1],
                "patches_re": o_re, "patches_im": o_im,
                "amplitude": tf.transpose(amplitude, [0, 2, 3, 1])}

    def supervised_loss(self, x: tf.Tensor, rel: tf.Tensor, truth: tf.Tensor) -> tf.Tensor:
        """Amplitude texture + weighted level + mean-free phase MAE against truth (B, C, 2, N, N) = (|T|, θ)
        (architecture.py)."""
        amp, phase = self.object_planes(x, rel)  # (B, C, N, N)

        def level(t: tf.Tensor) -> tf.Tensor:
            return tf.reduce_mean(t, axis=(-2, -1), keepdims=True)

        amp_error = amp - truth[:, :, 0]
        phase_error = phase - truth[:, :, 1]
        return (tf.reduce_mean(tf.abs(amp_error - level(amp_error)))
                + architecture.SUPERVISED_LEVEL_WEIGHT * tf.reduce_mean(tf.abs(level(amp_error)))
                + tf.reduce_mean(tf.abs(phase_error - level(phase_error))))

    def loss(self, x: tf.Tensor, amplitude: tf.Tensor) -> tf.Tensor:
        """nll_weight·mean(I − counts·log(I + ε)) + mae_weight·mean|A − s·x|, counts = (s·x)²."""
        target = x * self.intensity_scale
        total = tf.constant(0.0, tf.float32)
        if self.nll_weight:
            intensity = tf.square(amplitude)
            nll = tf.reduce_mean(intensity - tf.square(target) * tf.math.log(intensity + architecture.NLL_EPSILON))
            total = total + self.nll_weight * nll
        if self.mae_weight:
            total = total + self.mae_weight * tf.reduce_mean(tf.abs(amplitude - target))
        return total
