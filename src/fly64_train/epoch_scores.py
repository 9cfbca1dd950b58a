"""Quality during training: score the test view at the end of every k-th epoch (evaluate.every_epochs).

The loss alone cannot say whether a model reconstructs (a network can lower the Poisson NLL by
distorting the object), so a learning curve of the real scores shows where training stops paying.
The scores join the epoch's row, so history.csv and the trackers carry them next to the loss.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from fly64_train import metric_table

log = logging.getLogger(__name__)


class EpochScores:
    """Training-loop callback: every `every` epochs (and after the last) predicts the test view,
    scores it like the final evaluation, and adds the table's epoch scores (metric_table.epoch_scores) to
    the epoch's row. `last` keeps the latest (epoch, evaluation.Scored), so the final evaluation of the
    same weights is written, not redone, and `last_predict_seconds` the inference time of that prediction."""

    def __init__(self, model, inputs, data, every: int, last_epoch: int, *, batch_size: int,
                 illumination_threshold: float, max_shift_px: float):
        if every < 1:
            raise ValueError(f"every must be a positive number of epochs, got {every}")
        self.model, self.inputs, self.data = model, inputs, data
        self.every, self.last_epoch, self.batch_size = int(every), int(last_epoch), int(batch_size)
        self.options = {"illumination_threshold": illumination_threshold, "max_shift_px": max_shift_px}
        self.last: Optional[tuple[int, Any]] = None
        self.last_predict_seconds: Optional[float] = None

    def scores(self, epoch: int) -> dict[str, Any]:
        from fly64_train import evaluation  # here, not at import: a light module until it scores

        patches, self.last_predict_seconds = evaluation.timed_predict(self.model, self.inputs.x, self.inputs.rel,
                                                                      self.batch_size)
        scored = evaluation.score_predictions(patches, self.inputs.positions, self.data.obj, probe=self.data.probe,
                                              **self.options)
        self.last = (epoch, scored)
        return {key: float(metric_table.lookup(scored.metrics, metric.location))
                for key, metric in metric_table.epoch_scores().items()}

    def on_epoch_end(self, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        epoch = int(row["epoch"])
        if epoch % self.every and epoch != self.last_epoch:
            return
        row.update(self.scores(epoch))
        log.info("epoch %d test scores: amplitude SSIM %.4f, phase SSIM %.4f (original convention)", epoch,
                 row["test_amplitude_ssim"], row["test_phase_ssim"])
