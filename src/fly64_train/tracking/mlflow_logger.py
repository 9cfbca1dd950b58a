"""logger=mlflow: one MLflow run per job, through MlflowClient (no global active run, so jobs that
share a process never mix).

The run gets the resolved config as params, tags (dose, view, backend, gridsize, job, run dir;
bundle_sha256, status and the objective at the end), per-epoch metrics (loss, val_loss, lr,
epoch_time_s at step = epoch), the final metrics (test/..., final_loss, val_loss, the objective),
and the bundle, metrics.json and reconstruction.png as artifacts. A job resumed from its checkpoint
after a kill continues its MLflow run (mlflow_run.json in the run directory names it).

The default store is SQLite under outputs/ (MLflow 3 refuses its plain file store unless told to);
a file lock serialises the first use of a local SQLite store, where MLflow creates its tables.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from fly64_train import files, metric_table
from fly64_train.tracking.base import RunLogger, unavailable
from fly64_train.tracking.tensorboard_logger import flat_metrics

RUN_FILE = "mlflow_run.json"
ARTIFACTS = ("metrics.json", "reconstruction.png")
_LOOP_METRICS = {"loss": "loss", "val_loss": "val_loss", "lr": "lr", "seconds": "epoch_time_s"}
_BATCH = 100  # MLflow's limit of params (and metrics) per log_batch request

log = logging.getLogger(__name__)


def epoch_metrics() -> dict[str, str]:
    """Epoch row key → MLflow metric: the loop's values and the metric table's epoch scores."""
    return {**_LOOP_METRICS, **{key: key for key in metric_table.epoch_scores()}}


def _import():
    try:
        from mlflow.entities import Metric, Param, RunStatus
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise unavailable("mlflow", "mlflow-skinny", exc) from exc
    return MlflowClient, Metric, Param, RunStatus, MlflowException


def local_sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a `sqlite:///path` URI (relative paths against the working directory)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix:
        return None
    path = uri[len(prefix):]
    return Path(path if path.startswith("/") else Path.cwd() / path).resolve()


def resolve_uri(uri: str) -> str:
    """An absolute tracking URI: local SQLite and plain paths are anchored at the working directory."""
    db = local_sqlite_path(uri)
    if db is not None:
        return f"sqlite:///{db}"
    if "://" not in uri and not uri.startswith(("databricks", "file:")):
        return Path(uri).resolve().as_uri()
    return uri


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → {'trainer.learning_rate': '0.001', ...}."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_params(value, name + "."))
        else:
            flat[name] = str(value)
    return flat


class MlflowLogger(RunLogger):
    name = "mlflow"

    def __init__(self, run_dir: Path, settings):
        self._client_cls, self._metric, self._param, self._status, self._error = _import()
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.tracking_uri = resolve_uri(settings.tracking_uri)
        self.client = None
        self.run_id: Optional[str] = None

    # -- set-up ---------------------------------------------------------------------------------
    def _connect(self) -> str:
        """Make the client and find (or create) the experiment; return the experiment's id."""
        from contextlib import nullcontext

        from filelock import FileLock

        db = local_sqlite_path(self.tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            logging.getLogger("alembic").setLevel(logging.WARNING)  # MLflow's table set-up chatter
        with (nullcontext() if db is None else FileLock(str(db) + ".lock")), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # SQLAlchemy's notes about MLflow's models
            self.client = self._client_cls(tracking_uri=self.tracking_uri)
            return self._experiment_id()

    def _experiment_id(self) -> str:
        name = self.settings.experiment_name
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = self.settings.artifact_location
        if location and "://" not in location and not location.startswith("file:"):
            location = Path(location).resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location or None)
        except self._error:  # created meanwhile by a parallel job
            return self.client.get_experiment_by_name(name).experiment_id

    def _resumable_run(self, fingerprint: str) -> Optional[str]:
        """The previous attempt's run, when this job continues it from a checkpoint."""
        from fly64_train.training import CHECKPOINT_NAME

        try:
            previous = files.read_json(self.run_dir / RUN_FILE)
        except (FileNotFoundError, ValueError):
            return None
        if (previous.get("tracking_uri") != self.tracking_uri or previous.get("fingerprint") != fingerprint
                or not (self.run_dir / CHECKPOINT_NAME).is_file()):
            return None
        try:
            run = self.client.get_run(previous["run_id"])
        except (self._error, KeyError):
            return None
        return run.info.run_id if run.info.status != "FINISHED" else None

    def start(self, config, tags, fingerprint) -> None:
        experiment_id = self._connect()
        client = self.client
        self.run_id = self._resumable_run(fingerprint)
        if self.run_id is not None:
            client.update_run(self.run_id, status="RUNNING")
            log.info("mlflow: continuing run %s", self.run_id)
            return
        run = client.create_run(experiment_id, run_name=tags.get("job"), tags=tags)
        self.run_id = run.info.run_id
        params = [self._param(k, v) for k, v in flat_params(config).items()]
        for i in range(0, len(params), _BATCH):
            client.log_batch(self.run_id, params=params[i:i + _BATCH])
        files.write_json(self.run_dir / RUN_FILE, {
            "tracking_uri": self.tracking_uri, "experiment_id": run.info.experiment_id, "run_id": self.run_id,
            "fingerprint": fingerprint})
        log.info("mlflow: run %s in %s (experiment %s)", self.run_id, self.tracking_uri,
                 self.settings.experiment_name)

    # -- during and after training ----------------------------------------------------------------
    def _log_metrics(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [self._metric(k, float(v), now, step) for k, v in values.items()
                   if isinstance(v, (int, float)) and math.isfinite(v)]
        for i in range(0, len(metrics), _BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + _BATCH])

    def on_epoch_end(self, row, history) -> None:
        self._log_metrics({name: row.get(key) for key, name in epoch_metrics().items()}, int(row["epoch"]))

    def on_curve_point(self, point) -> None:
        self._log_metrics({f"curve_{key}": value for key, value in point.items() if key != "step"}, int(point["step"]))

    def finish(self, record, run_dir) -> None:
        if self.run_id is None:
            return
        failed = record.get("status") == "failed"
        try:
            step = int(record.get("epochs_completed") or 0)
            final = {f"test/{k}": v for k, v in flat_metrics(record.get("metrics") or {}).items()}
            final.update(final_loss=record.get("final_loss"), final_val_loss=record.get("val_loss"))
            objective = record.get("objective") or {}
            if objective.get("value") is not None:
                final["objective"] = objective["value"]
            self._log_metrics(final, step)
            tags = {"status": str(record.get("status"))}
            if record.get("bundle_sha256"):
                tags["bundle_sha256"] = record["bundle_sha256"]
            if objective:
                tags.update(objective=objective["name"], objective_direction=objective["direction"])
            if record.get("error"):
                tags["error"] = str(record["error"])[:5000]
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, value)
            names = list(ARTIFACTS) + (["wts.h5.zip"] if self.settings.log_bundle else [])
            for name in names:
                if (self.run_dir / name).is_file():
                    self.client.log_artifact(self.run_id, str(self.run_dir / name))
        finally:
            self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")
