"""Training loggers (the `logger` group): what each writes, read back with the libraries' own
readers (tensorboard's EventAccumulator, MLflow's client); a missing package is a one-line error;
loggers load neither TensorFlow nor torch; and a smoke job with all three loggers end to end."""
from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fly64_train.config import MlflowLoggerConfig
from fly64_train.tracking import LoggerUnavailable, create_loggers, finish, start
from fly64_train.tracking.mlflow_logger import RUN_FILE, MlflowLogger, flat_params
from fly64_train.tracking.tensorboard_logger import TensorBoardLogger, png_size
from tests.conftest import compose_config, run_cli

CONFIG = {"trainer": {"learning_rate": 0.001, "batch_size": 16}, "dose": 1000.0, "view": "dense"}
TAGS = {"job": "dose_1000/dense", "dose": "1000", "view": "dense", "backend": "tensorflow"}
ROWS = [{"epoch": 1, "loss": 0.5, "val_loss": 0.6, "lr": 1e-3, "seconds": 1.5},
        {"epoch": 2, "loss": 0.4, "val_loss": float("nan"), "lr": 5e-4, "seconds": 1.25}]


def finished_record(run_dir: Path) -> dict:
    """A successful job's record and the files evaluation and the bundle leave in its run dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(run_dir / "reconstruction.png", np.linspace(0, 1, 12 * 20).reshape(12, 20))
    metrics = {"amplitude": {"ssim": 0.25, "psnr": 17.0}, "phase": {"ssim": 0.1},
               "patchwise": {"phase_correlation": 0.35}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "wts.h5.zip").write_bytes(b"bundle bytes")
    return {"status": "success", "epochs_completed": 2, "final_loss": 0.4, "val_loss": 0.55, "metrics": metrics,
            "bundle_sha256": hashlib.sha256(b"bundle bytes").hexdigest(),
            "objective": {"name": "val_loss", "direction": "minimize", "value": 0.55}}


def run_loggers(loggers, run_dir: Path, record: dict, fingerprint: str = "f") -> None:
    start(loggers, CONFIG, TAGS, fingerprint)
    for i, row in enumerate(ROWS):
        for logger in loggers:
            logger.on_epoch_end(row, ROWS[:i + 1])
    finish(loggers, record, run_dir)


def read_events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs; values are stored as float32, so they come back rounded to 32 bits."""
    return [(e.step, pytest.approx(e.value, rel=1e-6)) for e in accumulator.Scalars(tag)]


def test_tensorboard_logger_writes_epochs_final_metrics_figure_and_config(tmp_path):
    record = finished_record(tmp_path)
    run_loggers([TensorBoardLogger(tmp_path)], tmp_path, record)
    events = read_events(tmp_path / "tensorboard")
    assert scalars(events, "loss/train") == [(1, 0.5), (2, 0.4)]
    assert scalars(events, "loss/validation") == [(1, 0.6)]  # NaN (no validation) is not logged
    assert scalars(events, "learning_rate") == [(1, 1e-3), (2, 5e-4)]
    assert scalars(events, "epoch_time_s") == [(1, 1.5), (2, 1.25)]
    assert scalars(events, "test/amplitude/ssim") == [(2, 0.25)]
    assert scalars(events, "test/patchwise/phase_correlation") == [(2, 0.35)]
    assert scalars(events, "objective/val_loss") == [(2, 0.55)]
    image = events.Images("reconstruction")[0]
    assert (image.width, image.height) == (20, 12)
    assert image.encoded_image_string == (tmp_path / "reconstruction.png").read_bytes()
    config_text = events.Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert '"learning_rate": 0.001' in config_text
    assert events.Tensors("status")[0].tensor_proto.string_val[0] == b"success"


def test_history_csv_keeps_columns_that_only_some_epochs_have(tmp_path):
    from fly64_train.tracking.csv_logger import write_history_csv

    history = [{"epoch": 1, "loss": -1.0}, {"epoch": 2, "loss": -2.0, "test_amplitude_ssim": 0.5}]
    write_history_csv(tmp_path / "h.csv", history)
    with open(tmp_path / "h.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"epoch": "1", "loss": "-1.0", "test_amplitude_ssim": ""},
                    {"epoch": "2", "loss": "-2.0", "test_amplitude_ssim": "0.5"}]


