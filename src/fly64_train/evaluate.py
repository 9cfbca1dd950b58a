"""Evaluation of a trained model on the test split (framework-free): stitch the predicted object
patches into one image, align it to the ground-truth object, score it, and draw it.

- `stitch` (stitching.py): the patches' constant phases are synchronised through their overlaps,
  their central crop×crop regions (default N//2) averaged onto the object grid and refined to the
  least-squares image (the coverage is the same stitching of ones).
- `scored_region`: the pixels scored: well covered by the stitch and, given the probe, lit by the
  test scan (Σ_k |P(r − r_k)|² ≥ illumination_threshold × its maximum, `illumination`): the far
  field says nothing about the object where no light fell.
- `align`: both images are cropped to the scored region's bounding box; the shift between the
  amplitudes is searched only within ±max_shift_px (`bounded_shift`: the positions are known, so
  a right reconstruction sits within a pixel or two, and an unbounded search jumps to a spurious
  far peak) and applied with a spline shift; the amplitude is scaled by mean(gt)/mean(pred); the
  phase difference loses a global offset and a least-squares plane a·x + b·y + c (a coarse ramp is
  first taken from the FFT peak of exp(iΔφ), so wrapped ramps are removed too). The aligned phase
  is gt phase + the wrapped residual, so the phase metrics measure the residual modulo 2π.
- `metrics`: MAE, MSE, PSNR and SSIM (data_range = ground-truth max − min, recorded), SSIM in the
  original study's convention too (`ssim_original`: phase as (φ + π)/2π with data range 1), FRC50
  (first Fourier ring, index and fraction of Nyquist, where the FRC drops below 0.5, on a square
  centre crop), separately for amplitude and phase. Pixels inside the bounding box that are not
  scored are left out: MAE/MSE/PSNR use the scored pixels, SSIM averages its map over pixels whose
  whole 7×7 window is scored, the FRC compares the mean-free images with the rest set to zero.
- `patchwise_correlation`: per predicted patch, the Pearson correlation with the true patch over
  the central crop of amplitude and of phase, each patch's own mean phase removed first (the far
  field cannot see a patch's constant phase, so stitched phase loses large-scale structure even
  when every patch is right); the mean over patches is reported.
- `score_predictions` does all of it without writing; `write_evaluation` writes its result.
- `evaluate_predictions`: all of it, plus `metrics.json`, `reconstruction.png` and
  `reconstruction.npz` in the run directory (atomic writes). Non-finite values (PSNR of a perfect
  reconstruction is +inf) are written to metrics.json as null (strict JSON).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from fly64_train import physics
from fly64_train.architecture import COVERAGE_EPSILON
from fly64_train.files import atomic_file, atomic_write_bytes, jsonable
from fly64_train.stitching import illumination, stitch

METRICS_NAME = "metrics.json"
FIGURE_NAME = "reconstruction.png"
RECONSTRUCTION_NAME = "reconstruction.npz"
SSIM_WINDOW = 7  # skimage's default window
CHUNK = 1024  # patches per chunk of the per-patch scores
DEFAULT_MIN_COVERAGE = 0.5
DEFAULT_ILLUMINATION_THRESHOLD = 0.1  # score pixels lit by ≥ 10 % of the scan's peak Σ|P|²
DEFAULT_MAX_SHIFT = 2.0  # registration search box, ± pixels
REGISTRATION_UPSAMPLE = 20  # sub-pixel refinement: 1/20 px
SHIFT_TOLERANCE = 0.05  # a measured shift smaller than this (pixels) is not applied
FRC_THRESHOLD = 0.5

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------- alignment

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


def _filled(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
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

    filled = _filled(image, mask)
    filled -= filled.mean()
    return filled * np.outer(hann(image.shape[0], sym=False), hann(image.shape[1], sym=False))


def _frc_input(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean-free image, zero outside `mask` (holes carry no shared pattern into the FRC)."""
    out = np.array(image, dtype=np.float64) - float(np.mean(image[mask]))
    out[~mask] = 0.0
    return out


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


# ----------------------------------------------------------------------------- metrics

