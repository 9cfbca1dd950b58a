"""The number a job reports to a sweeper (the Hydra task function's return value): one of the job's
results, chosen by the `objective` config field, with the direction in which it is better.

The objectives are the metrics of metric_table.py, which are also the columns of the sweep's study
summary, so a tuning sweep's summary shows the objective of every trial next to everything else.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from fly64_train.metric_table import MAXIMIZE, METRICS, MINIMIZE, lookup

__all__ = ["MINIMIZE", "MAXIMIZE", "OBJECTIVES", "direction", "result_value", "value", "describe", "better",
           "needs_evaluation"]

# Every metric of the table is an objective: name → metric_table.Metric (direction, where it sits).
OBJECTIVES = METRICS


def needs_evaluation(name: str) -> bool:
    """Whether the objective is a score of the test split (a training job needs evaluate.enabled=true)."""
    return name in OBJECTIVES and not OBJECTIVES[name].training


def direction(name: str) -> str:
    """'minimize' or 'maximize' (also the `fly64.direction` resolver the Optuna preset uses)."""
    try:
        return OBJECTIVES[name].direction
    except KeyError:
        raise ValueError(f"objective={name!r} is not allowed: expected one of {', '.join(OBJECTIVES)}") from None


def result_value(record: dict, name: str) -> Any:
    """The raw value of result `name` in a job's manifest record (None when absent)."""
    return lookup(record, OBJECTIVES[name].record_path)


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