def test_png_size_reads_the_header(tmp_path):
    finished_record(tmp_path)
    assert png_size((tmp_path / "reconstruction.png").read_bytes()) == (20, 12)
    with pytest.raises(ValueError, match="not a PNG"):
        png_size(b"GIF89a" + bytes(30))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One local MLflow store for the module (MLflow takes seconds to create its tables)."""
    return tmp_path_factory.mktemp("mlflow_store")


def mlflow_settings(store: Path) -> MlflowLoggerConfig:
    return MlflowLoggerConfig(tracking_uri=f"sqlite:///{store / 'mlflow.db'}",
                              artifact_location=str(store / "artifacts"), experiment_name="unit")


def test_mlflow_logger_records_one_run_per_job(tmp_path, store):
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = finished_record(run_dir)
    run_loggers([MlflowLogger(run_dir, mlflow_settings(store))], run_dir, record)
    info = json.loads((run_dir / RUN_FILE).read_text())
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "dose_1000/dense"
    assert client.get_experiment(run.info.experiment_id).name == "unit"
    assert run.data.params == flat_params(CONFIG) and run.data.params["trainer.learning_rate"] == "0.001"
    tags = run.data.tags
    assert {k: tags[k] for k in TAGS} == TAGS
    assert tags["bundle_sha256"] == record["bundle_sha256"] and tags["objective_direction"] == "minimize"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [(1, 0.5), (2, 0.4)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1]
    assert run.data.metrics["test/amplitude/ssim"] == 0.25 and run.data.metrics["objective"] == 0.55
    assert run.data.metrics["epoch_time_s"] == 1.25
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"metrics.json", "reconstruction.png", "wts.h5.zip"}
    local = Path(client.download_artifacts(run.info.run_id, "wts.h5.zip", str(tmp_path / "down")))
    assert hashlib.sha256(local.read_bytes()).hexdigest() == record["bundle_sha256"]


def test_mlflow_run_of_a_job_resumed_from_its_checkpoint_continues(tmp_path, store):
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    killed = MlflowLogger(run_dir, mlflow_settings(store))
    start([killed], CONFIG, TAGS, "fp")
    killed.on_epoch_end(ROWS[0], ROWS[:1])  # then the process dies: no finish
    (run_dir / "checkpoint.npz").write_bytes(b"x")
    resumed = MlflowLogger(run_dir, mlflow_settings(store))
    start([resumed], CONFIG, TAGS, "fp")
    assert resumed.run_id == killed.run_id
    resumed.on_epoch_end(ROWS[1], ROWS)
    finish([resumed], {"status": "failed", "error": "Training failed: boom"}, run_dir)
    client = MlflowClient(tracking_uri=resumed.tracking_uri)
    run = client.get_run(resumed.run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "Training failed: boom"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    # Another configuration (fingerprint) in the same directory is a new run.
    other = MlflowLogger(run_dir, mlflow_settings(store))
    start([other], CONFIG, TAGS, "another")
    assert other.run_id != killed.run_id


def hide(monkeypatch, package: str) -> None:
    """Make `package` (and its submodules) unimportable, as if it were not installed."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)


@pytest.mark.parametrize("logger,package,shown", [("mlflow", "mlflow", "mlflow-skinny"),
                                                  ("tensorboard", "tensorboard", "tensorboard")])
def test_a_missing_logger_package_is_a_one_line_error_naming_the_extra(monkeypatch, tmp_path, logger, package,
                                                                       shown):
    hide(monkeypatch, package)
    config = compose_config(f"logger=[csv,{logger}]")
    with pytest.raises(LoggerUnavailable) as info:
        create_loggers(config.logger, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"logger={logger} needs the {shown} package")
    assert "pip install -e '.[tracking]'" in message


