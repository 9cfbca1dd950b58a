"""logger=csv: history.csv in the run directory, rewritten (atomically) after every epoch."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from fly64_train.files import atomic_write_text
from fly64_train.tracking.base import RunLogger


def write_history_csv(path: Path, history: list) -> None:
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())


class CsvLogger(RunLogger):
    name = "csv"

    def __init__(self, run_dir: Path, filename: str = "history.csv"):
        self.path = Path(run_dir) / filename

    def on_epoch_end(self, row, history) -> None:
        write_history_csv(self.path, history)
