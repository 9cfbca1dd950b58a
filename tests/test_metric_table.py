"""The one metric table (metric_table.METRICS): a metric added there is computed into metrics.json,
is an objective with its direction, is a column of the study summary, joins the epoch scores and
reaches the trackers' per-epoch keys, with nothing else edited (the architecture page's recipe)."""
from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from fly64_train import evaluation, manifest, metric_table, objective, physics, sweep
from fly64_train.backends.base import Prediction
from fly64_train.epoch_scores import EpochScores
from fly64_train.tracking.mlflow_logger import epoch_metrics
from fly64_train.tracking.tensorboard_logger import epoch_scalars
from tests.test_evaluate import N, make_object, scan


def brightest_fraction(aligned) -> float:
    """The toy metric: the share of scored pixels whose reconstructed amplitude exceeds the truth's mean."""
    inside = aligned.pred_amp[aligned.mask]
    return float(np.mean(inside > aligned.gt_amp[aligned.mask].mean()))


@pytest.fixture
def toy(monkeypatch):
    metric = metric_table.Metric("amplitude_bright", metric_table.MAXIMIZE, ("amplitude", "bright"),
                                 epoch_key="test_amplitude_bright", compute=brightest_fraction)
    monkeypatch.setitem(metric_table.METRICS, metric.name, metric)
    return metric


class TruthModel:
    """A model whose every prediction is the true object patch at each member's position (x holds the
    group's index), so the scores are known; a stand-in for a trained network, not for what is tested."""

    def __init__(self, obj, positions):
        self.obj, self.positions = obj, positions

    def predict(self, x, rel):
        xy = self.positions[x[:, 0, 0, 0].astype(int)]
        patches = physics.extract_patches(self.obj, xy[..., 0].ravel(), xy[..., 1].ravel(), N)
        patches = patches.reshape(len(xy), -1, N, N)
        return Prediction(trimmed=patches[:, 0], patches=patches, amplitude=np.abs(patches).transpose(0, 2, 3, 1))


def test_a_metric_added_to_the_table_reaches_every_list_of_results(toy, tmp_path):
    obj = make_object()
    positions = scan(200, seed=2).reshape(50, 4, 2)
    x = np.broadcast_to(np.arange(50, dtype=np.float32)[:, None, None, None], (50, N, N, 4))
    inputs = SimpleNamespace(x=x, rel=np.zeros((50, 4, 2), np.float32), positions=positions)
    data = SimpleNamespace(obj=obj, probe=None)

    # 1. computed into the scores and metrics.json
    callback = EpochScores(TruthModel(obj, positions), inputs, data, every=1, last_epoch=2, batch_size=16,
                           illumination_threshold=0.1, max_shift_px=2.0)
    row = {"epoch": 1, "loss": 0.5}
    callback.on_epoch_end(row, [row])
    scored = callback.last[1]
    expected = brightest_fraction(scored.aligned)
    assert 0.2 < expected < 0.8 and scored.metrics["amplitude"]["bright"] == expected
    written = evaluation.write_evaluation(tmp_path / "job", scored)
    assert json.loads((tmp_path / "job" / evaluation.METRICS_NAME).read_text())["amplitude"]["bright"] == expected

    # 2. an epoch score, under its row key, and 3. the trackers' per-epoch keys
    assert row["test_amplitude_bright"] == expected
    assert epoch_scalars()["test_amplitude_bright"] == "test/amplitude_bright"
    assert epoch_metrics()["test_amplitude_bright"] == "test_amplitude_bright"

    # 4. an objective with its direction, read from a job's record
    record = {"status": "success", "dose": 1000.0, "view": "dense", "metrics": written}
    assert "amplitude_bright" in objective.OBJECTIVES and objective.needs_evaluation("amplitude_bright")
    assert objective.describe(record, "amplitude_bright") == {"name": "amplitude_bright", "direction": "maximize",
                                                              "value": expected}
    assert objective.better(0.9, 0.1, "amplitude_bright")

    # 5. a column of the study summary
    record["objective"] = objective.describe(record, "amplitude_bright")
    (tmp_path / "job" / manifest.TRAINING_MANIFEST).write_text(json.dumps(record))
    sweep.write_summary(tmp_path, figure=False)
    with open(tmp_path / f"{sweep.SUMMARY_STEM}.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert "amplitude_bright" in sweep.columns() and float(rows[0]["amplitude_bright"]) == pytest.approx(expected)
    assert float(rows[0]["objective_value"]) == pytest.approx(expected)


def test_the_table_names_each_metric_once_and_finds_every_location():
    names = [metric.name for metric in metric_table.METRICS.values()]
    assert names == list(metric_table.METRICS) and len(set(names)) == len(names)
    keys = [metric.epoch_key for metric in metric_table.METRICS.values() if metric.epoch_key]
    assert len(set(keys)) == len(keys)
    with pytest.raises(ValueError, match="direction must be"):
        metric_table.Metric("x", "upward", ("x",))
