"""The whole scoring of predicted object patches, without writing anything: stitch them
(stitching.py: phases synchronised through the overlaps, central crops averaged onto the object
grid and refined), find the scored region, align (alignment.py) and score (scores.py).
`report.write_evaluation` writes a `Scored` result's files; `predict_patches` is how a model's
patches are obtained for it (the final evaluation and the per-epoch scores alike).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from fly64_train import metric_table, physics
from fly64_train.evaluation.alignment import (DEFAULT_ILLUMINATION_THRESHOLD, DEFAULT_MAX_SHIFT, DEFAULT_MIN_COVERAGE,
                                              Alignment, align, scored_region)
from fly64_train.evaluation.scores import metrics, patchwise_against_object
from fly64_train.stitching import illumination, stitch


def predict_patches(model, x: np.ndarray, rel: np.ndarray, batch_size: int) -> np.ndarray:
    """Object patches (B, C, N, N) of a model (backends.base.Model) for grouped inputs, batch by batch."""
    return np.concatenate([model.predict(x[i:i + batch_size], rel[i:i + batch_size]).patches
                           for i in range(0, len(x), batch_size)])


def timed_predict(model, x: np.ndarray, rel: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """predict_patches and its wall time in seconds (the network's inference time on the split)."""
    started = time.perf_counter()
    patches = predict_patches(model, x, rel, batch_size)
    return patches, time.perf_counter() - started


def scan_positions(positions: np.ndarray) -> np.ndarray:
    """The distinct scan positions (n, 2) among member positions: groups share members, and the scan's
    illumination must light each position once. Equal to 1/1000 px, so that a position recomputed as
    centre + float32 offset still counts once (distinct scan positions are pixels apart)."""
    return np.unique(np.round(np.asarray(positions, dtype=np.float64).reshape(-1, 2), 3), axis=0)


def score_image(image: np.ndarray, coverage: np.ndarray, ground_truth: np.ndarray,
                lit: Optional[np.ndarray] = None, *,
                illumination_threshold: float = DEFAULT_ILLUMINATION_THRESHOLD,
                min_coverage: float = DEFAULT_MIN_COVERAGE,
                max_shift_px: float = DEFAULT_MAX_SHIFT) -> tuple[Alignment, dict[str, Any]]:
    """Align a stitched image to the ground truth on the scored region and score it.

    The same path scores a reconstruction and the yardsticks a benchmark compares it with (a flat
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
    for metric in metric_table.computed():  # the table's metrics with their own function
        metric_table.place(result, metric.location, float(metric.compute(aligned)))
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
    """Stitch predicted patches (n, C, N, N) or (n, N, N) at member positions (n, C, 2) or (n, 2) (x, y),
    align to the ground-truth object and score, writing nothing (e.g. a score after every epoch);
    `report.write_evaluation` writes the result.

    With the `probe`, only the illuminated region is scored: pixels where the test scan's summed
    probe intensity reaches `illumination_threshold` of its maximum (and the stitch covers them).
    """
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
    scan = scan_positions(flat_positions)
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
    scan = scan_positions(positions)
    coverage = np.ones(image.shape, dtype=np.float64)
    lit = illumination(probe, scan, ground_truth.shape)
    aligned, result = score_image(image, coverage, ground_truth, lit, illumination_threshold=illumination_threshold,
                                  max_shift_px=max_shift_px)
    patches = physics.extract_patches(image, positions[:, 0], positions[:, 1], N)
    result.update(n_patterns=int(len(scan)), n_patches=int(len(positions)), stitch_crop=None,
                  patchwise=patchwise_against_object(patches, positions, ground_truth, crop))
    return Scored(result, aligned, image, coverage, lit)