def frc_curve(image_a: np.ndarray, image_b: np.ndarray) -> np.ndarray:
    """Fourier ring correlation of two real images, on their square centre crop; rings 0..side//2."""
    image_a, image_b = np.asarray(image_a, dtype=np.float64), np.asarray(image_b, dtype=np.float64)
    if image_a.shape != image_b.shape or image_a.ndim != 2:
        raise ValueError(f"FRC needs two 2-D images of one shape, got {image_a.shape} and {image_b.shape}")
    side = min(image_a.shape)
    r0, c0 = (image_a.shape[0] - side) // 2, (image_a.shape[1] - side) // 2
    fa = np.fft.fft2(image_a[r0:r0 + side, c0:c0 + side])
    fb = np.fft.fft2(image_b[r0:r0 + side, c0:c0 + side])
    k = np.fft.fftfreq(side) * side
    rings = np.rint(np.hypot(k[:, None], k[None, :])).astype(np.int64).ravel()
    nyquist = side // 2
    keep = rings <= nyquist
    rings = rings[keep]
    cross = np.bincount(rings, weights=(fa * np.conj(fb)).real.ravel()[keep], minlength=nyquist + 1)
    power_a = np.bincount(rings, weights=(np.abs(fa) ** 2).ravel()[keep], minlength=nyquist + 1)
    power_b = np.bincount(rings, weights=(np.abs(fb) ** 2).ravel()[keep], minlength=nyquist + 1)
    denominator = np.sqrt(power_a * power_b)
    scale = max(float(power_a.max()), float(power_b.max()), 1e-300)
    tiny = denominator <= 1e-12 * scale
    both_empty = (power_a <= 1e-12 * scale) & (power_b <= 1e-12 * scale)
    curve = np.where(tiny, np.where(both_empty, 1.0, 0.0), cross / np.where(tiny, 1.0, denominator))
    return curve


def frc50(curve: np.ndarray) -> int:
    """First ring index ≥ 1 where the FRC drops below 0.5; Nyquist (len − 1) if it never does."""
    below = np.flatnonzero(np.asarray(curve)[1:] < FRC_THRESHOLD)
    return int(below[0] + 1) if below.size else len(curve) - 1


def _data_range(gt: np.ndarray) -> float:
    value = float(np.max(gt) - np.min(gt))
    return value if value > 0 else max(float(np.max(np.abs(gt))), 1.0)


def _ssim(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray, data_range: float) -> float:
    """skimage SSIM; with holes, the SSIM map averaged over pixels whose whole window is covered."""
    from scipy.ndimage import binary_erosion
    from skimage.metrics import structural_similarity

    if min(gt.shape) < SSIM_WINDOW:
        raise ValueError(f"images {gt.shape} are smaller than the {SSIM_WINDOW}×{SSIM_WINDOW} SSIM window")
    if mask.all():
        return float(structural_similarity(gt, pred, data_range=data_range, win_size=SSIM_WINDOW))
    _, full = structural_similarity(_filled(gt, mask), _filled(pred, mask), data_range=data_range,
                                    win_size=SSIM_WINDOW, full=True)
    inside = binary_erosion(mask, np.ones((SSIM_WINDOW, SSIM_WINDOW), dtype=bool), border_value=0)
    return float(np.mean(full[inside if inside.any() else mask]))


def _channel_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    from skimage.metrics import peak_signal_noise_ratio

    data_range = _data_range(gt[mask])
    error = pred[mask] - gt[mask]
    with np.errstate(divide="ignore"):
        psnr = float(peak_signal_noise_ratio(gt[mask], pred[mask], data_range=data_range))
    curve = frc_curve(_frc_input(gt, mask), _frc_input(pred, mask))
    index = frc50(curve)
    nyquist = len(curve) - 1
    return {"mae": float(np.mean(np.abs(error))), "mse": float(np.mean(error ** 2)), "psnr": psnr,
            "ssim": _ssim(gt, pred, mask, data_range), "frc50": index,
            "frc50_fraction_nyquist": float(index / nyquist) if nyquist else 1.0,
            "frc_nyquist_index": nyquist, "data_range": data_range}


