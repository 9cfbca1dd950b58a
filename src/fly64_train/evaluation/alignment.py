"""Alignment of a stitched reconstruction to the ground truth, on the pixels that are scored.

- `scored_region`: the pixels scored: well covered by the stitch and, given the probe, lit by the
  test scan (Σ_k |P(r − r_k)|² ≥ illumination_threshold × its maximum, `stitching.illumination`):
  the far field says nothing about the object where no light fell.
- `align`: both images are cropped to the scored region's bounding box; the shift between the
  amplitudes is searched only within ±max_shift_px (`bounded_shift`: the positions are known, so
  a right reconstruction sits within a pixel or two, and an unbounded search jumps to a spurious
  far peak) and applied with a spline shift; the amplitude is scaled by mean(gt)/mean(pred); the
  phase difference loses a global offset and a least-squares plane a·x + b·y + c (a coarse ramp is
  first taken from the FFT peak of exp(iΔφ), so wrapped ramps are removed too). The aligned phase
  is gt phase + the wrapped residual, so the phase metrics measure the residual modulo 2π.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from fly64_train.architecture import COVERAGE_EPSILON

DEFAULT_MIN_COVERAGE = 0.5
DEFAULT_ILLUMINATION_THRESHOLD = 0.1  # score pixels lit by ≥ 10 % of the scan's peak Σ|P|²
DEFAULT_MAX_SHIFT = 2.0  # registration search box, ± pixels
REGISTRATION_UPSAMPLE = 20  # sub-pixel refinement: 1/20 px
SHIFT_TOLERANCE = 0.05  # a measured shift smaller than this (pixels) is not applied


@dataclass
class Alignment:
    pred_amp: np.ndarray
    gt_amp: np.ndarray
    pred_phase: np.ndarray  # gt phase + wrapped residual after offset/plane removal
    gt_phase: np.ndarray
    mask: np.ndarray  # well-covered pixels of the cropped region
    bbox: tuple[int, int, int, int]  # (row0, row1, col0, col1) of the object, half-open
    shift: tuple[float, float]  # measured (dy, dx) registering the reconstruction to the ground truth
    shift_applied: bool
    amplitude_scale: float
    phase_plane: tuple[float, float, float]  # (a, b, c): removed a·x + b·y + c, x/y = bbox-local col/row

    @property
    def covered_fraction(self) -> float:
        return float(self.mask.mean())


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def holes_filled(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy with pixels outside `mask` set to the mean inside it."""
    if mask.all():
        return np.array(image, dtype=np.float64)
    out = np.array(image, dtype=np.float64)
    out[~mask] = float(np.mean(image[mask]))
    return out


