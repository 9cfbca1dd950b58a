"""Evaluation of a trained model on the test split (framework-free): stitch the predicted object
patches into one image, align it to the ground-truth object, score it, and draw it.

- `stitch`: each patch's central crop×crop region (default N//2) is splatted bilinearly at its scan
  position (the adjoint of physics.extract, computed with physics.place on a small local window
  and accumulated with bincount), then divided by the same stitching of ones (the coverage).
- `align`: both images are cropped to the bounding box of the well-covered region
  (coverage ≥ min_coverage); the shift between the amplitudes is measured with
  skimage.registration.phase_cross_correlation (mean-free, Hann-windowed amplitudes, upsample
  factor 50) and applied (Fourier shift, margins cropped) only with register=True; the amplitude is
  scaled by mean(gt)/mean(pred); the phase difference loses a global offset and a least-squares
  plane a·x + b·y + c (a coarse ramp is first taken from the FFT peak of exp(iΔφ), so wrapped ramps
  are removed too). The aligned phase is gt phase + the wrapped residual, so the phase metrics
  measure the residual modulo 2π.
- `metrics`: MAE, MSE, PSNR and SSIM (data_range = ground-truth max − min, recorded), FRC50 (first
  Fourier ring, index and fraction of Nyquist, where the FRC drops below 0.5, on a square centre
  crop), separately for amplitude and phase. Pixels inside the bounding box that are not well
  covered (holes of a sparse scan) are left out: MAE/MSE/PSNR use the covered pixels, SSIM averages
  its map over pixels whose whole 7×7 window is covered, the FRC compares the mean-free images
  with holes set to zero (no shared constant fill; the hole pattern still mixes frequencies, so
  FRC50 of a sparse scan with holes is optimistic).
- `patchwise_correlation`: per predicted patch, the Pearson correlation with the true patch over
  the central crop of amplitude and of phase, each patch's own mean phase removed first (the far
  field cannot see a patch's constant phase, so stitched phase loses large-scale structure even
  when every patch is right); the mean over patches is reported.
- `evaluate_predictions`: all of it, plus `metrics.json`, `reconstruction.png` and
  `reconstruction.npz` in the run directory (atomic writes). Non-finite values (PSNR of a perfect
  reconstruction is +inf) are written to metrics.json as null (strict JSON).
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from fly64_train import physics
from fly64_train.architecture import COVERAGE_EPSILON
from fly64_train.files import atomic_output, atomic_write_bytes, jsonable

METRICS_NAME = "metrics.json"
FIGURE_NAME = "reconstruction.png"
RECONSTRUCTION_NAME = "reconstruction.npz"
SSIM_WINDOW = 7  # skimage's default window
REGISTRATION_UPSAMPLE = 50
DEFAULT_MIN_COVERAGE = 0.5
STITCH_CHUNK = 1024
FRC_THRESHOLD = 0.5

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------- stitching

def stitch(patches: np.ndarray, positions_xy: np.ndarray, object_shape: tuple[int, int],
           crop: Optional[int] = None, chunk: int = STITCH_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Overlap-normalised stitching of patches (n, N, N) centred at positions (n, 2) = (x, y).

    Returns (image complex128 of `object_shape`, coverage float64): image = Σ place(crop_k) /
    Σ place(ones) where coverage > 1e-6, else 0.
    """
    patches = np.asarray(patches)
    positions = np.asarray(positions_xy, dtype=np.float64)
    if patches.ndim == 4:  # (n, C, N, N) groups: flatten
        patches = patches.reshape(-1, *patches.shape[-2:])
        positions = positions.reshape(-1, 2)
    if patches.ndim != 3 or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"patches must be (n, N, N) square, got shape {patches.shape}")
    if positions.shape != (len(patches), 2):
        raise ValueError(f"positions must be (n, 2) = (x, y) with n = {len(patches)} patches, got {positions.shape}")
    if len(patches) == 0:
        raise ValueError("no patches to stitch")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain NaN or infinite values")
    height, width = (int(s) for s in object_shape[-2:])
    N = patches.shape[-1]
    crop = N // 2 if crop is None else int(crop)
    if not 1 <= crop <= N:
        raise ValueError(f"stitch crop must be in [1, N={N}], got {crop}")
    start = N // 2 - crop // 2
    window = crop + 1
    total = np.zeros(height * width, dtype=np.complex128)
    coverage = np.zeros(height * width, dtype=np.float64)
    local = np.arange(window)
    for lo in range(0, len(patches), chunk):
        part = patches[lo:lo + chunk, start:start + crop, start:start + crop].astype(np.complex64, copy=False)
        top_left = positions[lo:lo + chunk] - crop // 2  # coordinate of cropped pixel 0, (x, y)
        origin = np.floor(top_left).astype(np.int64)
        centres = (top_left - origin) + crop // 2  # local centres: same fractional shift, window origin 0
        values = physics.place(part, centres, (window, window))
        weights = physics.place(np.ones(part.shape, dtype=np.float32), centres, (window, window))
        rows = origin[:, 1, None, None] + local[None, :, None]
        cols = origin[:, 0, None, None] + local[None, None, :]
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        flat = (rows * width + cols)[inside]
        values, weights = values[inside], weights[inside].astype(np.float64)
        total.real += np.bincount(flat, weights=values.real.astype(np.float64), minlength=height * width)
        total.imag += np.bincount(flat, weights=values.imag.astype(np.float64), minlength=height * width)
        coverage += np.bincount(flat, weights=weights, minlength=height * width)
    covered = coverage > COVERAGE_EPSILON
    image = np.zeros_like(total)
    image[covered] = total[covered] / coverage[covered]
    return image.reshape(height, width), coverage.reshape(height, width)


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
    """Mean-free image (holes filled) under a Hann window, so the crop's edges do not pin the registration."""
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


