"""Training loggers (the `logger` config group): csv, tensorboard, mlflow, several at once.

`create_loggers` builds the chosen ones (a missing package is a one-line LoggerUnavailable);
`start`/`finish` call them around a job; the training loop calls their `on_epoch_end`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from fly64_train.tracking.base import LoggerUnavailable, RunLogger

__all__ = ["LoggerUnavailable", "RunLogger", "create_loggers", "start", "finish"]

log = logging.getLogger(__name__)


def create_loggers(settings, run_dir: Path) -> list[RunLogger]:
    """The loggers `settings` (config.LoggerConfig) selects, in the order csv, tensorboard, mlflow."""
    loggers: list[RunLogger] = []
    if settings.csv is not None:
        from fly64_train.tracking.csv_logger import CsvLogger
        loggers.append(CsvLogger(run_dir, settings.csv.filename))
    if settings.tensorboard is not None:
        from fly64_train.tracking.tensorboard_logger import TensorBoardLogger
        loggers.append(TensorBoardLogger(run_dir, settings.tensorboard.log_dir))
    if settings.mlflow is not None:
        from fly64_train.tracking.mlflow_logger import MlflowLogger
        loggers.append(MlflowLogger(run_dir, settings.mlflow))
    return loggers


def start(loggers: Sequence[RunLogger], config: dict[str, Any], tags: dict[str, str], fingerprint: str) -> None:
    for logger in loggers:
        logger.start(config, tags, fingerprint)


def finish(loggers: Sequence[RunLogger], record: dict[str, Any], run_dir: Path) -> None:
    """Finish every logger; a logger that fails here is reported and does not hide the job's result."""
    for logger in loggers:
        try:
            logger.finish(record, run_dir)
        except Exception as exc:  # noqa: BLE001 - the job's outcome is already decided
            log.warning("logger %s could not finish: %s: %s", logger.name, type(exc).__name__, exc)
