"""PtychoPINN as a torch nn.Module: exactly the forward pass of architecture.py (the generator: generators/).

Channels-first internally (NCHW tensors, channels_last in memory by default); the Model
boundary (adapter.py) converts from/to the NHWC NumPy arrays of the backend contract. Conv
weights stay in torch's OIHW layout here; only adapter.py converts to the HWIO bundle layout.

The physics layers follow physics.py: a patch of size n "centred at" c takes pixel n//2 from
coordinate c, bilinear, zero outside. A member's patch reads an (n+1)² window of the canvas
at an integer corner plus a 2-tap interpolation per axis: extraction is one gather of all
windows and two lerps, placement its exact adjoint (spread, one scatter-add) — the same
result as physics.py's separable sampling matrices without their dense matmuls. Complex values
travel as separate real/imaginary planes; only the far field uses a complex FFT.

Nothing is built at import time: every module is created by `PtychoPINN(...)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from fly64_train import architecture, physics
from fly64_train.architecture import COVERAGE_EPSILON, NLL_EPSILON, SUPERVISED_LEVEL_WEIGHT
from fly64_train.backends.base import ModelSpec
from fly64_train.backends.pytorch import generators

AMP_ACTIVATIONS = {  # architecture.AMP_ACTIVATIONS
    "sigmoid": torch.sigmoid,
    "swish": F.silu,
    "softplus": F.softplus,
    "relu": F.relu,
}


# ----------------------------------------------------------------------------------------------
# Physics layers (pure functions on tensors; physics.py is the reference).

@dataclass(frozen=True)
class MemberWindows:
    """Where every member's n×n patch lies on a size×size canvas (physics.py's convention).

    Patch pixel i of a member centred at coordinate c samples c − n//2 + i; with
    c − n//2 = start + frac (start an integer, 0 ≤ frac < 1) bilinear sampling reads canvas
    pixels start + i and start + i + 1 with weights 1 − frac and frac. All tensors (B, C).
    """
    row_start: torch.Tensor  # int64
    col_start: torch.Tensor  # int64
    row_frac: torch.Tensor  # float
    col_frac: torch.Tensor  # float
    n: int
    size: int

    @property
    def margin(self) -> int:
        """Pixels the (n+1)² windows reach outside the canvas (0 when the canvas holds them all)."""
        low = -int(torch.minimum(self.row_start.min(), self.col_start.min()))
        high = int(torch.maximum(self.row_start.max(), self.col_start.max())) + self.n + 1 - self.size
        return max(0, low, high)

    def flat_index(self, margin: int, planes: int) -> torch.Tensor:
        """Indices of every window pixel in a flattened (planes, B, S, S) canvas, S = size + 2·margin,
        ordered (plane, b, c, i, j) with i, j ∈ [0, n]."""
        batch, members = self.row_start.shape
        side = self.size + 2 * margin
        span = torch.arange(self.n + 1)
        rows = (self.row_start + margin).unsqueeze(-1) + span  # (B, C, n+1)
        cols = (self.col_start + margin).unsqueeze(-1) + span
        base = (torch.arange(batch) * side * side).view(batch, 1, 1, 1)
        index = base + rows.unsqueeze(-1) * side + cols.unsqueeze(-2)  # (B, C, n+1, n+1)
        offsets = (torch.arange(planes) * batch * side * side).view(planes, 1, 1, 1, 1)
        return (offsets + index).reshape(-1)


def member_windows(rel: torch.Tensor, n: int, size: int, dtype: torch.dtype = torch.float32) -> MemberWindows:
    """Windows of members centred at size//2 + rel (rel (B, C, 2) in (x, y) pixels) on the canvas.
    Positions are resolved in float64 (as the NumPy reference), the weights cast to `dtype`."""
    corner = rel.to(torch.float64) + float(size // 2 - n // 2)
    start = torch.floor(corner)
    frac = (corner - start).to(dtype)
    start = start.to(torch.int64)
    return MemberWindows(row_start=start[..., 1], col_start=start[..., 0], row_frac=frac[..., 1],
                         col_frac=frac[..., 0], n=n, size=size)


def extract_members(canvas: torch.Tensor, windows: MemberWindows) -> torch.Tensor:
    """Bilinear member patches (B, C, K, n, n) of a canvas (B, K, P, P) (K real planes): one gather of
    every member's (n+1)² window, then two 2-tap interpolations (physics.extract, batched)."""
    batch, planes, size, _ = canvas.shape
    members, n = windows.row_start.shape[1], windows.n
    margin = windows.margin
    source = canvas.transpose(0, 1)  # (K, B, P, P)
    if margin:
        source = F.pad(source, (margin, margin, margin, margin))
    window = source.reshape(-1).index_select(0, windows.flat_index(margin, planes))
    window = window.view(planes, batch, members, n + 1, n + 1)
    fy = windows.row_frac.view(1, batch, members, 1, 1)
    fx = windows.col_frac.view(1, batch, members, 1, 1)
    rows = torch.lerp(window[..., :-1, :], window[..., 1:, :], fy)  # (K, B, C, n, n+1)
    patches = torch.lerp(rows[..., :-1], rows[..., 1:], fx)  # (K, B, C, n, n)
    return patches.permute(1, 2, 0, 3, 4)