def test_loggers_load_neither_framework(tmp_path, store):
    code = f"""
import sys
from pathlib import Path
from fly64_train.config import LoggerConfig, CsvLoggerConfig, TensorBoardLoggerConfig, MlflowLoggerConfig
from fly64_train.tracking import create_loggers, start, finish
run_dir = Path({str(tmp_path)!r})
settings = LoggerConfig(CsvLoggerConfig(), TensorBoardLoggerConfig(),
                        MlflowLoggerConfig(tracking_uri={mlflow_settings(store).tracking_uri!r}))
loggers = create_loggers(settings, run_dir)
start(loggers, {{"a": 1}}, {{"job": "j"}}, "f")
for logger in loggers:
    logger.on_epoch_end({{"epoch": 1, "loss": 1.0, "val_loss": 1.0, "lr": 0.1, "seconds": 1.0}}, [])
finish(loggers, {{"status": "success"}}, run_dir)
print(sorted(m for m in ("tensorflow", "torch", "keras", "tensorboardX") if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_cli_with_a_missing_logger_package_exits_with_one_line(tmp_path):
    code = ("import sys; sys.modules['mlflow'] = None; from fly64_train.cli import main; "
            "sys.argv[0] = 'fly64-train'; main()")
    result = subprocess.run([sys.executable, "-c", code, "job=smoke", "logger=[csv,mlflow]",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("fly64-train: error: logger=mlflow needs the mlflow-skinny package")
    assert "Traceback" not in result.stderr
    record = json.loads((tmp_path / "run" / "training_manifest.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("Loggers failed: LoggerUnavailable")
    assert not (tmp_path / "outputs" / "cache").exists()  # failed before any data was built


@pytest.mark.slow
def test_a_smoke_job_with_every_logger_leaves_readable_logs(tmp_path):
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    result = run_cli(["job=smoke", "view=baseline", "backend=pytorch", "backend.threads=1",
                      "logger=[csv,tensorboard,mlflow]", "evaluate.every_epochs=1", f"hydra.run.dir={run_dir}"],
                     tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "training_manifest.json").read_text())
    assert record["status"] == "success" and record["epochs_completed"] == 2
    assert record["objective"]["name"] == "val_loss" and record["objective"]["value"] == record["val_loss"]
    with open(run_dir / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    # the quality learning curve: the last epoch's scores are the final evaluation's (same weights)
    final = record["metrics"]
    assert float(history[-1]["test_amplitude_ssim"]) == pytest.approx(final["amplitude"]["ssim_original"], abs=1e-9)
    assert float(history[-1]["test_phase_ssim"]) == pytest.approx(final["phase"]["ssim_original"], abs=1e-9)
    assert float(history[-1]["test_phase_patch_corr"]) == pytest.approx(final["patchwise"]["phase_correlation"])
    assert history[0]["test_amplitude_ssim"] != history[1]["test_amplitude_ssim"]  # scored after each epoch

    events = read_events(run_dir / "tensorboard")
    assert scalars(events, "loss/train") == [(int(r["epoch"]), float(r["loss"])) for r in history]
    assert [s for s, _ in scalars(events, "learning_rate")] == [1, 2]
    assert scalars(events, "test/amplitude/ssim") == [(2, record["metrics"]["amplitude"]["ssim"])]
    assert [s for s, _ in scalars(events, "test/amplitude_ssim")] == [1, 2]
    assert events.Images("reconstruction")[0].encoded_image_string == (run_dir / "reconstruction.png").read_bytes()

    assert (tmp_path / "outputs" / "mlflow.db").is_file()  # the default local store, under outputs/
    info = json.loads((run_dir / RUN_FILE).read_text())
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED"
    assert {k: run.data.tags[k] for k in ("dose", "view", "backend", "bundle_sha256")} == {
        "dose": "1000", "view": "baseline", "backend": "pytorch", "bundle_sha256": record["bundle_sha256"]}
    resolved = json.loads((run_dir / "resolved_config.json").read_text())
    assert run.data.params == flat_params(resolved)
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == pytest.approx(
        [float(r["loss"]) for r in history])
    assert run.data.metrics["test/phase/ssim"] == pytest.approx(record["metrics"]["phase"]["ssim"])
    assert [m.value for m in client.get_metric_history(run.info.run_id, "test_phase_ssim")] == pytest.approx(
        [float(r["test_phase_ssim"]) for r in history])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"metrics.json", "reconstruction.png",
                                                                         "wts.h5.zip"}
