"""What a training logger is: callbacks of one job. The runner calls `start` before training and
`finish` after the job (also when it failed); the framework-free training loop calls
`on_epoch_end` after every epoch. A logger never imports TensorFlow or torch."""
from __future__ import annotations

from pathlib import Path
from typing import Any


class LoggerUnavailable(RuntimeError):
    """A chosen logger's package cannot be imported; the message is one line naming the extra."""


def unavailable(logger: str, package: str, exc: BaseException) -> LoggerUnavailable:
    return LoggerUnavailable(
        f"logger={logger} needs the {package} package, which cannot be imported ({exc}); install the "
        f"tracking extra: pip install -e '.[tracking]' (./setup.sh installs it)")


class RunLogger:
    """Base class: every hook is optional."""

    name = ""

    def start(self, config: dict[str, Any], tags: dict[str, str], fingerprint: str) -> None:
        """Before training: the resolved config, tags (dose, view, backend, ...) and the config's
        fingerprint (the same job resumed after a kill has the same fingerprint)."""

    def on_epoch_end(self, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """After every epoch: this epoch's row (epoch, loss, val_loss, lr, seconds) and the whole
        history so far (including epochs restored from a checkpoint)."""

    def on_curve_point(self, point: dict[str, Any]) -> None:
        """A learning-curve point (evaluate.every_steps; step_curves.FIELDS), indexed by optimiser step."""

    def finish(self, record: dict[str, Any], run_dir: Path) -> None:
        """After the job: its manifest record (status, metrics, objective, bundle SHA-256)."""
