"""The number a job reports to a sweeper (the Hydra task function's return value): one of the job's
results, chosen by the `objective` config field, with the direction in which it is better.

The same names are the columns of the sweep's study summary, so a tuning sweep's summary shows
the objective of every trial next to everything else.
"""
from __future__ import annotations

import math
from typing import Any, Optional

MINIMIZE, MAXIMIZE = "minimize", "maximize"

# name → (direction, where the value comes from in a job's manifest record)
OBJECTIVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "val_loss": (MINIMIZE, ("val_loss",)),  # validation loss after the last epoch (the bundled weights)
    "final_loss": (MINIMIZE, ("final_loss",)),  # training loss of the last epoch
    "amplitude_ssim": (MAXIMIZE, ("metrics", "amplitude", "ssim")),
    "phase_ssim": (MAXIMIZE, ("metrics", "phase", "ssim")),
    "amplitude_psnr": (MAXIMIZE, ("metrics", "amplitude", "psnr")),
    "phase_psnr": (MAXIMIZE, ("metrics", "phase", "psnr")),
    "amplitude_mae": (MINIMIZE, ("metrics", "amplitude", "mae")),
    "phase_mae": (MINIMIZE, ("metrics", "phase", "mae")),
    "amplitude_frc50": (MAXIMIZE, ("metrics", "amplitude", "frc50")),
    "phase_frc50": (MAXIMIZE, ("metrics", "phase", "frc50")),
    "amplitude_patch_corr": (MAXIMIZE, ("metrics", "patchwise", "amplitude_correlation")),
    "phase_patch_corr": (MAXIMIZE, ("metrics", "patchwise", "phase_correlation")),
}
# Objectives computed on the test split (need evaluate.enabled=true).
TEST_METRICS = tuple(name for name, (_, path) in OBJECTIVES.items() if path[0] == "metrics")


def direction(name: str) -> str:
    """'minimize' or 'maximize' (also the `fly64.direction` resolver the Optuna preset uses)."""
    try:
        return OBJECTIVES[name][0]
    except KeyError:
        raise ValueError(f"objective={name!r} is not allowed: expected one of {', '.join(OBJECTIVES)}") from None


def result_value(record: dict, name: str) -> Any:
    """The raw value of result `name` in a job's manifest record (None when absent)."""
    value: Any = record
    for key in OBJECTIVES[name][1]:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def value(record: dict, name: str) -> Optional[float]:
    """Result `name` as a finite float, or None when the job has no such result."""
    raw = result_value(record, name)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    return float(raw) if math.isfinite(raw) else None


def describe(record: dict, name: str) -> dict[str, Any]:
    """What a manifest records about the objective: name, direction and value (None: unavailable)."""
    return {"name": name, "direction": direction(name), "value": value(record, name)}


def better(a: float, b: float, name: str) -> bool:
    """Whether objective value `a` is better than `b`."""
    return a < b if direction(name) == MINIMIZE else a > b
