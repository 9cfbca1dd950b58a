"""Framework-free description of the PtychoPINN network both backends build (reference §5.1–5.2).

It fixes every parameter's backend-neutral name and shape (the layout of `weights.h5`: conv
kernels (3, 3, in, out) = HWIO, biases (out,)), and the geometry of the physics layers, so the
TensorFlow and PyTorch backends cannot drift apart. Forward pass, for input x (B, N, N, C):

  member_encoding 'stacked' (the reference): the C patterns are the C input channels of one
    network, whose heads give C_out channels (C if object_big else 1).
  member_encoding 'shared': every member's pattern goes through the same single-pattern network
    (input channels 1, head channels 1; members folded into the batch), C_out = C.
  h = (x·s) / exp(log_scale)                       s = intensity_scale(dose, N) (fixed)
  encoder: per block [conv3×3 ReLU, conv3×3 ReLU, maxpool 2×2]          → (B, 8, 8, ·)
  for d in (amp, phase):
    g = h; per decoder block [conv3×3 ReLU, conv3×3 ReLU, nearest upsample ×2] → (B, N/2, N/2, 32f)
    pad_object (the reference's default):
    x1 = act_d(conv_head(g[..., :-4])), zero-padded by N/4 per side      → (B, N, N, C_out)
    if probe_big: x2 = [conv3×3 ReLU, conv3×3 ReLU, upsample ×2](g[..., -4:]);
                  x1 += swish(conv_border(x2)) · border_mask              (mask: 0 in the central N/2)
    pad_object=False (the full head): one more decoder block with 16f filters → (B, N, N, 16f),
    x1 = act_d(conv_head(g)) over the whole N×N patch (no border path; probe_big has no effect)
  act_amp = model.amp_activation; act_phase = π·tanh; object O = A·exp(iφ) (B, N, N, C_out)
  canvas (B, P, P): object_big: Σ_c place(w·O_c, P//2 + rel_c) / Σ_c place(w, ·), a weighted mean
          of the members, w = 1 on the central N/2 square (where the padded head writes) and
          CANVAS_BORDER_WEIGHT outside it, w = 1 everywhere for the full head (division only
          where the denominator > 1e-6);
          else O placed at the centre
  trimmed_obj = canvas centre crop N; member patches = extract(canvas, P//2 + rel_c, N)
  ψ = probe_model · patch;  A = sqrt(fftshift(|FFT2 ψ|²)/N²);  pred_amp = A·exp(log_scale)
  pred_intensity = pred_amp²; loss = nll_weight·mean(I − counts·log(I + 1e-12))
                                     + mae_weight·mean|pred_amp − s·x|,   counts = (s·x)²
All convs are 'same' padded, stride 1, with bias. `rel` are member positions minus the group
centre, (x, y) order, in pixels (data/grouping.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

BORDER_CHANNELS = 4  # trunk channels routed to the probe-border (probe_big) path
NLL_EPSILON = 1e-12
COVERAGE_EPSILON = 1e-6
# Weight of a member's border (outside its central N/2) in the canvas mean. The reference divides
# by the centre-mask coverage (+1e-3), so members meet mostly through their centres; a plain mean
# over whole patches instead dilutes every centre with its neighbours' weak border-path values
# (measured: the network then never leaves the amplitude-only basin at gridsize 2).
CANVAS_BORDER_WEIGHT = 1e-3
MEMBER_ENCODINGS = ("shared", "stacked")
AMP_ACTIVATIONS = ("sigmoid", "swish", "softplus", "relu")  # the amplitude head's activation (§5.1)
SUPPORTED_N = (64, 128)  # patch sizes the encoder/decoder filter tables cover
PROBE_NAME = "probe"
LOG_SCALE_NAME = "log_scale"
# Initial kernels: Glorot-uniform, drawn in architecture order (HWIO) from this stream of `seed`.
INIT_STREAM = 0x9E3779B9


@dataclass(frozen=True)
class Conv:
    name: str
    in_channels: int
    out_channels: int

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {f"{self.name}/kernel": (3, 3, self.in_channels, self.out_channels),
                f"{self.name}/bias": (self.out_channels,)}


@dataclass(frozen=True)
class Geometry:
    N: int
    gridsize: int
    n_filters_scale: int
    object_big: bool
    probe_big: bool
    amp_activation: str
    padded_size: int
    member_encoding: str = "stacked"
    pad_object: bool = True

    def __post_init__(self):
        if self.N not in SUPPORTED_N:
            raise ValueError(f"N={self.N} is not supported by the architecture; expected one of {SUPPORTED_N}")
        if self.padded_size < self.N:
            raise ValueError(f"padded_size={self.padded_size} must be at least N={self.N}")
        if self.amp_activation not in AMP_ACTIVATIONS:
            raise ValueError(f"amp_activation={self.amp_activation!r}; expected one of {AMP_ACTIVATIONS}")
        if self.member_encoding not in MEMBER_ENCODINGS:
            raise ValueError(f"member_encoding={self.member_encoding!r}; expected one of {MEMBER_ENCODINGS}")
        if self.shared_members and not self.object_big:
            raise ValueError("member_encoding='shared' needs object_big=True at gridsize > 1 "
                             "(each member gets its own object patch)")

    @property
    def channels(self) -> int:
        """Patterns per group C (the model's input/output channels)."""
        return self.gridsize * self.gridsize

    @property
    def shared_members(self) -> bool:
        """Members run through one single-pattern network (folded into the batch)."""
        return self.member_encoding == "shared" and self.channels > 1

    @property
    def object_channels(self) -> int:
        """Object patches per group: C if object_big else 1."""
        return self.channels if self.object_big else 1

    @property
    def network_in_channels(self) -> int:
        return 1 if self.shared_members else self.channels

    @property
    def network_out_channels(self) -> int:
        return 1 if self.shared_members else self.object_channels

    @property
    def encoder_filters(self) -> list[int]:
        f = self.n_filters_scale
        return {64: [32 * f, 64 * f, 128 * f], 128: [16 * f, 32 * f, 64 * f, 128 * f]}[self.N]

    @property
    def decoder_filters(self) -> list[int]:
        f = self.n_filters_scale
        return {64: [64 * f, 32 * f], 128: [128 * f, 64 * f, 32 * f]}[self.N]

    @property
    def full_head_filters(self) -> int:
        """Filters of the extra decoder block that takes a full (pad_object=False) head from N/2 to N."""
        return 16 * self.n_filters_scale

    @property
    def border_path(self) -> bool:
        """The probe_big border path exists: only next to the padded (central N/2) head."""
        return self.probe_big and self.pad_object

    @property
    def canvas_border_weight(self) -> float:
        """Weight of a member's pixels outside its central N/2 in the canvas mean: CANVAS_BORDER_WEIGHT
        for the padded head (only the weak border path writes there), 1 for a full head."""
        return CANVAS_BORDER_WEIGHT if self.pad_object else 1.0

    @property
    def border_filters(self) -> int:
        return self.n_filters_scale * (2048 // self.N)

    def encoder(self) -> list[list[Conv]]:
        blocks, channels = [], self.network_in_channels
        for i, filters in enumerate(self.encoder_filters):
            blocks.append([Conv(f"encoder/block{i}/conv0", channels, filters),
                           Conv(f"encoder/block{i}/conv1", filters, filters)])
            channels = filters
        return blocks

    def decoder(self, branch: str) -> dict[str, Any]:
        """Layers of one decoder branch ('amp' or 'phase')."""
        blocks, channels = [], self.encoder_filters[-1]
        for i, filters in enumerate(self.decoder_filters):
            blocks.append([Conv(f"decoder_{branch}/block{i}/conv0", channels, filters),
                           Conv(f"decoder_{branch}/block{i}/conv1", filters, filters)])
            channels = filters
        if not self.pad_object:
            # pad_object=False (reference §5.1): one more Conv_Up block to N, the head reads every channel
            filters, i = self.full_head_filters, len(blocks)
            blocks.append([Conv(f"decoder_{branch}/block{i}/conv0", channels, filters),
                           Conv(f"decoder_{branch}/block{i}/conv1", filters, filters)])
            return {"blocks": blocks, "head": Conv(f"decoder_{branch}/head", filters, self.network_out_channels)}
        layers: dict[str, Any] = {
            "blocks": blocks,
            "head": Conv(f"decoder_{branch}/head", channels - BORDER_CHANNELS, self.network_out_channels),
        }
        if self.probe_big:
            width = self.border_filters
            layers["border_block"] = [Conv(f"decoder_{branch}/border/conv0", BORDER_CHANNELS, width),
                                      Conv(f"decoder_{branch}/border/conv1", width, width)]
            layers["border_out"] = Conv(f"decoder_{branch}/border/out", width, self.network_out_channels)
        return layers

    def convs(self) -> list[Conv]:
        out = [conv for block in self.encoder() for conv in block]
        for branch in ("amp", "phase"):
            layers = self.decoder(branch)
            out += [conv for block in layers["blocks"] for conv in block] + [layers["head"]]
            if self.border_path:
                out += layers["border_block"] + [layers["border_out"]]
        return out

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of the bundle: conv kernels/biases, log_scale, the model probe (complex)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for conv in self.convs():
            shapes.update(conv.shapes())
        shapes[LOG_SCALE_NAME] = ()
        shapes[PROBE_NAME] = (self.N, self.N)
        return shapes

    def border_mask(self) -> np.ndarray:
        """(N, N) float32: 1 outside the central N/2 square, 0 inside (where x1 lives)."""
        mask = np.ones((self.N, self.N), dtype=np.float32)
        q = self.N // 4
        mask[q:self.N - q, q:self.N - q] = 0.0
        return mask

    def canvas_weight(self) -> np.ndarray:
        """(N, N) float32 weight of a member's pixels in the canvas mean (see CANVAS_BORDER_WEIGHT)."""
        return canvas_weight(self.N, self.canvas_border_weight)

    def to_dict(self) -> dict[str, Any]:
        return {"N": self.N, "gridsize": self.gridsize, "n_filters_scale": self.n_filters_scale,
                "object_big": self.object_big, "probe_big": self.probe_big,
                "amp_activation": self.amp_activation, "padded_size": self.padded_size,
                "member_encoding": self.member_encoding, "pad_object": self.pad_object}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Geometry":
        """The geometry a bundle's manifest records (`to_dict`). Bundles written before
        member_encoding existed used the reference's stacking, those before pad_object the padded head
        (the fields' defaults)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def canvas_weight(n: int, border_weight: float = CANVAS_BORDER_WEIGHT) -> np.ndarray:
    """(n, n) float32: 1 on the central n/2 square (where the object head writes), border_weight outside."""
    weight = np.full((n, n), border_weight, dtype=np.float32)
    q = n // 4
    weight[q:n - q, q:n - q] = 1.0
    return weight


def initial_weights(geometry: Geometry, seed: int, intensity_scale: float, probe: np.ndarray) -> dict[str, np.ndarray]:
    """Every parameter's initial value, the same for every backend: Glorot-uniform kernels drawn in
    architecture order (HWIO) from NumPy stream [seed, INIT_STREAM], zero biases, log_scale =
    ln(intensity_scale), and the network probe. Architecture order and names, float32/complex64."""
    if not intensity_scale > 0:
        raise ValueError(f"intensity_scale must be positive, got {intensity_scale}")
    rng = np.random.default_rng([int(seed), INIT_STREAM])
    weights: dict[str, np.ndarray] = {}
    for conv in geometry.convs():
        fan_in, fan_out = 9 * conv.in_channels, 9 * conv.out_channels
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        kernel = rng.uniform(-limit, limit, size=(3, 3, conv.in_channels, conv.out_channels))
        weights[f"{conv.name}/kernel"] = kernel.astype(np.float32)
        weights[f"{conv.name}/bias"] = np.zeros((conv.out_channels,), dtype=np.float32)
    weights[LOG_SCALE_NAME] = np.asarray(math.log(intensity_scale), dtype=np.float32)
    weights[PROBE_NAME] = np.asarray(probe).astype(np.complex64)
    return weights


def intensity_scale(dose: float, N: int) -> float:
    """s = sqrt(dose)/(N/2): counts ≈ (s·X)² for data normalised to mean Σ X² = (N/2)² (reference §5.3)."""
    return math.sqrt(dose) / (N / 2)


def padded_size_for(N: int, relative_offsets: np.ndarray) -> int:
    """Canvas size P: N plus room for the largest member offset on both sides, even, ≥ N."""
    reach = float(np.max(np.abs(relative_offsets))) if np.size(relative_offsets) else 0.0
    extra = 2 * math.ceil(reach + 1) if reach > 0 else 0
    return N + extra + (extra % 2)


def model_probe(probe: np.ndarray, N: int, object_amplitude: float, probe_mask: bool) -> np.ndarray:
    """The probe the network uses: optional r < N/4 mask, then scaled so that an object of uniform
    amplitude `object_amplitude` gives a mean pattern intensity Σ I = (N/2)² (the data normalisation)."""
    probe = np.asarray(probe, dtype=np.complex64)
    if probe_mask:
        idx = np.arange(N) - N / 2 + 0.5
        probe = probe * ((idx[:, None] ** 2 + idx[None, :] ** 2) < (N / 4) ** 2)
    energy = float(np.sum(np.abs(probe) ** 2))
    if not energy > 0:
        raise ValueError("the probe has no energy (all zeros after masking)")
    scale = (N / 2) / (object_amplitude * math.sqrt(energy))
    return (probe * scale).astype(np.complex64)


def normalisation_factor(diffraction: np.ndarray, N: int) -> float:
    """Statistical normalisation: factor making the mean total intensity per pattern (N/2)² (§4.3)."""
    axes = tuple(range(1, diffraction.ndim))
    mean_energy = float(np.mean(np.sum(diffraction.astype(np.float64) ** 2, axis=axes[:2])))
    if not mean_energy > 0:
        raise ValueError("diffraction has no intensity: cannot normalise")
    return math.sqrt((N / 2) ** 2 / mean_energy)