def _windowed(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean-free image (holes filled) under a Hann window, so the region's edges and the flat fill
    of its holes, the same in both images, do not pin the registration to zero shift."""
    from scipy.signal.windows import hann

    filled = holes_filled(image, mask)
    filled -= filled.mean()
    return filled * np.outer(hann(image.shape[0], sym=False), hann(image.shape[1], sym=False))


def _plane_fit(values: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    y, x = np.nonzero(mask)
    design = np.stack([x, y, np.ones_like(x)], axis=1).astype(np.float64)
    coefficients, *_ = np.linalg.lstsq(design, values[mask].astype(np.float64), rcond=None)
    return float(coefficients[0]), float(coefficients[1]), float(coefficients[2])


def _phase_plane(difference: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """(a, b, c) of the plane a·x + b·y + c best matching a wrapped phase difference on `mask`."""
    height, width = difference.shape
    z = np.where(mask, np.exp(1j * difference), 0)
    # Coarse linear ramp: the peak of the 4× zero-padded spectrum of exp(iΔφ) (handles wrapped ramps).
    shape = (4 * height, 4 * width)
    spectrum = np.abs(np.fft.fft2(z, s=shape))
    ky, kx = np.unravel_index(int(np.argmax(spectrum)), shape)
    fy = ((ky + shape[0] // 2) % shape[0] - shape[0] // 2) / shape[0]
    fx = ((kx + shape[1] // 2) % shape[1] - shape[1] // 2) / shape[1]
    yy, xx = np.mgrid[0:height, 0:width]
    a, b = 2 * np.pi * fx, 2 * np.pi * fy
    c = float(np.angle(np.sum(z * np.exp(-1j * (a * xx + b * yy)))))
    for _ in range(2):  # least squares on the small, unwrapped residual; twice for the last digits
        residual = np.angle(z * np.exp(-1j * (a * xx + b * yy + c)))
        da, db, dc = _plane_fit(residual, mask)
        a, b, c = a + da, b + db, c + dc
    c = float(np.angle(np.exp(1j * c)))
    return float(a), float(b), c


def bounded_shift(reference: np.ndarray, moving: np.ndarray, mask: np.ndarray,
                  max_shift: float, upsample: int = REGISTRATION_UPSAMPLE) -> tuple[float, float]:
    """(dy, dx) that registers `moving` to `reference`, searched only within ±max_shift pixels.

    The peak of the cross-correlation of the mean-free, Hann-windowed images (holes filled) is
    taken inside the search box (positions are known, so a right reconstruction sits within a pixel or two: an
    unbounded search jumps to a far, spurious peak on weakly structured or noisy images), then
    refined to 1/`upsample` pixel by evaluating the correlation on a fine grid of ±1 px around it
    with a matrix DFT (skimage's upsampled-DFT refinement). The sign convention is skimage's
    phase_cross_correlation: shifting `moving` by the result lines it up with `reference`.
    """
    if max_shift <= 0 or min(mask.shape) < 3:
        return 0.0, 0.0
    product = np.fft.fft2(_windowed(reference, mask)) * np.conj(np.fft.fft2(_windowed(moving, mask)))
    correlation = np.fft.ifft2(product).real
    height, width = correlation.shape
    reach = int(math.floor(max_shift))
    steps = np.arange(-reach, reach + 1)
    box = correlation[np.ix_(steps % height, steps % width)]
    iy, ix = np.unravel_index(int(np.argmax(box)), box.shape)
    fine = np.arange(-upsample, upsample + 1) / upsample  # ±1 px around the integer peak
    dy_grid, dx_grid = steps[iy] + fine, steps[ix] + fine
    ky, kx = np.fft.fftfreq(height), np.fft.fftfreq(width)
    rows = np.exp(2j * np.pi * dy_grid[:, None] * ky[None, :])  # (G, H)
    cols = np.exp(2j * np.pi * kx[:, None] * dx_grid[None, :])  # (W, G)
    local = (rows @ product @ cols).real
    jy, jx = np.unravel_index(int(np.argmax(local)), local.shape)
    return (float(np.clip(dy_grid[jy], -max_shift, max_shift)), float(np.clip(dx_grid[jx], -max_shift, max_shift)))


def align(reconstruction: np.ndarray, ground_truth: np.ndarray, region: np.ndarray,
          max_shift_px: float = DEFAULT_MAX_SHIFT) -> Alignment:
    """Crop to the bounding box of `region` (the pixels to score), register within ±max_shift_px,
    scale the amplitude, remove one phase offset and plane for the whole image."""
    import scipy.ndimage

    reconstruction, ground_truth = np.asarray(reconstruction), np.asarray(ground_truth)
    region = np.asarray(region, dtype=bool)
    if not reconstruction.shape == ground_truth.shape == region.shape or reconstruction.ndim != 2:
        raise ValueError(f"reconstruction {reconstruction.shape}, ground truth {ground_truth.shape} and "
                         f"scored region {region.shape} must be 2-D images of one shape")
    if not region.any():
        raise ValueError("no pixel of the object is scored: the reconstruction covers no illuminated pixel")
    r0, r1, c0, c1 = _bbox(region)
    pred = reconstruction[r0:r1, c0:c1].astype(np.complex128)
    gt = ground_truth[r0:r1, c0:c1].astype(np.complex128)
    mask = region[r0:r1, c0:c1].copy()

    shift = bounded_shift(np.abs(gt), np.abs(pred), mask, float(max_shift_px))
    applied = max(abs(shift[0]), abs(shift[1])) >= SHIFT_TOLERANCE
    if applied:
        # Spline shift of the real and imaginary parts (no wrap-around); the margin it fills is dropped.
        pred = (scipy.ndimage.shift(pred.real, shift, order=3, mode="nearest")
                + 1j * scipy.ndimage.shift(pred.imag, shift, order=3, mode="nearest"))
        margin = int(math.ceil(max(abs(s) for s in shift)))
        if 2 * margin < min(mask.shape):
            sl = np.s_[margin:mask.shape[0] - margin, margin:mask.shape[1] - margin]
            pred, gt, mask = pred[sl], gt[sl], mask[sl]
            r0, r1, c0, c1 = r0 + margin, r1 - margin, c0 + margin, c1 - margin

    gt_amp, pred_amp = np.abs(gt), np.abs(pred)
    pred_mean = float(np.mean(pred_amp[mask]))
    scale = float(np.mean(gt_amp[mask])) / pred_mean if pred_mean > 0 else 1.0
    pred_amp = pred_amp * scale

    gt_phase = np.angle(gt)
    difference = np.angle(pred * np.conj(gt))
    a, b, c = _phase_plane(difference, mask)
    yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
    residual = np.angle(np.exp(1j * (difference - (a * xx + b * yy + c))))
    return Alignment(pred_amp=pred_amp, gt_amp=gt_amp, pred_phase=gt_phase + residual, gt_phase=gt_phase,
                     mask=mask, bbox=(r0, r1, c0, c1), shift=shift, shift_applied=applied,
                     amplitude_scale=scale, phase_plane=(a, b, c))


def scored_region(coverage: np.ndarray, lit: Optional[np.ndarray] = None,
                  illumination_threshold: float = DEFAULT_ILLUMINATION_THRESHOLD,
                  min_coverage: float = DEFAULT_MIN_COVERAGE) -> np.ndarray:
    """Pixels to score: well covered by the stitch (coverage ≥ min_coverage, or its maximum if
    lower) and, given the scan's illumination Σ|P|², lit by at least `illumination_threshold` of
    its maximum (the far field says nothing about the object where no light fell)."""
    coverage = np.asarray(coverage, dtype=np.float64)
    region = (coverage >= min(float(min_coverage), float(coverage.max())) - 1e-9) & (coverage > COVERAGE_EPSILON)
    if lit is not None:
        lit = np.asarray(lit, dtype=np.float64)
        if lit.shape != coverage.shape:
            raise ValueError(f"illumination {lit.shape} and coverage {coverage.shape} differ in shape")
        region &= lit >= illumination_threshold * float(lit.max())
    return region
