"""The one table of a job's results: each metric's name, where its value sits, the direction in
which it is better, whether it is also scored after every k-th epoch, and (for a metric the
evaluation does not compute with the others) its function.

Everything that lists results derives from `METRICS`: the `objective` choices and their
directions (objective.py), the study summary's columns (sweep.py), the test scores added to an
epoch's row (epoch_scores.py) and the trackers' per-epoch keys (tracking/). A metric is added
here once (docs/architecture.md, "A metric").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

MINIMIZE, MAXIMIZE = "minimize", "maximize"


@dataclass(frozen=True)
class Metric:
    name: str  # the objective's name and the study summary's column
    direction: str  # MINIMIZE or MAXIMIZE
    location: tuple[str, ...]  # keys of its value in metrics.json (or, for a training result, the manifest)
    epoch_key: Optional[str] = None  # the epoch row's key when also scored every k-th epoch (evaluate.every_epochs)
    # Its value from the aligned images (evaluation.Alignment); None for the metrics the evaluation
    # computes together (evaluation.scores: image metrics and per-patch correlations).
    compute: Optional[Callable[[Any], float]] = None
    training: bool = False  # a training result in the job's manifest record, not a test-split score

    def __post_init__(self):
        if self.direction not in (MINIMIZE, MAXIMIZE):
            raise ValueError(f"metric {self.name}: direction must be {MINIMIZE} or {MAXIMIZE}, got {self.direction!r}")

    @property
    def record_path(self) -> tuple[str, ...]:
        """Keys of the value in a job's manifest record (the test scores sit under 'metrics')."""
        return self.location if self.training else ("metrics", *self.location)


METRICS: dict[str, Metric] = {metric.name: metric for metric in (
    # validation loss after the last epoch (the bundled weights)
    Metric("val_loss", MINIMIZE, ("val_loss",), training=True),
    Metric("final_loss", MINIMIZE, ("final_loss",), training=True),  # training loss of the last epoch
    Metric("amplitude_ssim", MAXIMIZE, ("amplitude", "ssim")),
    Metric("phase_ssim", MAXIMIZE, ("phase", "ssim")),
    Metric("amplitude_psnr", MAXIMIZE, ("amplitude", "psnr")),
    Metric("phase_psnr", MAXIMIZE, ("phase", "psnr")),
    Metric("amplitude_mae", MINIMIZE, ("amplitude", "mae")),
    Metric("phase_mae", MINIMIZE, ("phase", "mae")),
    Metric("amplitude_frc50", MAXIMIZE, ("amplitude", "frc50")),
    Metric("phase_frc50", MAXIMIZE, ("phase", "frc50")),
    Metric("amplitude_patch_corr", MAXIMIZE, ("patchwise", "amplitude_correlation"),
           epoch_key="test_amplitude_patch_corr"),
    Metric("phase_patch_corr", MAXIMIZE, ("patchwise", "phase_correlation"), epoch_key="test_phase_patch_corr"),
    # SSIM in the original study's convention (what the quality benchmark reports) is the learning curve's
    Metric("amplitude_ssim_original", MAXIMIZE, ("amplitude", "ssim_original"), epoch_key="test_amplitude_ssim"),
    Metric("phase_ssim_original", MAXIMIZE, ("phase", "ssim_original"), epoch_key="test_phase_ssim"),
)}


def scored_on_test_split() -> list[Metric]:
    """The metrics scored on the test split (they need evaluate.enabled=true in a training job)."""
    return [metric for metric in METRICS.values() if not metric.training]


def epoch_scores() -> dict[str, Metric]:
    """Epoch row key → metric, for the metrics also scored after every k-th epoch."""
    return {metric.epoch_key: metric for metric in METRICS.values() if metric.epoch_key}


def computed() -> list[Metric]:
    """The metrics the table computes itself (those with a function), in table order."""
    return [metric for metric in METRICS.values() if metric.compute is not None]


def lookup(tree: Any, keys: tuple[str, ...]) -> Any:
    """The value under `keys` in nested dicts (None when absent)."""
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def place(tree: dict, keys: tuple[str, ...], value: Any) -> None:
    """Set the value under `keys` in nested dicts, making the dicts on the way."""
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value
