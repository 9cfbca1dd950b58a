"""The files of an evaluation in a run directory: `metrics.json` (strict JSON: a non-finite value,
such as the PSNR of a perfect reconstruction, is written as null; the FRC curves too),
`reconstruction.png` (ground truth vs reconstruction, amplitude and phase) and
`reconstruction.npz` (the stitched image, its coverage and illumination). Every write is atomic.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from fly64_train.evaluation.alignment import Alignment
from fly64_train.evaluation.alignment import DEFAULT_ILLUMINATION_THRESHOLD, DEFAULT_MAX_SHIFT, DEFAULT_MIN_COVERAGE
from fly64_train.evaluation.scoring import Scored, score_predictions
from fly64_train.evaluation.scores import frc_curve, frc_input
from fly64_train.files import atomic_file, atomic_write_bytes, jsonable

METRICS_NAME = "metrics.json"
FIGURE_NAME = "reconstruction.png"
RECONSTRUCTION_NAME = "reconstruction.npz"

PathLike = Union[str, os.PathLike]


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


UNSCORED_VEIL = 0.3  # opacity of the white veil over pixels outside the scored region


def show_scored(ax, image: np.ndarray, mask: np.ndarray, veil: float = UNSCORED_VEIL, **imshow):
    """Draw the whole image and veil (not blank) the pixels outside the scored region: on a sparse scan
    the scored region is the probe's bright core around each position, and blanking the rest would
    show that region's shape instead of what the stitch holds (veil 0: no veil, for small panels
    whose titles give the scored fraction). Returns the image's handle."""
    handle = ax.imshow(image, interpolation="nearest", **imshow)
    if veil > 0:
        shade = np.zeros(mask.shape + (4,), dtype=np.float32)
        shade[~mask] = (1.0, 1.0, 1.0, veil)
        ax.imshow(shade, interpolation="nearest")
    return handle


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
        for col, (image, label) in enumerate(((gt, f"Ground truth {name}\n(data range {_fmt(result[name]['data_range'])})"),
                                              (pred, _title(name, result[name])))):
            ax = axes[row, col]
            handle = show_scored(ax, image, aligned.mask, cmap=cmap, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1)
            ax.set_title(label, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(handle, ax=ax, shrink=0.8, label=name + (" (rad)" if name == "phase" else ""))
    registration = result.get("registration") or {}
    shift = registration.get("shift") or [0.0, 0.0]
    threshold = result.get("illumination_threshold")
    scored = (f"scored: {int(aligned.mask.sum())} px" + (f" lit ≥ {threshold:.0%} of the peak" if threshold else "")
              + f" ({100 * aligned.covered_fraction:.0f} % of the box; the rest veiled)")
    fig.suptitle(title or (f"{result.get('n_patterns')} patterns, stitch crop {result.get('stitch_crop')} px, "
                           f"{scored},\nshift (dy, dx) = ({shift[0]:.2f}, {shift[1]:.2f}) px "
                           f"{'applied' if aligned.shift_applied else 'not applied'} "
                           f"(search ±{registration.get('max_shift_px', 0):g} px)"
                           + _patchwise_line(result.get("patchwise"))),
                 fontsize=10)
    with atomic_file(path) as handle:
        fig.savefig(handle, format="png", dpi=80)
    return path


def write_evaluation(run_dir: PathLike, scored: Scored, title: Optional[str] = None) -> dict[str, Any]:
    """Write metrics.json, reconstruction.png and reconstruction.npz of a scored prediction to
    `run_dir`; returns its metrics (the body of metrics.json without the FRC curves)."""
    aligned = scored.aligned
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    curves = {name: frc_curve(frc_input(gt, aligned.mask), frc_input(pred, aligned.mask)).tolist()
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
