"""NumPy reference forward model of ptychography: the one definition every other piece matches.

Conventions (shared by the simulator, both backends and evaluation):
- Images are indexed [row, col] = [y, x]; positions are (x, y) in pixels of the larger image.
- A patch of size N "centred at" c takes pixel N//2 from coordinate c: out[i] = img(c − N//2 + i),
  sampled bilinearly, zero outside the image. `extract` does this; `place` is its exact adjoint
  (bilinear splatting), used to put patches back onto a canvas.
- Far field: A = sqrt(fftshift(|FFT2 ψ|²) / N²), so Σ A² = Σ |ψ|² (Parseval).
- Dose: expected total counts per pattern, on average over the dataset, equal the dose.
"""
from __future__ import annotations

import itertools
from typing import Iterator, Optional

import numpy as np
import scipy.fft


def sampling_matrix(centres: np.ndarray, n_out: int, n_in: int, dtype=np.float32) -> np.ndarray:
    """Bilinear sampling rows: R[b, i, k] weights input sample k for output i = centres[b] − n_out//2 + i.

    Shape (B, n_out, n_in). `R @ v` samples a 1-D signal; rows leaving the input are zero.
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1)
    coords = centres[:, None] - n_out // 2 + np.arange(n_out)[None, :]
    lower = np.floor(coords)
    frac = coords - lower
    lower = lower.astype(np.int64)
    matrix = np.zeros((centres.size, n_out, n_in), dtype=np.float64)
    b_idx, i_idx = np.meshgrid(np.arange(centres.size), np.arange(n_out), indexing="ij")
    for shift, weight in ((0, 1.0 - frac), (1, frac)):
        k = lower + shift
        inside = (k >= 0) & (k < n_in)
        np.add.at(matrix, (b_idx[inside], i_idx[inside], k[inside]), weight[inside])
    return matrix.astype(dtype)


def extract(image: np.ndarray, centres_xy: np.ndarray, n_out: int) -> np.ndarray:
    """Patches (B, n_out, n_out) of `image` (H, W) or per-sample images (B, H, W) centred at (x, y)."""
    centres_xy = np.asarray(centres_xy, dtype=np.float64).reshape(-1, 2)
    height, width = image.shape[-2:]
    rows = sampling_matrix(centres_xy[:, 1], n_out, height)
    cols = sampling_matrix(centres_xy[:, 0], n_out, width)
    return rows @ image @ np.swapaxes(cols, -1, -2)


def place(patches: np.ndarray, centres_xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Adjoint of `extract`: splat patches (B, n, n) onto canvases of `shape`, centred at (x, y)."""
    centres_xy = np.asarray(centres_xy, dtype=np.float64).reshape(-1, 2)
    n = patches.shape[-1]
    rows = sampling_matrix(centres_xy[:, 1], n, shape[0])
    cols = sampling_matrix(centres_xy[:, 0], n, shape[1])
    return np.swapaxes(rows, -1, -2) @ patches @ cols