def member_object(delta: torch.Tensor, windows: MemberWindows) -> torch.Tensor:
    """Each member's patch of the object 1 + delta, delta = O − 1 (B, 2, P, P) → complex (B, C, N, N)."""
    patch = extract_members(delta, windows)  # (B, C, 2, N, N)
    return torch.complex(1.0 + patch[:, :, 0], patch[:, :, 1])


def place_members(parts: torch.Tensor, windows: MemberWindows) -> torch.Tensor:
    """Complex member patches (B, C, N, N) summed on the group canvas as (re, im) (B, 2, P, P)."""
    return place_sum(torch.stack((parts.real, parts.imag), dim=2), windows)


def modulus_projection(wave: torch.Tensor, measured: torch.Tensor, band: Optional[torch.Tensor] = None) -> torch.Tensor:
    """physics: the exit waves (B, C, N, N) given the measured far-field modulus (unshifted, FFT scale);
    with a band, physics.modulus_band's target (|Ψ| kept within measured ± band)."""
    spectrum = torch.fft.fft2(wave)
    magnitude = spectrum.abs()
    floor = torch.maximum(magnitude, physics.BACKPROP_FLOOR * magnitude.amax(dim=(-2, -1), keepdim=True))
    target = measured if band is None else torch.minimum(
        torch.maximum(magnitude, torch.clamp(measured - band, min=0.0)), measured + band)
    return torch.fft.ifft2(target * spectrum / floor)


