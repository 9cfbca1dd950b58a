"""Scores of an aligned reconstruction against the truth, and of predicted patches one by one.

- `metrics`: MAE, MSE, PSNR and SSIM (data_range = ground-truth max − min, recorded), SSIM in the
  original study's convention too (`ssim_original`: phase as (φ + π)/2π with data range 1), FRC50
  (first Fourier ring, index and fraction of Nyquist, where the FRC drops below 0.5, on a square
  centre crop), separately for amplitude and phase. Pixels inside the bounding box that are not
  scored are left out: MAE/MSE/PSNR use the scored pixels, SSIM averages its map over pixels whose
  whole 7×7 window is scored, the FRC compares the mean-free images with the rest set to zero.
- `patchwise_correlation`: per predicted patch, the Pearson correlation with the true patch over
  the central crop of amplitude and of phase, each patch's own mean phase removed first (the far
  field cannot see a patch's constant phase, so stitched phase loses large-scale structure even
  when every patch is right); the mean over patches is reported, with the fraction of predicted
  patches that are flat (`flat_amplitude_fraction`, `flat_phase_fraction`). A flat output on every
  patch is a collapsed generator branch (dead units: no gradient reaches it again), which
  `collapse_warning` names.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from fly64_train import physics
from fly64_train.evaluation.alignment import holes_filled

SSIM_WINDOW = 7  # skimage's default window
CHUNK = 1024  # patches per chunk of the per-patch scores
FRC_THRESHOLD = 0.5
# A predicted patch is flat when its central crop varies less than this (phase in rad, amplitude
# relative to its mean): float32 round-off of a constant output, far below any real texture.
FLAT_TOLERANCE = 1e-4


def frc_input(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean-free image, zero outside `mask` (holes carry no shared pattern into the FRC)."""
    out = np.array(image, dtype=np.float64) - float(np.mean(image[mask]))
    out[~mask] = 0.0
    return out


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
    _, full = structural_similarity(holes_filled(gt, mask), holes_filled(pred, mask), data_range=data_range,
                                    win_size=SSIM_WINDOW, full=True)
    inside = binary_erosion(mask, np.ones((SSIM_WINDOW, SSIM_WINDOW), dtype=bool), border_value=0)
    return float(np.mean(full[inside if inside.any() else mask]))


def _channel_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    from skimage.metrics import peak_signal_noise_ratio

    data_range = _data_range(gt[mask])
    error = pred[mask] - gt[mask]
    with np.errstate(divide="ignore"):
        psnr = float(peak_signal_noise_ratio(gt[mask], pred[mask], data_range=data_range))
    curve = frc_curve(frc_input(gt, mask), frc_input(pred, mask))
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


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row pair of a and b (n, m); 0 where either row is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.where(norm > 0, (a * b).sum(axis=1) / np.where(norm > 0, norm, 1.0), 0.0)


def _patch_correlations(predicted: np.ndarray, truth: np.ndarray, crop: int) -> tuple[np.ndarray, ...]:
    """Per-patch amplitude and mean-free phase correlations (n,) over the central crop×crop, and
    whether each predicted patch's amplitude and phase are flat there (FLAT_TOLERANCE)."""
    N = predicted.shape[-1]
    lo = N // 2 - crop // 2
    region = (slice(None), slice(lo, lo + crop), slice(lo, lo + crop))
    pred, true = predicted[region].reshape(len(predicted), -1), truth[region].reshape(len(truth), -1)

    def mean_free_phase(values: np.ndarray) -> np.ndarray:
        # relative to the circular mean: no wrap at ±π for patches whose phase sits near π
        return np.angle(values * np.conj(values.mean(axis=1, keepdims=True)))

    amplitude, phase = np.abs(pred), mean_free_phase(pred)
    flat_amplitude = amplitude.std(axis=1) <= FLAT_TOLERANCE * np.maximum(amplitude.mean(axis=1), 1e-12)
    flat_phase = phase.std(axis=1) <= FLAT_TOLERANCE
    return (_pearson_rows(amplitude, np.abs(true)), _pearson_rows(phase, mean_free_phase(true)),
            flat_amplitude, flat_phase)


def _patchwise_summary(amplitude: np.ndarray, phase: np.ndarray, flat_amplitude: np.ndarray,
                       flat_phase: np.ndarray, crop: int) -> dict[str, float]:
    return {"amplitude_correlation": float(np.mean(amplitude)), "phase_correlation": float(np.mean(phase)),
            "flat_amplitude_fraction": float(np.mean(flat_amplitude)),
            "flat_phase_fraction": float(np.mean(flat_phase)), "crop": int(crop), "n_patches": int(len(amplitude))}


def collapse_warning(patchwise: dict) -> Optional[str]:
    """A warning when every predicted patch is flat in amplitude or in phase, else None."""
    flat = [part for part in ("amplitude", "phase") if patchwise.get(f"flat_{part}_fraction", 0.0) >= 1.0]
    if not flat:
        return None
    return (f"the network's {' and '.join(flat)} output is flat on every test patch: that branch of the "
            "generator has collapsed (dead units, which no gradient revives) and reconstructs nothing there "
            "(README, 'The supervised baseline')")


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
    chunks = []
    for start in range(0, len(predicted), CHUNK):
        xy = positions_xy[start:start + CHUNK]
        truth = physics.extract_patches(obj, xy[:, 0], xy[:, 1], N)
        chunks.append(_patch_correlations(predicted[start:start + CHUNK], truth, crop))
    return _patchwise_summary(*(np.concatenate(parts) for parts in zip(*chunks)), crop)