def weighted_mean(patches: np.ndarray, centres_xy: np.ndarray, shape: tuple[int, int],
                  weight: np.ndarray, epsilon: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Σ_k place(w·patch_k) / Σ_k place(w) where the denominator exceeds `epsilon` (else Σ place(w·patch)),
    and the denominator: the canvas of a group's member patches (weight w (n, n))."""
    total = place(patches * weight, centres_xy, shape).sum(axis=0)
    weights = place(np.broadcast_to(weight, patches.shape).astype(np.float64), centres_xy, shape).sum(axis=0)
    return total / np.where(weights > epsilon, weights, 1.0), weights


def _windows(xcoords: np.ndarray, ycoords: np.ndarray, N: int, shape: tuple[int, int]):
    """The (N+1)² windows of the patches centred at the positions, on the image padded by N + 2:
    row and column indices (n, N+1) into the padded image, fractional offsets (n, 1, 1), the pad."""
    x = np.asarray(xcoords, dtype=np.float64) - N // 2
    y = np.asarray(ycoords, dtype=np.float64) - N // 2
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx = (x - x0).astype(np.float32)[:, None, None]
    fy = (y - y0).astype(np.float32)[:, None, None]
    # Pad by one patch so every window stays in bounds; zero fill = zero outside the image.
    pad = N + 2
    rows = (y0 + pad)[:, None] + np.arange(N + 1)[None, :]
    cols = (x0 + pad)[:, None] + np.arange(N + 1)[None, :]
    if (rows.min() < 0 or cols.min() < 0 or rows.max() >= shape[0] + 2 * pad
            or cols.max() >= shape[1] + 2 * pad):
        raise ValueError(f"scan positions reach more than {N} px outside the object {tuple(shape)}")
    return rows, cols, fx, fy, pad


def extract_patches(obj: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray, N: int) -> np.ndarray:
    """Object patches (n, N, N) centred at the scan positions: the fast gather form of `extract`.

    Bilinear, zero outside the object; numerically the same as `extract(obj, xy, N)`.
    """
    rows, cols, fx, fy, pad = _windows(xcoords, ycoords, N, obj.shape)
    window = np.pad(obj, pad)[rows[:, :, None], cols[:, None, :]]  # (n, N+1, N+1)
    top = (1 - fx) * window[:, :-1, :-1] + fx * window[:, :-1, 1:]
    bottom = (1 - fx) * window[:, 1:, :-1] + fx * window[:, 1:, 1:]
    return ((1 - fy) * top + fy * bottom).astype(obj.dtype, copy=False)


def place_patches(patches: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray,
                  shape: tuple[int, int]) -> np.ndarray:
    """Adjoint of `extract_patches`: the patches (n, N, N) splatted bilinearly at the positions and
    summed into one image of `shape` (what falls outside it is dropped); the gather form of `place`."""
    patches = np.asarray(patches)
    N = patches.shape[-1]
    rows, cols, fx, fy, pad = _windows(xcoords, ycoords, N, shape)
    spread = np.zeros((len(patches), N, N + 1), dtype=patches.dtype)  # each tap to its two columns
    spread[:, :, :-1] += (1 - fx) * patches
    spread[:, :, 1:] += fx * patches
    window = np.zeros((len(patches), N + 1, N + 1), dtype=patches.dtype)
    window[:, :-1] += (1 - fy) * spread
    window[:, 1:] += fy * spread
    height, width = shape[0] + 2 * pad, shape[1] + 2 * pad
    index = (rows[:, :, None] * width + cols[:, None, :]).ravel()

    def summed(values: np.ndarray) -> np.ndarray:  # bincount: a scatter-add far faster than np.add.at
        return np.bincount(index, weights=values.ravel(), minlength=height * width)

    total = summed(window.real) + 1j * summed(window.imag) if np.iscomplexobj(window) else summed(window)
    return total.reshape(height, width)[pad:pad + shape[0], pad:pad + shape[1]].astype(patches.dtype, copy=False)


def illuminate(patches: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Exit waves ψ = P · O (broadcast over leading axes)."""
    return patches * probe


def far_field_amplitude(exit_waves: np.ndarray, workers: int = -1) -> np.ndarray:
    """A = sqrt(fftshift(|FFT2 ψ|²) / N²) over the last two axes (energy-conserving)."""
    n_pixels = exit_waves.shape[-1] * exit_waves.shape[-2]
    spectrum = scipy.fft.fft2(exit_waves, axes=(-2, -1), workers=workers)
    intensity = spectrum.real ** 2 + spectrum.imag ** 2
    return np.sqrt(scipy.fft.fftshift(intensity, axes=(-2, -1)) / n_pixels)


# backpropagate: far-field pixels of the probe below this fraction of its brightest are damped.
BACKPROP_FLOOR = 1e-3


def backpropagate(amplitude: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """One error-reduction step from the unit object O = 1 with the known probe, as an object-plane
    image: d = P*·(ψ' − P)/max|P|², ψ' = IFFT(A·Ψ_P/|Ψ_P|), Ψ_P the probe's far field (this module's
    unitary, fftshifted convention). Amplitudes (..., N, N) → d (..., N, N) complex128.

    d is the negative gradient of the amplitude loss Σ(|F(P·O)| − A)² with respect to conj(O) at
    O = 1, divided by max|P|²: the measured pattern carried back into the frame of the object patch,
    where a network's convolutions see the object's features where they are (model.input_transform).
    Where the probe's far field is dark its phase is round-off, so Ψ_P/|Ψ_P| is taken as
    Ψ_P/max(|Ψ_P|, BACKPROP_FLOOR·max|Ψ_P|): those pixels (where the gradient is undefined) are
    damped, not given a random phase. A flat unit object's own pattern gives d ≈ 0 (exactly where
    the probe's far field is above the floor).
    """
    probe = np.asarray(probe, dtype=np.complex128)
    N = probe.shape[-1]
    spectrum = scipy.fft.fftshift(scipy.fft.fft2(probe)) / N
    magnitude = np.abs(spectrum)
    unit = spectrum / np.maximum(magnitude, BACKPROP_FLOOR * magnitude.max())
    field = scipy.fft.ifft2(scipy.fft.ifftshift(np.asarray(amplitude, dtype=np.float64) * unit, axes=(-2, -1)),
                            axes=(-2, -1)) * N
    return np.conj(probe) * (field - probe) / float(np.max(np.abs(probe) ** 2))


# error_reduction_step: canvas pixels whose summed relative probe intensity Σ|P_c|²/max|P|² is below
# this are divided by it instead (the unlit margin would otherwise amplify noise without bound).
# Measured on the dose-1e5 dense test groups: the step's per-patch correlation with the truth is
# 0.19 / 0.50 (amplitude / phase) at 0.05, 0.11 / 0.45 at 0.2, 0.04 / 0.37 at 1 (no division).
ER_FLOOR = 0.05


def error_reduction_step(amplitude: np.ndarray, probe: np.ndarray, relative_xy: np.ndarray,
                         canvas_size: int, iterations: int = 1, solver: str = "er", band: float = 0.0) -> np.ndarray:
    """Error reduction of a whole group from the unit object, as each member's patch of O_K − 1
    after K = `iterations` (see `error_reduction_iterates`; solver 'raar': `raar_iterates`); band: the
    modulus projection's noise band in the amplitude's units (`modulus_band`; 0 exact).

    More iterations solve the group's phase problem further (measured on the dose-1e5 dense test
    groups, per-patch correlation with the truth, amplitude / phase: 0.19 / 0.50 after 1, 0.29 /
    0.64 after 50, 0.33 / 0.70 after 100, 0.42 / 0.81 after 1,000; RAAR 0.51 / 0.85 after 50; docs/results.md).
    """
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations}")
    if solver not in GROUP_SOLVERS:
        raise ValueError(f"solver={solver!r}; expected one of {', '.join(GROUP_SOLVERS)}")
    iterates = GROUP_SOLVERS[solver](amplitude, probe, relative_xy, canvas_size, band)
    return next(itertools.islice(iterates, int(iterations) - 1, None))


def error_reduction_iterates(amplitude: np.ndarray, probe: np.ndarray, relative_xy: np.ndarray,
                             canvas_size: int, band: float = 0.0) -> Iterator[np.ndarray]:
    """Each member's patch of O_k − 1 (G, C, N, N) complex128 after iterations k = 1, 2, … (endless).

    amplitude (G, C, N, N) (this module's convention), members centred at canvas_size//2 + rel,
    relative_xy (G, C, 2) in (x, y) pixels, the object O = 1 at the start. One iteration: every
    member's exit wave ψ = P·X (X its patch of the canvas O) gets the measured modulus,
    ψ' = IFFT(A·Ψ/|Ψ|) (Ψ = FFT ψ, its modulus floored at BACKPROP_FLOOR of the pattern's brightest
    as in `backpropagate`), and the members' corrections P*·(ψ' − ψ)/max|P|² are splatted onto the
    canvas and divided by the summed relative probe intensity (floored at ER_FLOOR): the
    ptychographic object update, where members overlap their evidence is averaged. The first
    iteration, from O = 1, is the members' `backpropagate` images so combined; a group of one, one
    iteration, is the single pattern's step d/max(|P|²/max|P|², ER_FLOOR). band > 0 relaxes the modulus
    projection to the noise band A ± band (`modulus_band`).
    """
    return _error_reduction(*_group_arrays(amplitude, probe, relative_xy), int(canvas_size), _band(band))


def _band(band: float) -> float:
    """The checked band of a group solve (a NaN or negative band would silently disable or invert it)."""
    if not (np.isfinite(band) and band >= 0):
        raise ValueError(f"band must be a finite amplitude ≥ 0 (0: the exact modulus projection), got {band}")
    return float(band)


# The standard deviation of √n for Poisson counts n (variance stabilisation): close to 1/2 whatever the
# mean once it exceeds a few counts, so one band width in √counts serves every pixel of every dose.
SQRT_COUNT_STD = 0.5


def band_in_amplitude(tolerance: float, photon_scale: Optional[float]) -> float:
    """A noise band of `tolerance` standard deviations of √counts (model.er_tolerance) in the data's
    amplitude units (amplitude = √counts / photon_scale); 0 for the exact projection."""
    if not tolerance:
        return 0.0
    if photon_scale is None or not photon_scale > 0:
        raise ValueError(f"a noise band of {tolerance} needs the data's photon_scale (metadata; counts = "
                         f"(diffraction·photon_scale)²), got {photon_scale}")
    return _band(tolerance * SQRT_COUNT_STD / float(photon_scale))


def modulus_band(magnitude, measured, band: float):
    """The target modulus of the noise-tolerant projection: |Ψ| itself where it lies within the band
    measured ± band, else the band's nearer edge (the lower one floored at 0); band 0 is the measured
    modulus. A pattern's counts fix its modulus only to within their noise: at low dose the exact
    projection (band 0) imposes the noise itself (most pixels hold 0 or 1 photon), and the group solve
    fits it (each backend has its own tensor form: modulus_projection)."""
    if not band:
        return measured
    return np.minimum(np.maximum(magnitude, np.maximum(measured - band, 0.0)), measured + band)


def _group_arrays(amplitude, probe, relative_xy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A group solver's inputs as float64 / complex128, their shapes checked (before its generator starts)."""
    amplitude = np.asarray(amplitude, dtype=np.float64)
    relative_xy = np.asarray(relative_xy, dtype=np.float64)
    if amplitude.ndim != 4 or relative_xy.shape != amplitude.shape[:2] + (2,):
        raise ValueError(f"amplitude must be (groups, members, N, N) and relative_xy (groups, members, 2); "
                         f"got {amplitude.shape} and {relative_xy.shape}")
    return amplitude, np.asarray(probe, dtype=np.complex128), relative_xy


