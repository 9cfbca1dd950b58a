"""Evaluation of a trained model on the test split (framework-free), one job per module:

- `alignment`: the scored region (stitch coverage, test-scan illumination) and one global
  alignment to the ground truth (bounded registration, amplitude scale, phase offset and plane);
- `scores`: the image metrics (MAE, MSE, PSNR, SSIM in two conventions, FRC50) and the per-patch
  correlations;
- `scoring`: predicted patches → stitched image → region → alignment → scores (`score_predictions`,
  writing nothing; `score_image` for an image already stitched; `score_object` for an object an
  iterative engine reconstructed whole; `predict_patches` / `timed_predict` from a model);
- `report`: the files (`write_evaluation`: metrics.json, reconstruction.png, reconstruction.npz;
  `evaluate_predictions` scores and writes in one call).

The names below are the package's API; the modules hold the rest.
"""
from fly64_train.evaluation.alignment import Alignment, align, bounded_shift, scored_region
from fly64_train.evaluation.report import (FIGURE_NAME, METRICS_NAME, RECONSTRUCTION_NAME, evaluate_predictions,
                                           save_figure, save_reconstruction, write_evaluation, write_metrics)
from fly64_train.evaluation.scores import (collapse_warning, frc50, frc_curve, metrics, patchwise_against_object,
                                          patchwise_correlation)
from fly64_train.evaluation.scoring import (Scored, predict_patches, score_image, score_object, score_predictions,
                                            timed_predict)

__all__ = ["Alignment", "align", "bounded_shift", "scored_region", "FIGURE_NAME", "METRICS_NAME",
           "RECONSTRUCTION_NAME", "evaluate_predictions", "save_figure", "save_reconstruction", "write_evaluation",
           "write_metrics", "collapse_warning", "frc50", "frc_curve", "metrics", "patchwise_against_object",
           "patchwise_correlation",
           "Scored", "predict_patches", "score_image", "score_object", "score_predictions", "timed_predict"]