def projection_terms(h: torch.Tensor, probe: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The group solvers' constants: the measured modulus |FFT ψ| (unshifted, FFT scale) of the
    amplitudes h (B, C, N, N), and 1/max|P|² (the corrections' scale, as physics)."""
    return torch.fft.ifftshift(h, dim=(-2, -1)) * float(n), 1.0 / probe.abs().square().max()


def band_width(tolerance: float, log_scale: torch.Tensor, n: int) -> Optional[torch.Tensor]:
    """The noise band of model.er_tolerance in the measured modulus' FFT scale (None: exact projection):
    √counts = h·exp(log_scale), so tolerance·SQRT_COUNT_STD √counts are that over exp(log_scale) in h."""
    if not tolerance:
        return None
    return tolerance * physics.SQRT_COUNT_STD * float(n) * torch.exp(-log_scale.detach())


def place_sum(parts: torch.Tensor, windows: MemberWindows) -> torch.Tensor:
    """Σ_c place(parts_c) for parts (B, C, K, n, n) → canvas (B, K, P, P): the exact adjoint of
    extract_members (bilinear splatting, physics.place): spread each patch over its (n+1)² window,
    then one scatter-add of all windows into the canvas."""
    batch, members, planes, n, _ = parts.shape
    size = windows.size
    margin = windows.margin
    fy = windows.row_frac.view(1, batch, members, 1, 1)
    fx = windows.col_frac.view(1, batch, members, 1, 1)
    p = parts.permute(2, 0, 1, 3, 4)  # (K, B, C, n, n)
    cols = F.pad(p * (1 - fx), (0, 1)) + F.pad(p * fx, (1, 0))  # (K, B, C, n, n+1)
    window = F.pad(cols * (1 - fy), (0, 0, 0, 1)) + F.pad(cols * fy, (0, 0, 1, 0))  # (K, B, C, n+1, n+1)
    side = size + 2 * margin
    canvas = parts.new_zeros(planes * batch * side * side).index_add(
        0, windows.flat_index(margin, planes), window.reshape(-1))
    canvas = canvas.view(planes, batch, side, side)
    if margin:
        canvas = canvas[..., margin:margin + size, margin:margin + size]
    return canvas.transpose(0, 1)


def coverage(windows: MemberWindows, dtype: torch.dtype = torch.float32, inset: int = 0) -> torch.Tensor:
    """Σ_c place(S, c): (B, P, P), S the n×n patch with ones on its central (n − 2·inset)² square
    and zeros around it, = Σ_c outer(row profile_c, column profile_c), where a profile is place
    of the 1-D indicator: 1 − frac at its first sample, 1 inside, frac one past its last."""
    k = torch.arange(windows.size).view(1, 1, -1)
    length = windows.n - 2 * inset

    def profile(start: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
        start = start.unsqueeze(-1) + inset
        frac = frac.unsqueeze(-1).to(dtype)
        inside = ((k > start) & (k < start + length)).to(dtype)
        return inside + (k == start).to(dtype) * (1 - frac) + (k == start + length).to(dtype) * frac

    rows = profile(windows.row_start, windows.row_frac)  # (B, C, P)
    cols = profile(windows.col_start, windows.col_frac)
    return torch.bmm(rows.transpose(1, 2), cols)


def weighted_mean_canvas(parts: torch.Tensor, windows: MemberWindows, weight: torch.Tensor,
                         border_weight: float) -> torch.Tensor:
    """Σ_c place(w·parts_c) / Σ_c place(w) (B, K, P, P) for parts (B, C, K, n, n), where
    w = `weight` (1 on the central n/2 square, border_weight outside it; architecture.py);
    the denominator is separable: ε·coverage + (1 − ε)·centre coverage."""
    total = place_sum(parts * weight, windows)
    cover = (border_weight * coverage(windows, parts.dtype)
             + (1.0 - border_weight) * coverage(windows, parts.dtype, inset=windows.n // 4))
    return total / torch.where(cover > COVERAGE_EPSILON, cover, torch.ones_like(cover)).unsqueeze(1)


def centre_crop(canvas: torch.Tensor, n: int) -> torch.Tensor:
    """The n×n window whose pixel n//2 is the canvas pixel P//2 (an integer-centred extract)."""
    size = canvas.shape[-1]
    start = size // 2 - n // 2
    return canvas[..., start:start + n, start:start + n]


def pad_to_centre(patch: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad n×n planes onto a size×size canvas so pixel n//2 lands at size//2 (place at P//2)."""
    n = patch.shape[-1]
    before = size // 2 - n // 2
    after = size - n - before
    return F.pad(patch, (before, after, before, after))


def far_field_power(real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
    """fftshift(|FFT2 ψ|²) / N² over the last two axes of ψ = real + i·imag (float32)."""
    n_pixels = real.shape[-1] * real.shape[-2]
    spectrum = torch.view_as_real(torch.fft.fft2(torch.complex(real, imag)))
    power = spectrum.square().sum(dim=-1)
    return torch.fft.fftshift(power, dim=(-2, -1)) / n_pixels


def backpropagate(h: torch.Tensor, probe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """physics.backpropagate for amplitudes h (b, k, N, N) and the complex probe (N, N): re, im of d."""
    n = probe.shape[-1]
    spectrum = torch.fft.fftshift(torch.fft.fft2(probe)) / n
    magnitude = spectrum.abs()
    unit = spectrum / torch.clamp(magnitude, min=physics.BACKPROP_FLOOR * float(magnitude.max()))
    field = torch.fft.ifft2(torch.fft.ifftshift(h.contiguous() * unit, dim=(-2, -1))) * n
    d = probe.conj() * (field - probe) / probe.abs().square().max()
    return d.real, d.imag


def instance_norm(x: torch.Tensor) -> torch.Tensor:
    """Per sample and channel over the image (the last two axes), no affine: zero mean, unit variance."""
    variance, mean = torch.var_mean(x, dim=(-2, -1), keepdim=True, correction=0)
    return (x - mean) * torch.rsqrt(variance + architecture.INSTANCE_NORM_EPSILON)


class _SafeSqrt(torch.autograd.Function):
    """sqrt with a finite gradient at 0 (0.5/max(√x, 1e-12)); the forward is torch.sqrt."""

    @staticmethod
    def forward(ctx, value: torch.Tensor) -> torch.Tensor:
        root = torch.sqrt(value)
        ctx.save_for_backward(root)
        return root

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (root,) = ctx.saved_tensors
        return grad * 0.5 / torch.clamp_min(root, 1e-12)


def safe_sqrt(value: torch.Tensor) -> torch.Tensor:
    return _SafeSqrt.apply(value)


def far_field_amplitude(real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
    """A = sqrt(fftshift(|FFT2 ψ|²) / N²) (physics.far_field_amplitude)."""
    return safe_sqrt(far_field_power(real, imag))


# ----------------------------------------------------------------------------------------------
# The network.

_TAP_OFFSETS = [divmod(tap, 3) for tap in range(9)]  # (dy, dx) of kernel tap t = 3·dy + dx


class _ShiftedTapSum2x(torch.autograd.Function):
    """out[b, o, i, j] = Σ_t up(taps)[b, t, o, i + dy_t − 1, j + dx_t − 1] (zero outside) for taps
    (B, 9, C, h, w), up = nearest upsampling ×2: the tap-summing half of a 3×3 'same' convolution
    of an upsampled input, computed without materialising the upsampled taps.

    With Z on a (2h + 2)² grid, every tap is added into one stride-2 sub-grid of Z (tap (dy, dx)
    at rows 2a + 2 − dy, columns 2b + 2 − dx), and out is the 2×2 box sum of Z. The backward is
    the exact adjoint: the 2×2 box sum of the padded gradient, read back at the same sub-grids.
    """

    @staticmethod
    def _subgrid(grid: torch.Tensor, dy: int, dx: int, h: int, w: int) -> torch.Tensor:
        """The (B, C, h, w) stride-2 view of grid (B, C, 2h + 2, 2w + 2) holding tap (dy, dx)."""
        batch, channels = grid.shape[:2]
        cells = grid.view(batch, channels, h + 1, 2, w + 1, 2)
        rows, row_parity = _SUBGRID[dy]
        cols, col_parity = _SUBGRID[dx]
        return cells[:, :, rows(h), row_parity, cols(w), col_parity]

    @staticmethod
    def forward(ctx, taps: torch.Tensor) -> torch.Tensor:
        batch, _, channels, h, w = taps.shape
        height, width = 2 * h, 2 * w
        grid = taps.new_zeros(batch, channels, height + 2, width + 2)
        for tap, (dy, dx) in enumerate(_TAP_OFFSETS):
            _ShiftedTapSum2x._subgrid(grid, dy, dx, h, w).add_(taps[:, tap])
        out = grid[:, :, 1:height + 1, 1:width + 1] + grid[:, :, :height, 1:width + 1]
        out += grid[:, :, 1:height + 1, :width]
        out += grid[:, :, :height, :width]
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = grad_out.shape
        h, w = height // 2, width // 2
        padded = F.pad(grad_out, (1, 2, 1, 2))  # (B, C, H + 3, W + 3)
        box = padded[:, :, :-1, :-1] + padded[:, :, 1:, :-1]
        box += padded[:, :, :-1, 1:]
        box += padded[:, :, 1:, 1:]  # (B, C, H + 2, W + 2)
        return torch.stack([_ShiftedTapSum2x._subgrid(box, dy, dx, h, w) for dy, dx in _TAP_OFFSETS], dim=1)


# Kernel offset d ∈ {0, 1, 2} → (cell rows as a function of h, parity) of grid rows 2a + 2 − d.
_SUBGRID = {0: (lambda n: slice(1, n + 1), 0), 1: (lambda n: slice(0, n), 1), 2: (lambda n: slice(0, n), 0)}


def upsampled_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv3×3 'same'(nearest-upsample×2(x)) for a conv with few output channels (the border head).

    A 3×3 convolution is a per-pixel channel projection onto 9·C_out tap planes followed by
    summing the taps shifted by their offsets; the projection commutes with nearest upsampling, so
    it runs at the input resolution, and the shifted sum of the upsampled taps is done without
    upsampling them (_ShiftedTapSum2x). For C_out ≤ 4 this is several times faster than
    oneDNN's convolution of the wide upsampled input (64 → 1..4 channels at N×N), forward and
    backward. Same sums as the convolution, in another order.
    """
    out_channels, in_channels = weight.shape[:2]
    projection = weight.permute(1, 2, 3, 0).reshape(in_channels, 9 * out_channels)  # [c, (dy, dx, o)]
    taps = torch.matmul(x.permute(0, 2, 3, 1), projection)  # (B, h, w, 9·C_out)
    batch, h, w, _ = taps.shape
    taps = taps.permute(0, 3, 1, 2).contiguous().view(batch, 9, out_channels, h, w)
    return _ShiftedTapSum2x.apply(taps) + bias.view(1, -1, 1, 1)


class PtychoPINN(nn.Module):
    """Network + physics for one Geometry. Inputs channels-first: x (B, C, N, N), rel (B, C, 2)."""

    def __init__(self, spec: ModelSpec, channels_last: bool = True):
        super().__init__()
        geometry, training = spec.geometry, spec.training
        self.geometry = geometry
        self.input_scale = spec.intensity_scale
        self.nll_weight = float(training.nll_weight)
        self.mae_weight = float(training.mae_weight)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

        self.generator = generators.build(geometry, self.memory_format)

        # Values are loaded by the model (architecture.initial_weights, or a bundle's weights).
        self.log_scale = nn.Parameter(torch.zeros((), dtype=torch.float32),
                                      requires_grad=bool(training.intensity_scale_trainable))
        self.probe = nn.Parameter(torch.zeros((geometry.N, geometry.N), dtype=torch.complex64),
                                  requires_grad=bool(training.probe_trainable))
        self.register_buffer("canvas_weight", torch.from_numpy(geometry.canvas_weight()), persistent=False)
        self.to(memory_format=self.memory_format)

    def object_planes(self, x: torch.Tensor, rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Amplitude and phase heads (B, C_out, N, N) for normalised amplitudes x (B, C, N, N), rel (B, C, 2)."""
        geometry = self.geometry
        features, scale, estimate = self.generator_input(x, rel)  # (B, k·C, N, N): [h …, re d …, im d …]
        if geometry.shared_members:
            # every member through the single-pattern network: members folded into the batch
            batch, _, n, _ = features.shape
            members, k = geometry.channels, geometry.input_features
            folded = features.reshape(batch, k, members, n, n).transpose(1, 2).reshape(batch * members, k, n, n)
            amp, phase = self.generator(folded.contiguous(memory_format=self.memory_format), scale)
            amp, phase = amp.view(batch, members, n, n), phase.view(batch, members, n, n)
        else:
            amp, phase = self.generator(features, scale)
        if geometry.er_residual:  # the heads correct the group's error-reduction estimate 1 + d (architecture.py)
            real, imag = estimate[0].detach(), estimate[1].detach()  # data: no gradient
            amp = 2.0 * amp * torch.sqrt(torch.square(1.0 + real) + torch.square(imag))
            phase = phase + torch.atan2(imag, 1.0 + real)
        return amp, phase

    def generator_input(self, x: torch.Tensor, rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, object]:
        """The generator's input (B, k·C, N, N), the scale its first kernel applies, and with er_residual
        the group estimate's d = O − 1 per member (re, im, each (B, C, N, N); else None)."""
        # h = (x·s)/exp(log_scale): without a transform the generator applies the scale to its first
        # kernel (the same product, reassociated): no pass over x, no gradient for x.
        scale = self.input_scale * torch.exp(-self.log_scale)
        if self.geometry.input_transform == "none":
            return x, scale, None
        h = x * scale
        real, imag = backpropagate(h, self.probe)  # (B, C, N, N)
        if self.geometry.input_transform == "er":
            real, imag = self.group_step(real, imag, rel, h)
        features = torch.cat((h, instance_norm(real), instance_norm(imag)), dim=1)
        return (features.contiguous(memory_format=self.memory_format), torch.ones((), dtype=h.dtype),
                (real, imag) if self.geometry.er_residual else None)

    def group_step(self, real: torch.Tensor, imag: torch.Tensor, rel: torch.Tensor,
                   h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """physics.error_reduction_step(h, probe, rel, P, er_iterations) from the members' backprop images
        and amplitudes h (B, C, N, N)."""
        windows = member_windows(rel, self.geometry.N, self.geometry.padded_size, real.dtype)
        total = place_sum(torch.stack((real, imag), dim=2), windows)  # (B, 2, P, P)
        weight = self.probe.abs().square()
        weight = weight / weight.max()
        coverage = place_sum(weight.expand_as(real).unsqueeze(2), windows)  # (B, 1, P, P)
        cover = torch.clamp(coverage, min=physics.ER_FLOOR)
        delta = total / cover  # O − 1 after the first step (B, 2, P, P)
        # forward only (architecture.py): the later steps' value (or RAAR's), the first's gradient
        if self.geometry.er_solver == "raar":
            with torch.no_grad():
                later = self.raar(h.detach(), windows, coverage.detach())
            delta = delta + (later - delta.detach())
        elif self.geometry.er_iterations > 1:
            with torch.no_grad():
                later = self.error_reduction(delta.detach(), h.detach(), windows, cover.detach())
            delta = delta + (later - delta.detach())
        members = extract_members(delta, windows)  # (B, C, 2, N, N)
        return members[:, :, 0], members[:, :, 1]

    def error_reduction(self, delta: torch.Tensor, h: torch.Tensor, windows: MemberWindows,
                        cover: torch.Tensor) -> torch.Tensor:
        """Iterations 2..K of physics.error_reduction_step on the canvas increment delta = O − 1 (B, 2, P, P)
        after the first (exact) step; with a noise band all K from O = 1, the first within the band too."""
        probe = self.probe.detach()
        measured, inverse_peak = projection_terms(h, probe, self.geometry.N)
        band = band_width(self.geometry.er_tolerance, self.log_scale, self.geometry.N)
        steps = self.geometry.er_iterations - 1
        if band is not None:
            delta, steps = torch.zeros_like(delta), steps + 1
        for _ in range(steps):
            wave = probe * member_object(delta, windows)
            correction = probe.conj() * (modulus_projection(wave, measured, band) - wave) * inverse_peak
            delta = delta + place_members(correction, windows) / cover
        return delta

    def raar(self, h: torch.Tensor, windows: MemberWindows, coverage: torch.Tensor) -> torch.Tensor:
        """physics.raar_iterates' K-th iterate as the canvas increment O − 1 (B, 2, P, P); coverage
        Σ|P_c|²/max|P|² (B, 1, P, P)."""
        probe = self.probe.detach()
        measured, inverse_peak = projection_terms(h, probe, self.geometry.N)
        band = band_width(self.geometry.er_tolerance, self.log_scale, self.geometry.N)
        cover = torch.clamp(coverage, min=physics.RAAR_FLOOR)
        beta = physics.RAAR_BETA

        def splat(waves):  # the members' least-squares object O − 1 on the canvas
            return place_members(probe.conj() * (waves - probe) * inverse_peak, windows) / cover

        wave = probe.expand(measured.shape)  # ψ_0 = P: the flat object
        for _ in range(self.geometry.er_iterations - 1):
            fitted = modulus_projection(wave, measured, band)
            overlap = probe * member_object(splat(2.0 * fitted - wave), windows)
            wave = beta * (wave + overlap - fitted) + (1.0 - beta) * fitted
        return splat(modulus_projection(wave, measured, band))

    # -- physics ----------------------------------------------------------------------------------
    def canvas_and_patches(self, amp: torch.Tensor, phase: torch.Tensor,
                           rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Object O = A·exp(iφ) → canvas (B, 2, P, P) and member patches (B, C, 2, N, N) (re, im)."""
        geometry = self.geometry
        size = geometry.padded_size
        obj = torch.stack((amp * torch.cos(phase), amp * torch.sin(phase)), dim=2)  # (B, C_out, 2, N, N)
        windows = member_windows(rel, geometry.N, size, amp.dtype)
        if geometry.object_big:
            canvas = weighted_mean_canvas(obj, windows, self.canvas_weight, geometry.canvas_border_weight)
        else:
            canvas = pad_to_centre(obj[:, 0], size)
        return canvas, extract_members(canvas, windows)

    def diffraction(self, patches: torch.Tensor) -> torch.Tensor:
        """Far-field power fftshift(|FFT2(probe · patch)|²)/N² (B, C, N, N) of patches (B, C, 2, N, N)."""
        pr, pi = self.probe.real, self.probe.imag
        re, im = patches[:, :, 0], patches[:, :, 1]
        return far_field_power(pr * re - pi * im, pr * im + pi * re)

    def forward(self, x: torch.Tensor, rel: torch.Tensor) -> dict[str, torch.Tensor]:
        """Full pass: trimmed (B, 2, N, N), patches (B, C, 2, N, N), amplitude (B, C, N, N)."""
        amp, phase = self.object_planes(x, rel)
        canvas, patches = self.canvas_and_patches(amp, phase, rel)
        power = self.diffraction(patches)
        amplitude = safe_sqrt(power) * torch.exp(self.log_scale)
        return {"trimmed": centre_crop(canvas, self.geometry.N), "patches": patches,
                "amplitude": amplitude}

    def supervised_loss(self, x: torch.Tensor, rel: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """Amplitude texture + weighted level + mean-free phase MAE against truth (B, C, 2, N, N) = (|T|, θ)
        (architecture.py)."""
        amp, phase = self.object_planes(x, rel)  # (B, C, N, N)

        def level(t: torch.Tensor) -> torch.Tensor:
            return t.mean(dim=(-2, -1), keepdim=True)

        amp_error = amp - truth[:, :, 0]
        phase_error = phase - truth[:, :, 1]
        return (torch.mean(torch.abs(amp_error - level(amp_error)))
                + SUPERVISED_LEVEL_WEIGHT * torch.mean(torch.abs(level(amp_error)))
                + torch.mean(torch.abs(phase_error - level(phase_error))))

    def loss(self, x: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """nll_weight·mean(I − counts·log(I + ε)) + mae_weight·mean|pred_amp − s·x|, counts = (s·x)²."""
        amp, phase = self.object_planes(x, rel)
        _, patches = self.canvas_and_patches(amp, phase, rel)
        power = self.diffraction(patches)
        target = x * self.input_scale
        total: Optional[torch.Tensor] = None  # at least one weight is non-zero (checked at build)
        if self.nll_weight:
            intensity = power * torch.exp(2.0 * self.log_scale)  # = pred_amp², without sqrt
            nll = torch.mean(intensity - target.square() * torch.log(intensity + NLL_EPSILON))
            total = self.nll_weight * nll
        if self.mae_weight:
            amplitude = safe_sqrt(power) * torch.exp(self.log_scale)
            mae = self.mae_weight * torch.mean(torch.abs(amplitude - target))
            total = mae if total is None else total + mae
        return total

