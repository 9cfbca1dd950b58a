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
    # every key of any row, in first-seen order: some epochs carry more (evaluate.every_epochs scores)
    fieldnames = list(dict.fromkeys(key for row in history for key in row))
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, restval="")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())


class CsvLogger(RunLogger):
    name = "csv"

    def __init__(self, run_dir: Path, filename: str = "history.csv"):
        self.path = Path(run_dir) / filename

    def on_epoch_end(self, row, history) -> None:
        write_history_csv(self.path, history)