def tiled_group_positions(relative_xy: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Groups' size×size canvases side by side in one (size, G·size) image, members centred at
    size//2 + rel on their own: every member's (x, y) there (G·C each) and the image's shape, so that
    all groups go through one call of the fast gather/scatter forms (extract_patches, place_patches)."""
    G = relative_xy.shape[0]
    xs = (np.arange(G)[:, None] * size + size // 2 + relative_xy[..., 0]).ravel()
    ys = (size // 2 + relative_xy[..., 1]).ravel()
    return xs, ys, (size, G * size)


class _TiledGroups:
    """The groups' canvases tiled in one image (tiled_group_positions) and the group solvers' shared
    pieces: the modulus projection and the splat of member corrections."""

    def __init__(self, amplitude: np.ndarray, probe: np.ndarray, relative_xy: np.ndarray, size: int,
                 band: float = 0.0):
        N = amplitude.shape[-1]
        self.shape4, self.N, self.probe = amplitude.shape, N, probe
        weight = np.abs(probe) ** 2
        self.peak = weight.max()
        self.measured = scipy.fft.ifftshift(amplitude, axes=(-2, -1)) * N  # |FFT ψ| in scipy's unnormalised FFT
        self.band = band * N  # in the same FFT scale
        self.xs, self.ys, self.shape = tiled_group_positions(relative_xy, size)
        self.coverage = self.place_sum(np.broadcast_to(weight / self.peak, amplitude.shape))  # Σ|P_c|²/max|P|²

    def place_sum(self, parts: np.ndarray) -> np.ndarray:
        """(G, C, N, N) → the tiled canvases, each group's members summed."""
        return place_patches(parts.reshape(-1, self.N, self.N), self.xs, self.ys, self.shape)

    def patches(self, canvas: np.ndarray) -> np.ndarray:
        """The tiled canvases → each member's patch (G, C, N, N)."""
        return extract_patches(canvas, self.xs, self.ys, self.N).reshape(self.shape4)

    def waves(self, delta: np.ndarray) -> np.ndarray:
        """Each member's exit wave P·(1 + its patch of delta = O − 1)."""
        return self.probe * (1.0 + self.patches(delta))

    def modulus(self, wave: np.ndarray) -> np.ndarray:
        """The measured modulus projection ψ' = IFFT(A·Ψ/|Ψ|), |Ψ| floored at BACKPROP_FLOOR of its brightest
        (A: the measured modulus, or with a band `modulus_band`'s target)."""
        spectrum = scipy.fft.fft2(wave, axes=(-2, -1), workers=-1)
        magnitude = np.abs(spectrum)
        floor = BACKPROP_FLOOR * magnitude.max(axis=(-2, -1), keepdims=True)
        target = modulus_band(magnitude, self.measured, self.band)
        return scipy.fft.ifft2(target * spectrum / np.maximum(magnitude, floor), axes=(-2, -1), workers=-1)

    def splat(self, waves: np.ndarray, floor: float) -> np.ndarray:
        """Σ_c P*·(ψ_c − P)/max|P|² on the canvases, divided by the coverage floored at `floor`: at
        coverage ≥ floor the least-squares O − 1 of the exit waves ψ, below it pulled toward 0."""
        return self.place_sum(np.conj(self.probe) * (waves - self.probe) / self.peak) / np.maximum(self.coverage, floor)


def _error_reduction(amplitude: np.ndarray, probe: np.ndarray, relative_xy: np.ndarray,
                     size: int, band: float) -> Iterator[np.ndarray]:
    """error_reduction_iterates after its checks (a generator's body runs only at the first next())."""
    tiled = _TiledGroups(amplitude, probe, relative_xy, size, band)
    cover = np.maximum(tiled.coverage, ER_FLOOR)
    delta = np.zeros(tiled.shape, dtype=np.complex128)  # O − 1 on the tiled canvases
    patches = np.zeros(amplitude.shape, dtype=np.complex128)  # each member's patch of delta
    while True:
        wave = probe * (1.0 + patches)
        delta = delta + tiled.place_sum(np.conj(probe) * (tiled.modulus(wave) - wave) / tiled.peak) / cover
        patches = tiled.patches(delta)
        yield patches


# raar_iterates: the relaxation β of the relaxed averaged alternating reflections (Luke 2005) and the
# overlap projection's coverage floor. Measured on the dose-1e5 dense test groups (64 groups, per-patch
# correlation with the truth, amplitude / phase after 50 and 100 iterations): β 0.9 0.51 / 0.85 and
# 0.53 / 0.85; β 0.75 0.49 / 0.82 and 0.52 / 0.84; β 0.95 0.49 / 0.84 and 0.50 / 0.84; β 0.98 falls
# back (0.43 / 0.79 at 100); β 1 (the difference map) drifts with the noise (0.19 / 0.41 at 100).
# Floor 1e-2 0.44 / 0.79 at 100, 1e-3 and 1e-4 alike (0.53 / 0.85).
RAAR_BETA = 0.9
RAAR_FLOOR = 1e-3
# RAAR_BAND_NOTE: the noise band (model.er_tolerance t: band = t·SQRT_COUNT_STD in √counts). Without it the
# exact projection imposes the Poisson noise, and at few counts per pixel the solve fits that noise:
# on the dense test groups at dose 1e3 exact RAAR falls from 0.11 / 0.25 (per-patch amplitude / phase,
# 10 iterations) to 0.09 / 0.17 (50), where t = 1 keeps rising (0.17 / 0.39). The band helps where the
# counts are few and costs where they determine the object, so its value is the dose's choice
# (study.noise_band). The measurements at every dose, 1e3 to 1e5, are in docs/results.md ("A noise
# band stops the fit to the noise").


def raar_iterates(amplitude: np.ndarray, probe: np.ndarray, relative_xy: np.ndarray,
                  canvas_size: int, band: float = 0.0) -> Iterator[np.ndarray]:
    """The group's phase problem solved by RAAR: each member's patch of O_k − 1 (G, C, N, N) complex128
    after iterations k = 1, 2, … (endless); arguments as error_reduction_iterates.

    The state is every member's exit wave ψ, from ψ_0 = P (the flat object). With P_M the measured
    modulus projection (error_reduction_iterates) and P_S the overlap projection (the least-squares
    object of the members' waves on the group canvas, floored coverage RAAR_FLOOR, cut back into
    waves), iteration k reports O_k = the object of P_M ψ_{k−1} and moves on by
    ψ_k = β·(ψ + P_S(2·P_M ψ − ψ) − P_M ψ) + (1 − β)·P_M ψ,  β = RAAR_BETA.
    Iteration 1 is therefore one error-reduction step with the floor RAAR_FLOOR. Unlike error
    reduction, the reflections do not stall where the modulus and overlap constraints disagree
    (measured above: 0.53 / 0.85 after 100 iterations where error reduction has 0.33 / 0.70).
    band > 0: the modulus projection keeps |Ψ| within A ± band (`modulus_band`, RAAR_BAND_NOTE).
    """
    return _raar(*_group_arrays(amplitude, probe, relative_xy), int(canvas_size), _band(band))


def _raar(amplitude: np.ndarray, probe: np.ndarray, relative_xy: np.ndarray, size: int,
          band: float) -> Iterator[np.ndarray]:
    """raar_iterates after its checks."""
    tiled = _TiledGroups(amplitude, probe, relative_xy, size, band)
    wave = np.broadcast_to(probe, amplitude.shape).astype(np.complex128)
    while True:
        measured = tiled.modulus(wave)
        yield tiled.patches(tiled.splat(measured, RAAR_FLOOR))
        overlap = tiled.waves(tiled.splat(2.0 * measured - wave, RAAR_FLOOR))
        wave = RAAR_BETA * (wave + overlap - measured) + (1.0 - RAAR_BETA) * measured


GROUP_SOLVERS = {"er": error_reduction_iterates, "raar": raar_iterates}  # model.er_solver


def dose_scale(mean_pattern_energy: float, dose: float) -> float:
    """Photon scale s with s²·(mean Σ|ψ|²) = dose: counts = (s·A)² have mean total = dose."""
    if not mean_pattern_energy > 0:
        raise ValueError(f"mean pattern energy must be positive to scale to a dose, got {mean_pattern_energy}")
    return float(np.sqrt(dose / mean_pattern_energy))


def poisson_amplitude(amplitude: np.ndarray, photon_scale: float, rng: np.random.Generator) -> np.ndarray:
    """Noisy amplitude sqrt(Poisson((s·A)²))/s as float32; (result·s)² are the integer counts."""
    counts = rng.poisson((photon_scale * amplitude.astype(np.float64)) ** 2)
    return (np.sqrt(counts) / photon_scale).astype(np.float32)


def forward_amplitude(obj: np.ndarray, probe: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray) -> np.ndarray:
    """Noise-free diffraction amplitude of an object at scan positions (n, N, N) float64."""
    N = probe.shape[-1]
    return far_field_amplitude(illuminate(extract_patches(obj, xcoords, ycoords, N), probe))


FOOTPRINT_ENERGY_FRACTION = 0.9  # the probe footprint: the disc holding 90 % of Σ|P|²


def footprint_diameter(probe: np.ndarray, energy_fraction: float = FOOTPRINT_ENERGY_FRACTION) -> float:
    """Diameter D (pixels) of the smallest disc about the intensity centroid of |P|² that holds
    `energy_fraction` of the probe's energy: the illuminated footprint the study's overlap uses.

    Pixels count at their centres (a radius r holds every pixel whose centre lies within r), so
    D is exact to a pixel; a uniform disc of radius R gives D ≈ 2R·sqrt(energy_fraction).
    """
    probe = np.asarray(probe)
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
        raise ValueError(f"probe must be a square 2-D array, got shape {probe.shape}")
    if not 0 < energy_fraction <= 1:
        raise ValueError(f"energy_fraction must be in (0, 1], got {energy_fraction}")
    intensity = np.abs(probe.astype(np.complex128)) ** 2
    total = float(intensity.sum())
    if not np.isfinite(total) or total <= 0:
        raise ValueError("probe has no finite, non-zero intensity: its footprint is undefined")
    rows, cols = np.indices(intensity.shape)
    cy, cx = float((intensity * rows).sum() / total), float((intensity * cols).sum() / total)
    radius = np.hypot(rows - cy, cols - cx).ravel()
    order = np.argsort(radius, kind="stable")
    enclosed = np.cumsum(intensity.ravel()[order]) / total
    index = min(int(np.searchsorted(enclosed, energy_fraction - 1e-12)), radius.size - 1)
    return float(2.0 * radius[order][index])
