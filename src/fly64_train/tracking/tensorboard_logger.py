"""logger=tensorboard: TensorBoard event files in <run dir>/tensorboard.

Per epoch: loss/train, loss/validation, learning_rate, epoch_time_s. After the job: the test
metrics (test/...), the objective, the reconstruction figure as an image, the config and the
status as text. The events are written with tensorboard's own protocol buffers and record writer
(the format `tensorboard --logdir` reads), without TensorFlow: tensorboard's EventFileWriter
would import TensorFlow and tensorboardX imports torch, and a job must not load the other framework.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any, Optional

from fly64_train import files, metric_table
from fly64_train.tracking.base import RunLogger, unavailable

_LOOP_SCALARS = {"loss": "loss/train", "val_loss": "loss/validation", "lr": "learning_rate", "seconds": "epoch_time_s"}


def epoch_scalars() -> dict[str, str]:
    """Epoch row key → scalar tag: the loop's values and the metric table's epoch scores (test/...)."""
    scores = {key: "test/" + key[len("test_"):] for key in metric_table.epoch_scores()}
    return {**_LOOP_SCALARS, **scores}


FIGURE = "reconstruction.png"
_file_counter = itertools.count()


def _import():
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.text.summary_v2 import text_pb
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError as exc:
        raise unavailable("tensorboard", "tensorboard", exc) from exc
    return event_pb2, summary_pb2, text_pb, RecordWriter


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    return struct.unpack(">II", data[16:24])


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numeric leaves of a nested metrics dict as 'amplitude/ssim': value."""
    flat: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_metrics(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


class TensorBoardLogger(RunLogger):
    name = "tensorboard"

    def __init__(self, run_dir: Path, log_dir: str = "tensorboard"):
        self._event_pb2, self._summary_pb2, self._text_pb, self._record_writer = _import()
        self.run_dir = Path(run_dir)
        self.log_dir = self.run_dir / log_dir
        self._writer = None
        self._step = 0
        self.path: Optional[Path] = None

    def _write(self, summary=None, step: Optional[int] = None, **fields) -> None:
        event = self._event_pb2.Event(wall_time=time.time(), step=self._step if step is None else step, **fields)
        if summary is not None:
            event.summary.CopyFrom(summary)
        with files.storage_errors(self.path):
            self._writer.write(event.SerializeToString())

    def _scalars(self, values: dict[str, float], step: int) -> None:
        Value = self._summary_pb2.Summary.Value
        summary = self._summary_pb2.Summary(value=[Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])
        self._write(summary, step)

    def start(self, config, tags, fingerprint) -> None:
        files.make_dirs(self.log_dir)
        # TensorBoard's naming: events.out.tfevents.<seconds>.<host>.<pid>.<n>; a resumed job adds a file.
        self.path = self.log_dir / (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                                    f"{os.getpid()}.{next(_file_counter)}")
        with files.storage_errors(self.path):
            self._writer = self._record_writer(files.open_output(self.path, "wb"))
        self._write(step=0, file_version="brain.Event:2")
        job = "\n".join(f"- {key}: {value}" for key, value in tags.items())
        self._write(self._text_pb("job", job), 0)
        self._write(self._text_pb("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```"), 0)
        self._writer.flush()

    def on_epoch_end(self, row, history) -> None:
        self._step = int(row["epoch"])
        values = {tag: row[key] for key, tag in epoch_scalars().items()
                  if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])}
        self._scalars(values, self._step)
        with files.storage_errors(self.path):
            self._writer.flush()  # a running TensorBoard shows the epoch now

    def on_curve_point(self, point) -> None:
        values = {f"curve/{key}": value for key, value in point.items() if key != "step"
                  and isinstance(value, (int, float)) and math.isfinite(value)}
        self._scalars(values, int(point["step"]))  # x axis: optimiser steps (the epoch scalars: epochs)
        self._writer.flush()

    def finish(self, record, run_dir) -> None:
        if self._writer is None:
            return
        try:
            final = {f"test/{k}": v for k, v in flat_metrics(record.get("metrics") or {}).items()}
            objective = record.get("objective") or {}
            if objective.get("value") is not None:
                final[f"objective/{objective['name']}"] = objective["value"]
            if final:
                self._scalars(final, self._step)
            figure = self.run_dir / FIGURE
            if figure.is_file():
                data = figure.read_bytes()
                width, height = png_size(data)
                image = self._summary_pb2.Summary.Image(height=height, width=width, colorspace=4,
                                                        encoded_image_string=data)
                self._write(self._summary_pb2.Summary(value=[self._summary_pb2.Summary.Value(
                    tag="reconstruction", image=image)]), self._step)
            status = record.get("status", "")
            if record.get("error"):
                status += f": {record['error']}"
            self._write(self._text_pb("status", status), self._step)
        finally:
            self._writer.close()
            self._writer = None