def align(reconstruction: np.ndarray, ground_truth: np.ndarray, coverage: np.ndarray,
          min_coverage: float = DEFAULT_MIN_COVERAGE, register: bool = False,
          upsample_factor: int = REGISTRATION_UPSAMPLE) -> Alignment:
    """Crop to the well-covered bounding box, (optionally) register, scale amplitude, remove phase plane."""
    from skimage.registration import phase_cross_correlation
    import scipy.ndimage

    reconstruction, ground_truth = np.asarray(reconstruction), np.asarray(ground_truth)
    coverage = np.asarray(coverage, dtype=np.float64)
    if not reconstruction.shape == ground_truth.shape == coverage.shape or reconstruction.ndim != 2:
        raise ValueError(f"reconstruction {reconstruction.shape}, ground truth {ground_truth.shape} and "
                         f"coverage {coverage.shape} must be 2-D images of one shape")
    well = coverage >= min(float(min_coverage), float(coverage.max())) - 1e-9
    well &= coverage > COVERAGE_EPSILON
    if not well.any():
        raise ValueError("the reconstruction covers no pixel of the object (coverage is zero everywhere)")
    r0, r1, c0, c1 = _bbox(well)
    pred = reconstruction[r0:r1, c0:c1].astype(np.complex128)
    gt = ground_truth[r0:r1, c0:c1].astype(np.complex128)
    mask = well[r0:r1, c0:c1].copy()

    shift = (0.0, 0.0)
    applied = False
    if min(mask.shape) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            measured, _, _ = phase_cross_correlation(_windowed(np.abs(gt), mask), _windowed(np.abs(pred), mask),
                                                     upsample_factor=upsample_factor)
        shift = (float(measured[0]), float(measured[1]))
    if register and any(abs(s) > 0 for s in shift):
        pred = np.fft.ifft2(scipy.ndimage.fourier_shift(np.fft.fft2(pred), shift))
        margin = int(math.ceil(max(abs(s) for s in shift)))
        if 2 * margin < min(mask.shape):
            sl = np.s_[margin:mask.shape[0] - margin, margin:mask.shape[1] - margin]
            pred, gt, mask = pred[sl], gt[sl], mask[sl]
            r0, r1, c0, c1 = r0 + margin, r1 - margin, c0 + margin, c1 - margin
        applied = True

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

    PSNR/SSIM use data_range = max − min of the ground truth (on `mask`), recorded per channel.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (pred_amp, gt_amp, pred_phase, gt_phase)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 2:
        raise ValueError(f"metrics need four 2-D images of one shape, got {[a.shape for a in arrays]}")
    mask = np.ones(arrays[0].shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != arrays[0].shape or not mask.any():
        raise ValueError(f"mask {mask.shape} must match the images {arrays[0].shape} and select some pixels")
    amplitude = _channel_metrics(arrays[0], arrays[1], mask)
    phase = _channel_metrics(arrays[2], arrays[3], mask)
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
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    return path


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "∞" if isinstance(value, float) and value > 0 else "n/a"
    return f"{value:.{digits}g}"


def _title(name: str, m: dict[str, Any]) -> str:
    return (f"Reconstruction {name}\nSSIM {_fmt(m['ssim'])}  PSNR {_fmt(m['psnr'])} dB\n"
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
    shift = result.get("registration_shift") or [0.0, 0.0]
    fig.suptitle(title or (f"{result.get('n_patterns')} patterns, stitch crop {result.get('stitch_crop')} px, "
                           f"covered {100 * aligned.covered_fraction:.0f} %, shift (dy, dx) = "
                           f"({shift[0]:.2f}, {shift[1]:.2f}) px{' applied' if aligned.shift_applied else ''}"
                           + _patchwise_line(result.get("patchwise"))),
                 fontsize=10)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
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
    for start in range(0, len(predicted), STITCH_CHUNK):
        xy = positions_xy[start:start + STITCH_CHUNK]
        truth = physics.extract_patches(obj, xy[:, 0], xy[:, 1], N)
        a, p = _patch_correlations(predicted[start:start + STITCH_CHUNK], truth, crop)
        amplitude.append(a)
        phase.append(p)
    return _patchwise_summary(np.concatenate(amplitude), np.concatenate(phase), crop)


# ----------------------------------------------------------------------------- the whole evaluation

def evaluate_predictions(prediction_patches: np.ndarray, positions: np.ndarray, ground_truth_object: np.ndarray,
                         run_dir: PathLike, crop: Optional[int] = None, min_coverage: float = DEFAULT_MIN_COVERAGE,
                         register: bool = False, title: Optional[str] = None) -> dict[str, Any]:
    """Stitch predicted patches (n, C, N, N) or (n, N, N) at member positions (n, C, 2) or (n, 2) (x, y),
    align to the ground-truth object, score, and write metrics.json, reconstruction.png and
    reconstruction.npz to `run_dir`. Returns the metrics dict (also the body of metrics.json)."""
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
    flat_patches = patches.reshape(-1, *patches.shape[-2:])
    flat_positions = positions.reshape(-1, 2)
    N = patches.shape[-1]
    crop = N // 2 if crop is None else int(crop)

    image, coverage = stitch(flat_patches, flat_positions, ground_truth.shape, crop)
    aligned = align(image, ground_truth, coverage, min_coverage=min_coverage, register=register)
    scores = metrics(aligned.pred_amp, aligned.gt_amp, aligned.pred_phase, aligned.gt_phase, aligned.mask)
    result: dict[str, Any] = {
        "amplitude": scores["amplitude"], "phase": scores["phase"], "data_range": scores["data_range"],
        "n_patterns": int(len(np.unique(np.round(flat_positions, 6), axis=0))),
        "n_patches": int(len(flat_patches)),
        "registration_shift": [aligned.shift[0], aligned.shift[1]],
        "registration_applied": aligned.shift_applied,
        "stitch_crop": crop, "min_coverage": float(min_coverage),
        "region": {"bbox_rows": [aligned.bbox[0], aligned.bbox[1]], "bbox_cols": [aligned.bbox[2], aligned.bbox[3]],
                   "covered_fraction": aligned.covered_fraction},
        "amplitude_scale": aligned.amplitude_scale,
        "phase_plane": dict(zip(("a", "b", "c"), aligned.phase_plane)),
        "ssim_window": scores["ssim_window"],
        "patchwise": patchwise_against_object(flat_patches, flat_positions, ground_truth, crop),
    }
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    curves = {name: frc_curve(_frc_input(gt, aligned.mask), _frc_input(pred, aligned.mask)).tolist()
              for name, gt, pred in (("amplitude", aligned.gt_amp, aligned.pred_amp),
                                     ("phase", aligned.gt_phase, aligned.pred_phase))}
    save_reconstruction(run_dir / RECONSTRUCTION_NAME, image, coverage,
                        bbox=np.asarray(aligned.bbox, dtype=np.int64))
    save_figure(run_dir / FIGURE_NAME, aligned, result, title)
    write_metrics(run_dir / METRICS_NAME, {**result, "frc_curves": curves})
    return result
