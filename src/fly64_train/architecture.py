"""Framework-free description of the PtychoPINN network both backends build (reference §5.1–5.2).

It fixes every parameter's backend-neutral name, shape and initial value (the layout of
`weights.h5`: conv kernels (k, k, in, out) = HWIO, biases (out,)), and the geometry of the physics
layers, so the TensorFlow and PyTorch backends cannot drift apart.

The generator (`model.generator`, GENERATORS below) is the network that maps patterns to object
patches (amplitude, phase); everything after it (canvas, physics layers, loss) is the same for
every generator. Each generator is described here once (its layers and `Param`s); each backend
builds it in `backends/<backend>/generators/<name>.py`.
  cnn (the reference): the encoder-decoder below.
  ffno: see FfnoLayers. It writes the whole N×N patch (the full-head canvas semantics).
  unet: see UnetLayers. A U-Net: skip connections at every scale carry the input's fine detail to the
    heads, past the bottleneck the cnn squeezes every patch through. It writes the whole N×N patch.
Forward pass, for input x (B, N, N, C):

  member_encoding 'stacked' (the reference): the C patterns are the C input channels of one
    network, whose heads give C_out channels (C if object_big else 1).
  member_encoding 'shared': every member's pattern goes through the same single-pattern network
    (input channels 1, head channels 1; members folded into the batch), C_out = C.
  (Both encodings mean the same for every generator: only its input and head channels change.)
  h = (x·s) / exp(log_scale)                       s = intensity_scale(dose, N) (fixed)
  input_transform 'er': the same with d = physics.error_reduction_step(h, probe_model, rel, P): the members'
    backprop images averaged on the group canvas, divided by Σ|P|²/max|P|² (floor ER_FLOOR), cut back
    at each member (computed for the group before shared members are folded into the batch);
    er_iterations K > 1 continues that error reduction of the group from the first step's canvas
    (physics.error_reduction_step(h, probe_model, rel, P, K)), forward only: the first step keeps its
    gradient as at K = 1, the later ones enter as a constant (their cost would grow K-fold in the
    backward pass, and they depend on no trained weight unless the probe is trained)
  er_solver 'raar' (with er): the value is instead physics.raar_iterates' K-th iterate (relaxed averaged
    alternating reflections on the members' exit waves), forward only in the same way: the gradient is
    the first error-reduction step's at any K, K = 1 included
  er_tolerance t (with er, K > 1): every modulus projection of the K-iteration solve keeps |Ψ| within the
    measured modulus ± t·SQRT_COUNT_STD √counts (physics.modulus_band; in h, ± t/2·exp(−log_scale));
    0 exact. The gradient stays the exact first step's
  er_residual (with er): the generator corrects that estimate instead of drawing the object from its
    decoder alone: amplitude = 2·σ(head_amp)·|1 + d|, phase = π·tanh(head_phase) + arg(1 + d), d the
    group estimate's member patch (a constant: no gradient). Zero heads give the estimate itself; the
    encoder-decoder's 8×8 bottleneck cannot carry the estimate's fine detail to its output, the
    shortcut can (needs amp_activation sigmoid and one patch per member)
  input_transform 'backprop': the generator sees [h, std(re d), std(im d)], d = physics.backpropagate(h,
    probe_model), std(·) = zero mean and unit variance per sample and channel (d's contrast is a few
    per cent of h's: unscaled, the first convolution would learn from it ~10× slower)
  cnn:
  encoder: per block [conv3×3 ReLU, conv3×3 ReLU, maxpool 2×2]          → (B, 8, 8, ·)
  for d in (amp, phase):
    g = h; per decoder block [conv3×3 ReLU, conv3×3 ReLU, nearest upsample ×2] → (B, N/2, N/2, 32f)
    pad_object (the reference's default):
    x1 = act_d(conv_head(g[..., :-4])), zero-padded by N/4 per side      → (B, N, N, C_out)
    if probe_big: x2 = [conv3×3 ReLU, conv3×3 ReLU, upsample ×2](g[..., -4:]);
                  x1 += swish(conv_border(x2)) · border_mask              (mask: 0 in the central N/2)
    pad_object=False (the full head): one more decoder block with 16f filters → (B, N, N, 16f),
    x1 = act_d(conv_head(g)) over the whole N×N patch (no border path; probe_big has no effect)
  act_amp = model.amp_activation; act_phase = π·tanh (every generator's heads)
  object O = A·exp(iφ) (B, N, N, C_out)
  canvas (B, P, P): object_big: Σ_c place(w·O_c, P//2 + rel_c) / Σ_c place(w, ·), a weighted mean
          of the members, w = 1 on the central N/2 square (where the padded head writes) and
          CANVAS_BORDER_WEIGHT outside it, w = 1 everywhere for a full head (division only
          where the denominator > 1e-6);
          else O placed at the centre
  trimmed_obj = canvas centre crop N; member patches = extract(canvas, P//2 + rel_c, N)
  ψ = probe_model · patch;  A = sqrt(fftshift(|FFT2 ψ|²)/N²);  pred_amp = A·exp(log_scale)
  pred_intensity = pred_amp²; loss = nll_weight·mean(I − counts·log(I + 1e-12))
                                     + mae_weight·mean|pred_amp − s·x|,   counts = (s·x)²
model_type 'supervised' (the original's supervised baseline): the same generator, trained on the true
  object patches T = |T|·exp(iθ) of the members (B, C, N, N), without the physics:
  loss = mean|(A − ⟨A⟩) − (|T| − ⟨|T|⟩)| + SUPERVISED_LEVEL_WEIGHT·mean|⟨A⟩ − ⟨|T|⟩|
         + mean|(φ − ⟨φ⟩) − (θ − ⟨θ⟩)|,  ⟨·⟩ the mean over each N×N patch.
  The phase is compared mean-free, since a patch's constant phase is invisible in its pattern (the
  evaluation's per-patch phase correlation is mean-free too). The amplitude's texture is compared
  mean-free and its level (per-patch mean) with a small weight: with the plain amplitude MAE the
  level term dominates early training through the shared trunk and the phase collapses to a
  constant (measured on the tiles recipe, docs/results.md, 'The supervised baseline's curves'). This assumes the true
  phase does not wrap inside a patch (the synthetic objects' phase spans [−π/2, π/2]). The canvas and
  physics still make the predictions, so evaluation is the same for both types.
All convs are 'same' padded, stride 1, with bias. `rel` are member positions minus the group
centre, (x, y) order, in pixels (data/grouping.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Optional

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
# model.model_type: pinn trains through the physics (the Poisson loss), supervised on the true patches.
MODEL_TYPES = ("pinn", "supervised")
# Weight of the amplitude's per-patch level in the supervised loss (texture and phase weigh 1): small,
# so that fitting the level cannot starve the phase (see the docstring above); non-zero, so the
# stitched amplitude still has the right level.
SUPERVISED_LEVEL_WEIGHT = 0.1
# model.generator: the network from patterns to object patches. The one list of generators; each
# backend builds `name` in its backends/<backend>/generators/<name>.py.
GENERATORS = ("cnn", "ffno", "unet")
# model.input_transform: what the generator sees of each pattern. none: the normalised amplitude h
# (the reference). backprop: h and the real and imaginary parts of physics.backpropagate(h, probe),
# the pattern carried back into the object patch's frame by one error-reduction step from a flat
# object with the model's probe (3 input channels per pattern; computed inside the model). er: the
# same channels from physics.error_reduction_step, one error-reduction step of the whole group on its
# canvas (members' evidence averaged where they overlap, divided by the probe intensity).
INPUT_TRANSFORMS = ("none", "backprop", "er")
ER_SOLVERS = ("er", "raar")  # model.er_solver: physics.error_reduction_iterates, physics.raar_iterates
AMP_ACTIVATIONS = ("sigmoid", "swish", "softplus", "relu")  # the amplitude head's activation (§5.1)
SUPPORTED_N = (64, 128)  # patch sizes the encoder/decoder filter tables cover
PROBE_NAME = "probe"
LOG_SCALE_NAME = "log_scale"
# Initial weights: drawn in architecture order (kernels HWIO) from this stream of `seed`.
INIT_STREAM = 0x9E3779B9
# The FFNO (reference §10): width, Fourier modes kept per axis (None: min(FFNO_MAX_MODES, N/4)),
# blocks sharing one spectral convolution, local residual refiners, the shared gate's start.
FFNO_WIDTH = 32
FFNO_MAX_MODES = 12
FFNO_BLOCKS = 4
FFNO_REFINERS = 2
FFNO_GATE_INIT = 0.1
INSTANCE_NORM_EPSILON = 1e-5
# The U-Net: channels at full resolution (doubling per level), levels above the N/2^levels bottleneck,
# and its heads' initial scale (a fraction of Glorot's): near-zero heads make er_residual start at the
# group's estimate itself (2·σ(0) = 1), yet pass a gradient to every layer from the first step.
UNET_WIDTH = 16
UNET_LEVELS = 3
UNET_HEAD_SCALE = 1e-2


@dataclass(frozen=True)
class Param:
    """One parameter: name, shape and how its initial value is made. `init`: 'glorot' (uniform in
    ±scale), 'normal' (std scale), both drawn from the seed's stream in architecture order; 'zeros';
    'constant' (= scale, no draw)."""
    name: str
    shape: tuple[int, ...]
    init: str
    scale: float = 0.0


@dataclass(frozen=True)
class Conv:
    """A 'same'-padded, stride-1 convolution with bias; kernel size × size (3 unless a 1×1); its
    Glorot-uniform kernel limit times `init_scale` (1 but for the U-Net's heads)."""
    name: str
    in_channels: int
    out_channels: int
    size: int = 3
    init_scale: float = 1.0

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {param.name: param.shape for param in self.params()}

    def params(self) -> list[Param]:
        """Glorot-uniform kernel (HWIO), zero bias."""
        k = self.size
        limit = self.init_scale * math.sqrt(6.0 / (k * k * (self.in_channels + self.out_channels)))
        return [Param(f"{self.name}/kernel", (k, k, self.in_channels, self.out_channels), "glorot", limit),
                Param(f"{self.name}/bias", (self.out_channels,), "zeros")]


@dataclass(frozen=True)
class SpectralConv:
    """The FFNO's factorised spectral convolution of `width` channels: along x, the first `modes`
    frequencies of each row's real DFT mixed by a learned complex (in, out) matrix per mode, back by
    the inverse real DFT (the modes above `modes` are zero); the same along y; the two summed.
    Weights `<name>/x`, `<name>/y`: (in, out, modes, 2) = (real, imaginary), normal with
    std = sqrt(1/(modes·(in + out))) (Xavier-normal of the complex mixing)."""
    name: str
    width: int
    modes: int

    def params(self) -> list[Param]:
        std = math.sqrt(1.0 / (self.modes * 2 * self.width))
        return [Param(f"{self.name}/{axis}", (self.width, self.width, self.modes, 2), "normal", std)
                for axis in ("x", "y")]


@dataclass(frozen=True)
class FfnoLayers:
    """The FFNO generator at constant resolution N×N (reference §10). For h (b, N, N, in):
      x = conv3×3(GELU(conv3×3(h)))                                   lift: in → w
      per block b: u = S(x) (one SpectralConv shared by every block); u = InstanceNorm(u) (no affine,
                   eps INSTANCE_NORM_EPSILON); u = conv1×1(GELU(conv1×1(u)))  w → 2w → w (per block);
                   x = x + g·u   (g: one scalar gate shared by the blocks, starts at FFNO_GATE_INIT)
      per refiner: x = x + conv3×3(GELU(conv3×3(x)))
      amplitude = act_amp(conv1×1(x)), phase = π·tanh(conv1×1(x))                   w → out each
    GELU is the exact (erf) form."""
    lift: list[Conv]
    spectral: SpectralConv
    blocks: list[list[Conv]]
    gate: Param
    refiners: list[list[Conv]]
    head_amp: Conv
    head_phase: Conv

    def params(self) -> list[Param]:
        """Architecture order: lift, spectral, block MLPs, refiners, heads, gate."""
        convs = [*(c for block in self.blocks for c in block), *(c for block in self.refiners for c in block),
                 self.head_amp, self.head_phase]
        return ([p for c in self.lift for p in c.params()] + self.spectral.params()
                + [p for c in convs for p in c.params()] + [self.gate])


@dataclass(frozen=True)
class UnetLayers:
    """The U-Net generator at N×N. For h (b, N, N, in), width w, L levels, B = [conv3×3 GELU, conv3×3 GELU]:
      e_0 = B(h)                                  in → w
      e_i = B(maxpool2×2(e_{i−1}))                w·2^(i−1) → w·2^i                 i = 1 … L−1
      d = B(maxpool2×2(e_{L−1}))                  the bottleneck (N/2^L), w·2^(L−1) channels
      d = B(concat(upsample2(d), e_i))            2·w·2^i → w·2^max(i−1, 0)         i = L−1 … 0
      amplitude = act_amp(conv1×1(d)), phase = π·tanh(conv1×1(d))                   w → out each
    upsample2 is nearest-neighbour; concat puts the upsampled channels first. The heads start near zero
    (UNET_HEAD_SCALE): with er_residual the generator then starts at the group's estimate."""
    encoder: list[list[Conv]]
    bottleneck: list[Conv]
    decoder: list[list[Conv]]  # from the deepest level (i = L−1) up to full resolution (i = 0)
    head_amp: Conv
    head_phase: Conv

    def params(self) -> list[Param]:
        """Architecture order: encoder, bottleneck, decoder, heads."""
        convs = [*(c for block in self.encoder for c in block), *self.bottleneck,
                 *(c for block in self.decoder for c in block), self.head_amp, self.head_phase]
        return [p for c in convs for p in c.params()]


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
    generator: str = "cnn"
    ffno_width: int = FFNO_WIDTH
    ffno_modes: Optional[int] = None  # None: min(FFNO_MAX_MODES, N/4)
    ffno_blocks: int = FFNO_BLOCKS
    unet_width: int = UNET_WIDTH
    input_transform: str = "none"
    er_iterations: int = 1
    er_residual: bool = False
    er_solver: str = "er"
    er_tolerance: float = 0.0

    def __post_init__(self):
        if self.input_transform not in INPUT_TRANSFORMS:
            raise ValueError(f"input_transform={self.input_transform!r}; expected one of {', '.join(INPUT_TRANSFORMS)}")
        if int(self.er_iterations) != self.er_iterations or self.er_iterations < 1:
            raise ValueError(f"er_iterations={self.er_iterations!r}; expected a positive integer")
        if self.er_solver not in ER_SOLVERS:
            raise ValueError(f"er_solver={self.er_solver!r}; expected one of {', '.join(ER_SOLVERS)}")
        if self.er_solver != "er" and self.input_transform != "er":
            raise ValueError(f"er_solver={self.er_solver!r} needs input_transform='er' (got {self.input_transform!r})")
        if not (math.isfinite(self.er_tolerance) and self.er_tolerance >= 0):
            raise ValueError(f"er_tolerance={self.er_tolerance!r}; expected a finite number ≥ 0 (0: the exact "
                             f"modulus projection)")
        if self.er_tolerance and (self.input_transform != "er" or self.er_iterations < 2):
            raise ValueError(f"er_tolerance={self.er_tolerance} widens the modulus projection of the group's iterated "
                             f"solve: needs input_transform='er' and er_iterations > 1")
        if self.er_iterations > 1 and self.input_transform != "er":
            raise ValueError(f"er_iterations={self.er_iterations} needs input_transform='er' "
                             f"(got {self.input_transform!r})")
        if self.er_residual and (self.input_transform != "er" or self.amp_activation != "sigmoid"
                                 or not self.object_big):
            raise ValueError("er_residual corrects each member's er estimate: needs input_transform='er', "
                             "amp_activation='sigmoid' and object_big=True")
        if self.generator not in GENERATORS:
            raise ValueError(f"generator={self.generator!r} is not a generator; expected one of "
                             + ", ".join(GENERATORS))
        if self.ffno_modes is None:
            object.__setattr__(self, "ffno_modes", min(FFNO_MAX_MODES, self.N // 4))
        if self.generator != "cnn" and self.pad_object:
            raise ValueError(f"the {self.generator} generator writes the whole N×N patch: needs pad_object=False "
                             "(pad_object=True is the cnn's padded head)")
        if self.generator == "ffno":
            if not 1 <= self.ffno_modes <= self.N // 2:
                raise ValueError(f"ffno_modes={self.ffno_modes}: expected 1 to N/2 = {self.N // 2} Fourier modes")
            if self.ffno_width < 1 or self.ffno_blocks < 1:
                raise ValueError(f"ffno_width={self.ffno_width} and ffno_blocks={self.ffno_blocks} must be positive")
        if self.generator == "unet" and self.unet_width < 1:
            raise ValueError(f"unet_width={self.unet_width} must be positive")
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
    def input_features(self) -> int:
        """Generator input channels per pattern: h, plus the transform's real and imaginary parts."""
        return 1 if self.input_transform == "none" else 3

    @property
    def network_in_channels(self) -> int:
        """Channels order: [h of every pattern, then re(d) of every pattern, then im(d) ...]."""
        return (1 if self.shared_members else self.channels) * self.input_features

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
        for the padded head (only the weak border path writes there), 1 for a full head (every generator
        but the cnn with pad_object writes the whole patch)."""
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

    def ffno(self) -> FfnoLayers:
        """The FFNO generator's layers (generator='ffno')."""
        w, name = self.ffno_width, "ffno"
        return FfnoLayers(
            lift=[Conv(f"{name}/lift/conv0", self.network_in_channels, w), Conv(f"{name}/lift/conv1", w, w)],
            spectral=SpectralConv(f"{name}/spectral", w, self.ffno_modes),
            blocks=[[Conv(f"{name}/block{i}/mlp0", w, 2 * w, 1), Conv(f"{name}/block{i}/mlp1", 2 * w, w, 1)]
                    for i in range(self.ffno_blocks)],
            gate=Param(f"{name}/gate", (), "constant", FFNO_GATE_INIT),
            refiners=[[Conv(f"{name}/refine{i}/conv0", w, w), Conv(f"{name}/refine{i}/conv1", w, w)]
                      for i in range(FFNO_REFINERS)],
            head_amp=Conv(f"{name}/head_amp", w, self.network_out_channels, 1),
            head_phase=Conv(f"{name}/head_phase", w, self.network_out_channels, 1))

    def unet(self) -> UnetLayers:
        """The U-Net generator's layers (generator='unet')."""
        w, name = self.unet_width, "unet"

        def block(prefix: str, channels_in: int, channels_out: int) -> list[Conv]:
            return [Conv(f"{prefix}/conv0", channels_in, channels_out), Conv(f"{prefix}/conv1", channels_out, channels_out)]

        encoder, channels = [], self.network_in_channels
        for i in range(UNET_LEVELS):
            encoder.append(block(f"{name}/encoder{i}", channels, w * 2 ** i))
            channels = w * 2 ** i
        decoder = []
        for i in reversed(range(UNET_LEVELS)):
            decoder.append(block(f"{name}/decoder{i}", 2 * w * 2 ** i, w * 2 ** max(i - 1, 0)))
        out = self.network_out_channels
        return UnetLayers(encoder=encoder, bottleneck=block(f"{name}/bottleneck", channels, channels), decoder=decoder,
                          head_amp=Conv(f"{name}/head_amp", w, out, 1, UNET_HEAD_SCALE),
                          head_phase=Conv(f"{name}/head_phase", w, out, 1, UNET_HEAD_SCALE))

    def generator_params(self) -> list[Param]:
        """The generator's parameters in architecture order (the order initial values are drawn in)."""
        if self.generator == "ffno":
            return self.ffno().params()
        if self.generator == "unet":
            return self.unet().params()
        return [param for conv in self.convs() for param in conv.params()]

    def convs(self) -> list[Conv]:
        """The cnn generator's convolutions, in architecture order."""
        out = [conv for block in self.encoder() for conv in block]
        for branch in ("amp", "phase"):
            layers = self.decoder(branch)
            out += [conv for block in layers["blocks"] for conv in block] + [layers["head"]]
            if self.border_path:
                out += layers["border_block"] + [layers["border_out"]]
        return out

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of the bundle: conv kernels/biases, log_scale, the model probe (complex)."""
        shapes = {param.name: param.shape for param in self.generator_params()}
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
        out = {"N": self.N, "gridsize": self.gridsize, "n_filters_scale": self.n_filters_scale,
               "object_big": self.object_big, "probe_big": self.probe_big,
               "amp_activation": self.amp_activation, "padded_size": self.padded_size,
               "member_encoding": self.member_encoding, "pad_object": self.pad_object,
               "generator": self.generator}
        if self.generator == "ffno":
            out.update(ffno_width=self.ffno_width, ffno_modes=self.ffno_modes, ffno_blocks=self.ffno_blocks)
        if self.generator == "unet":
            out["unet_width"] = self.unet_width
        if self.input_transform != "none":
            out["input_transform"] = self.input_transform
        if self.er_iterations != 1:
            out["er_iterations"] = self.er_iterations
        if self.er_residual:
            out["er_residual"] = True
        if self.er_solver != "er":
            out["er_solver"] = self.er_solver
        if self.er_tolerance:
            out["er_tolerance"] = self.er_tolerance
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Geometry":
        """The geometry a bundle's manifest records (`to_dict`). Bundles written before
        member_encoding existed used the reference's stacking, those before pad_object the padded head,
        those before generator the cnn, those before input_transform none, those before er_iterations
        one iteration, those before er_residual none, those before er_solver error reduction, those before
        er_tolerance the exact modulus projection (the fields' defaults)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def canvas_weight(n: int, border_weight: float = CANVAS_BORDER_WEIGHT) -> np.ndarray:
    """(n, n) float32: 1 on the central n/2 square (where the object head writes), border_weight outside."""
    weight = np.full((n, n), border_weight, dtype=np.float32)
    q = n // 4
    weight[q:n - q, q:n - q] = 1.0
    return weight


def initial_weights(geometry: Geometry, seed: int, intensity_scale: float, probe: np.ndarray) -> dict[str, np.ndarray]:
    """Every parameter's initial value, the same for every backend: the generator's Params drawn in
    architecture order from NumPy stream [seed, INIT_STREAM] (Glorot-uniform kernels HWIO, zero biases,
    ...), log_scale = ln(intensity_scale), and the network probe. Architecture order and names,
    float32/complex64."""
    if not intensity_scale > 0:
        raise ValueError(f"intensity_scale must be positive, got {intensity_scale}")
    rng = np.random.default_rng([int(seed), INIT_STREAM])
    weights: dict[str, np.ndarray] = {}
    for param in geometry.generator_params():
        if param.init == "glorot":
            value = rng.uniform(-param.scale, param.scale, size=param.shape)
        elif param.init == "normal":
            value = rng.normal(0.0, param.scale, size=param.shape)
        elif param.init == "constant":
            value = np.full(param.shape, param.scale)
        else:
            value = np.zeros(param.shape)
        weights[param.name] = np.asarray(value, dtype=np.float32)
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


def spectral_basis(n: int, modes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The truncated real DFT of length n and its inverse as matrices (float32), for SpectralConv:
    for a signal v (…, n): Re X = v @ fc, Im X = v @ fs (X_k = Σ_j v_j e^{−2πi jk/n}, k < modes), and
    irfft of X zero above `modes` = Re X @ ic + Im X @ is_. Both backends use these matmuls (the same
    sums as an rFFT/irFFT pair restricted to the kept modes, and cheaper than full FFTs for modes ≪ n;
    modes ≤ n/2 so the Nyquist bin is never kept)."""
    if not 1 <= modes <= n // 2:
        raise ValueError(f"modes={modes}: expected 1 to n/2 = {n // 2}")
    angle = 2 * np.pi * np.outer(np.arange(n), np.arange(modes)) / n  # (n, modes)
    weight = np.where(np.arange(modes) == 0, 1.0, 2.0) / n  # irfft: DC once, ±k twice
    forward_cos, forward_sin = np.cos(angle), -np.sin(angle)
    inverse_cos, inverse_sin = (np.cos(angle) * weight).T, (-np.sin(angle) * weight).T
    return tuple(m.astype(np.float32) for m in (forward_cos, forward_sin, inverse_cos, inverse_sin))