def metrics(pred_amp: np.ndarray, gt_amp: np.ndarray, pred_phase: np.ndarray, gt_phase: np.ndarray,
            mask: Optional[np.ndarray] = None) -> dict[str, Any]:
    """{'amplitude': {...}, 'phase': {...}, 'data_range': {...}}: MAE, MSE, PSNR, SSIM, FRC50 per channel.

    PSNR/SSIM use data_range = max − min of the ground truth (on `mask`), recorded per channel;
    `ssim_original` is SSIM in the original study's convention (phase as (φ + π)/2π, data range 1).
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (pred_amp, gt_amp, pred_phase, gt_phase)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 2:
        raise ValueError(f"metrics need four 2-D images of one shape, got {[a.shape for a in arrays]}")
    mask = np.ones(arrays[0].shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != arrays[0].shape or not mask.any():
        raise ValueError(f"mask {mask.shape} must match the images {arrays[0].shape} and select some pixels")
    amplitude = _channel_metrics(arrays[0], arrays[1], mask)
    phase = _channel_metrics(arrays[2], arrays[3], mask)
    # The original study's convention (its Phase G): amplitude with its own data range (as above),
    # phase mapped to (φ + π)/2π and compared with data range 1, i.e. on a 2π scale.
    amplitude["ssim_original"] = amplitude["ssim"]
    phase["ssim_original"] = _ssim(*(((a + np.pi) / (2 * np.pi)) for a in (arrays[3], arrays[2])), mask, 1.0)
    return {"amplitude": amplitude, "phase": phase,
            "data_range": {"amplitude": amplitude["data_range"], "phase": phase["data_range"]},
            "ssim_window": SSIM_WINDOW}


# ----------------------------------------------------------------------------- files

def write_metrics(path: PathLike, payload: dict[str, Any]) -> Path:
    path = Path(path)
    text = json.dumps(jsonable(payload), sort_keys=True, indent=2, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))
    return path


def save_reconstruction(path: PathLike, image: np.ndarray, coverage: np.ndarray, **extra: np.ndarray) -> Path:
    """Stitched image (complex64) and coverage (float32), plus optional arrays, as a compressed npz (atomic)."""
    path = Path(path)
    arrays = {"image": np.asarray(image).astype(np.complex64), "coverage": np.asarray(coverage).astype(np.float32)}
    arrays.update({k: np.asarray(v) for k, v in extra.items()})
    with atomic_file(path) as handle:
        np.savez_compressed(handle, **arrays)
    return path


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "∞" if isinstance(value, float) and value > 0 else "n/a"
    return f"{value:.{digits}g}"


def _title(name: str, m: dict[str, Any]) -> str:
    return (f"Reconstruction {name}\nSSIM {_fmt(m['ssim'])} (original convention {_fmt(m.get('ssim_original'))})\n"
            f"PSNR {_fmt(m['psnr'])} dB  "
            f"MAE {_fmt(m['mae'], 3)}  FRC50 {m['frc50']}/{m['frc_nyquist_index']}")


def _patchwise_line(patchwise: Optional[dict[str, Any]]) -> str:
    if not patchwise:
        return ""
    return (f"\nper-patch correlation with the truth (central {patchwise['crop']} px, own mean phase removed): "
            f"amplitude {_fmt(patchwise['amplitude_correlation'], 3)}, phase {_fmt(patchwise['phase_correlation'], 3)}")


def save_figure(path: PathLike, aligned: Alignment, result: dict[str, Any], title: Optional[str] = None) -> Path:
    """2×2 PNG: ground truth vs reconstruction, amplitude (top) and phase (bottom), with colour bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(10, 9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    rows = [("amplitude", aligned.gt_amp, aligned.pred_amp, "gray"),
            ("phase", aligned.gt_phase, aligned.pred_phase, "twilight")]
    for row, (name, gt, pred, cmap) in enumerate(rows):
        vmin, vmax = float(np.min(gt[aligned.mask])), float(np.max(gt[aligned.mask]))
        shown = np.where(aligned.mask, pred, np.nan)
        for col, (image, label) in enumerate(((gt, f"Ground truth {name}\n(data range {_fmt(result[name]['data_range'])})"),
                                              (shown, _title(name, result[name])))):
            ax = axes[row, col]
            handle = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1,
                               interpolation="nearest")
            ax.set_title(label, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(handle, ax=ax, shrink=0.8, label=name + (" (rad)" if name == "phase" else ""))
    registration = result.get("registration") or {}
    shift = registration.get("shift") or [0.0, 0.0]
    threshold = result.get("illumination_threshold")
    scored = (f"scored: {int(aligned.mask.sum())} px" + (f" lit ≥ {threshold:.0%} of the peak" if threshold else "")
              + f" ({100 * aligned.covered_fraction:.0f} % of the box)")
    fig.suptitle(title or (f"{result.get('n_patterns')} patterns, stitch crop {result.get('stitch_crop')} px, "
                           f"{scored}, shift (dy, dx) = ({shift[0]:.2f}, {shift[1]:.2f}) px "
                           f"{'applied' if aligned.shift_applied else 'not applied'} "
                           f"(search ±{registration.get('max_shift_px', 0):g} px)"
                           + _patchwise_line(result.get("patchwise"))),
                 fontsize=10)
    with atomic_file(path) as handle:
        fig.savefig(handle, format="png", dpi=80)
    return path


# ----------------------------------------------------------------------------- per-patch scores

def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row pair of a and b (n, m); 0 where either row is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.where(norm > 0, (a * b).sum(axis=1) / np.where(norm > 0, norm, 1.0), 0.0)


def _patch_correlations(predicted: np.ndarray, truth: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch amplitude and mean-free phase correlations (n,) over the central crop×crop."""
    N = predicted.shape[-1]
    lo = N // 2 - crop // 2
    region = (slice(None), slice(lo, lo + crop), slice(lo, lo + crop))
    pred, true = predicted[region].reshape(len(predicted), -1), truth[region].reshape(len(truth), -1)

    def mean_free_phase(values: np.ndarray) -> np.ndarray:
        # relative to the circular mean: no wrap at ±π for patches whose phase sits near π
        return np.angle(values * np.conj(values.mean(axis=1, keepdims=True)))

    return (_pearson_rows(np.abs(pred), np.abs(true)),
            _pearson_rows(mean_free_phase(pred), mean_free_phase(true)))


def _patchwise_summary(amplitude: np.ndarray, phase: np.ndarray, crop: int) -> dict[str, float]:
    return {"amplitude_correlation": float(np.mean(amplitude)), "phase_correlation": float(np.mean(phase)),
            "crop": int(crop), "n_patches": int(len(amplitude))}


def patchwise_correlation(predicted: np.ndarray, truth: np.ndarray, crop: int) -> dict[str, float]:
    """Mean per-patch correlation of amplitude and of mean-free phase over each patch's central
    crop×crop region; predicted and truth (n, N, N) complex."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.shape != truth.shape or predicted.ndim != 3:
        raise ValueError(f"predicted {predicted.shape} and true {truth.shape} patches must both be (n, N, N)")
    return _patchwise_summary(*_patch_correlations(predicted, truth, crop), crop)


def patchwise_against_object(predicted: np.ndarray, positions_xy: np.ndarray, obj: np.ndarray,
                             crop: int) -> dict[str, float]:
    """patchwise_correlation against the object's patches at the positions, in chunks (bounded memory)."""
    N = predicted.shape[-1]
    amplitude, phase = [], []
    for start in range(0, len(predicted), CHUNK):
        xy = positions_xy[start:start + CHUNK]
        truth = physics.extract_patches(obj, xy[:, 0], xy[:, 1], N)
        a, p = _patch_correlations(predicted[start:start + CHUNK], truth, crop)
        amplitude.append(a)
        phase.append(p)
    return _patchwise_summary(np.concatenate(amplitude), np.concatenate(phase), crop)


# ----------------------------------------------------------------------------- the whole evaluation

def score_image(image: np.ndarray, coverage: np.ndarray, ground_truth: np.ndarray,
                lit: Optional[np.ndarray] = None, *,
                illumination_threshold: float = DEFAULT_ILLUMINATION_THRESHOLD,
                min_coverage: float = DEFAULT_MIN_COVERAGE,
                max_shift_px: float = DEFAULT_MAX_SHIFT) -> tuple[Alignment, dict[str, Any]]:
    """Align a stitched image to the ground truth on the scored region and score it.

    The same path scores a reconstruction and the references a benchmark compares it with (a flat
    object, a low-passed truth), so their numbers are comparable. Returns (alignment, metrics).
    """
    region = scored_region(coverage, lit, illumination_threshold, min_coverage)
    aligned = align(image, ground_truth, region, max_shift_px=max_shift_px)
    scores = metrics(aligned.pred_amp, aligned.gt_amp, aligned.pred_phase, aligned.gt_phase, aligned.mask)
    result: dict[str, Any] = {
        "amplitude": scores["amplitude"], "phase": scores["phase"], "data_range": scores["data_range"],
        "registration": {"max_shift_px": float(max_shift_px), "shift": [aligned.shift[0], aligned.shift[1]],
                         "applied": aligned.shift_applied},
        "registration_shift": [aligned.shift[0], aligned.shift[1]],
        "registration_applied": aligned.shift_applied,
        "min_coverage": float(min_coverage),
        "region": {"bbox_rows": [aligned.bbox[0], aligned.bbox[1]], "bbox_cols": [aligned.bbox[2], aligned.bbox[3]],
                   "covered_fraction": aligned.covered_fraction, "scored_pixels": int(aligned.mask.sum()),
                   "rule": ("stitch coverage ≥ min_coverage" if lit is None else
                            "stitch coverage ≥ min_coverage and test-scan illumination Σ|P|² ≥ "
                            "illumination_threshold × its maximum")},
        "illumination_threshold": None if lit is None else float(illumination_threshold),
        "amplitude_scale": aligned.amplitude_scale,
        "phase_plane": dict(zip(("a", "b", "c"), aligned.phase_plane)),
        "ssim_window": scores["ssim_window"],
    }
    return aligned, result


@dataclass
class Scored:
    """One scored prediction: the metrics and what `write_evaluation` needs to write its files."""
    metrics: dict[str, Any]
    aligned: Alignment
    image: np.ndarray
    coverage: np.ndarray
    lit: Optional[np.ndarray]


def score_predictions(prediction_patches: np.ndarray, positions: np.ndarray, ground_truth_object: np.ndarray, *,
                      probe: Optional[np.ndarray] = None, crop: Optional[int] = None,
                      illumination_threshold: float = DEFAULT_ILLUMINATION_THRESHOLD,
                      min_coverage: float = DEFAULT_MIN_COVERAGE,
                      max_shift_px: float = DEFAULT_MAX_SHIFT) -> Scored:
    """evaluate_predictions without writing anything (e.g. a score after every epoch); the result can
    be written later by `write_evaluation`."""
    patches = np.asarray(prediction_patches)
    positions = np.asarray(positions, dtype=np.float64)
    ground_truth = np.asarray(ground_truth_object)
    if patches.ndim not in (3, 4) or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"prediction patches must be (n, C, N, N) or (n, N, N), got {patches.shape}")
    if positions.shape[-1] != 2 or positions.shape[:-1] != patches.shape[:-2]:
        raise ValueError(f"positions {positions.shape} do not match the patches {patches.shape}: "
                         f"expected {patches.shape[:-2] + (2,)} (x, y) per patch")
    if ground_truth.ndim != 2:
        raise ValueError(f"ground truth object must be a 2-D image, got shape {ground_truth.shape}")
    bad = int(np.count_nonzero(~np.isfinite(patches)))
    if bad:
        raise ValueError(f"prediction patches hold {bad} non-finite value(s) (NaN/inf): the model diverged")
    if probe is not None and np.asarray(probe).shape != patches.shape[-2:]:
        raise ValueError(f"probe {np.asarray(probe).shape} does not match the patches' {patches.shape[-2:]}")
    flat_patches = patches.reshape(-1, *patches.shape[-2:])
    flat_positions = positions.reshape(-1, 2)
    scan = np.unique(np.round(flat_positions, 6), axis=0)  # groups may share members: light each once
    N = patches.shape[-1]
    crop = N // 2 if crop is None else int(crop)

    weight = None if probe is None else np.abs(np.asarray(probe, dtype=np.complex128)) ** 2
    image, coverage = stitch(flat_patches, flat_positions, ground_truth.shape, crop, weight=weight)
    lit = None if probe is None else illumination(probe, scan, ground_truth.shape)
    aligned, result = score_image(image, coverage, ground_truth, lit, illumination_threshold=illumination_threshold,
                                  min_coverage=min_coverage, max_shift_px=max_shift_px)
    result.update(n_patterns=int(len(scan)), n_patches=int(len(flat_patches)), stitch_crop=crop,
                  patchwise=patchwise_against_object(flat_patches, flat_positions, ground_truth, crop))
    return Scored(result, aligned, image, coverage, lit)


def score_object(image: np.ndarray, positions: np.ndarray, ground_truth_object: np.ndarray, probe: np.ndarray, *,
                 crop: Optional[int] = None, illumination_threshold: float = DEFAULT_ILLUMINATION_THRESHOLD,
                 max_shift_px: float = DEFAULT_MAX_SHIFT) -> Scored:
    """score_predictions for an object reconstructed whole on the ground truth's grid (an iterative
    engine): the same lit region, alignment and metrics; the per-patch scores compare the image's
    patches at the scan `positions` (n, 2) (x, y). Every pixel counts as covered: the lit rule alone
    picks the scored pixels."""
    image, ground_truth = np.asarray(image), np.asarray(ground_truth_object)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    if image.shape != ground_truth.shape or image.ndim != 2:
        raise ValueError(f"reconstruction {image.shape} must be a 2-D image of the ground truth's shape "
                         f"{ground_truth.shape}")
    bad = int(np.count_nonzero(~np.isfinite(image)))
    if bad:
        raise ValueError(f"the reconstruction holds {bad} non-finite value(s) (NaN/inf): the engine diverged")
    N = np.asarray(probe).shape[-1]
    crop = N // 2 if crop is None else int(crop)
    scan = np.unique(np.round(positions, 6), axis=0)
    coverage = np.ones(image.shape, dtype=np.float64)
    lit = illumination(probe, scan, ground_truth.shape)
    aligned, result = score_image(image, coverage, ground_truth, lit, illumination_threshold=illumination_threshold,
                                  max_shift_px=max_shift_px)
    patches = physics.extract_patches(image, positions[:, 0], positions[:, 1], N)
    result.update(n_patterns=int(len(scan)), n_patches=int(len(positions)), stitch_crop=None,
                  patchwise=patchwise_against_object(patches, positions, ground_truth, crop))
    return Scored(result, aligned, image, coverage, lit)


def write_evaluation(run_dir: PathLike, scored: Scored, title: Optional[str] = None) -> dict[str, Any]:
    """Write metrics.json, reconstruction.png and reconstruction.npz of a scored prediction to
    `run_dir`; returns its metrics (the body of metrics.json without the FRC curves)."""
    aligned = scored.aligned
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    curves = {name: frc_curve(_frc_input(gt, aligned.mask), _frc_input(pred, aligned.mask)).tolist()
              for name, gt, pred in (("amplitude", aligned.gt_amp, aligned.pred_amp),
                                     ("phase", aligned.gt_phase, aligned.pred_phase))}
    extra = {"bbox": np.asarray(aligned.bbox, dtype=np.int64)}
    if scored.lit is not None:
        extra["illumination"] = scored.lit.astype(np.float32)
    save_reconstruction(run_dir / RECONSTRUCTION_NAME, scored.image, scored.coverage, **extra)
    save_figure(run_dir / FIGURE_NAME, aligned, scored.metrics, title)
    write_metrics(run_dir / METRICS_NAME, {**scored.metrics, "frc_curves": curves})
    return scored.metrics


def evaluate_predictions(prediction_patches: np.ndarray, positions: np.ndarray, ground_truth_object: np.ndarray,
                         run_dir: PathLike, *, probe: Optional[np.ndarray] = None, crop: Optional[int] = None,
                         illumination_threshold: float = DEFAULT_ILLUMINATION_THRESHOLD,
                         min_coverage: float = DEFAULT_MIN_COVERAGE, max_shift_px: float = DEFAULT_MAX_SHIFT,
                         title: Optional[str] = None) -> dict[str, Any]:
    """Stitch predicted patches (n, C, N, N) or (n, N, N) at member positions (n, C, 2) or (n, 2) (x, y),
    align to the ground-truth object, score, and write metrics.json, reconstruction.png and
    reconstruction.npz to `run_dir`. Returns the metrics dict (also the body of metrics.json).

    With the `probe`, only the illuminated region is scored: pixels where the test scan's summed
    probe intensity reaches `illumination_threshold` of its maximum (and the stitch covers them).
    """
    scored = score_predictions(prediction_patches, positions, ground_truth_object, probe=probe, crop=crop,
                               illumination_threshold=illumination_threshold, min_coverage=min_coverage,
                               max_shift_px=max_shift_px)
    return write_evaluation(run_dir, scored, title)
