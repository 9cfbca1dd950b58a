"""Multirun sweeps end to end (smoke-sized jobs): the study summary, failures, resume, a killed
job redone from its checkpoint, the NaN guard, and the submitit_local launcher."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

SMOKE = ["job=smoke", "backend.threads=1", "deterministic=true"]


def sweep_dir(cwd: Path) -> Path:
    return next((cwd / "outputs" / "multirun").iterdir())


def summary(sweep: Path) -> list[dict]:
    with open(sweep / "study_summary.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("basic")
    result = run_cli(["--multirun", *SMOKE, "dose=1000,100000", "view=baseline,dense,sparse"], cwd, timeout=900)
    return cwd, result


def test_basic_sweep_summarises_six_jobs(basic_sweep):
    cwd, result = basic_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(cwd)
    rows = summary(sweep)
    assert [(r["dose"], r["view"]) for r in rows] == [
        (d, v) for d in ("1000.0", "100000.0") for v in ("baseline", "dense", "sparse")]
    assert {r["status"] for r in rows} == {"success"}
    for row in rows:
        metrics = json.loads((sweep / row["job_dir"] / "metrics.json").read_text())
        for part in ("amplitude", "phase"):  # the summary carries each job's own scores
            assert float(row[f"{part}_ssim"]) == pytest.approx(metrics[part]["ssim"], rel=1e-9)
            assert float(row[f"{part}_patch_corr"]) == pytest.approx(metrics["patchwise"][f"{part}_correlation"])
        assert -1 <= float(row["amplitude_ssim"]) <= 1
        manifest = json.loads((sweep / row["job_dir"] / "training_manifest.json").read_text())
        assert row["bundle_sha256"] == manifest["bundle_sha256"] and len(row["bundle_sha256"]) == 64
        assert row["gridsize"] == ("1" if row["view"] == "baseline" else "2")
        assert (row["method"], row["generator"]) == ("PtychoPINN", "cnn")  # what trained
        assert (sweep / row["job_dir"] / "wts.h5.zip").is_file()
    data = json.loads((sweep / "study_summary.json").read_text())
    assert data["n_jobs"] == 6 and data["n_success"] == 6
    png = (sweep / "study_summary.png").read_bytes()  # rendered once, by on_multirun_end
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "raised" not in result.stderr, result.stderr[-2000:]  # no callback failed
    skip = json.loads((sweep / "skip_summary.json").read_text())
    assert skip["failed_count"] == 0 and skip["skipped_count"] == 0


def test_rerun_into_the_same_sweep_reuses_verified_bundles_and_force_redoes(basic_sweep):
    cwd, first = basic_sweep
    assert first.returncode == 0
    sweep = sweep_dir(cwd)
    before = {r["job_dir"]: r["bundle_sha256"] for r in summary(sweep)}
    again = run_cli(["--multirun", *SMOKE, "dose=1000,100000", "view=baseline,dense,sparse",
                     f"hydra.sweep.dir={sweep}"], cwd, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = summary(sweep)
    assert {r["status"] for r in rows} == {"skipped"}
    assert {r["job_dir"]: r["bundle_sha256"] for r in rows} == before
    assert json.loads((sweep / "skip_summary.json").read_text())["skipped_count"] == 6
    # A tampered bundle is not reused, and force=true redoes a job (same bytes: deterministic).
    tampered = sweep / "dose_1000" / "dense" / "wts.h5.zip"
    tampered.write_bytes(tampered.read_bytes() + b"tamper")
    redo = run_cli(["--multirun", *SMOKE, "dose=1000", "view=dense,sparse", "force=true",
                    f"hydra.sweep.dir={sweep}"], cwd, timeout=900)
    assert redo.returncode == 0, redo.stderr[-3000:]
    rows = {r["job_dir"]: r for r in summary(sweep)}
    assert rows["dose_1000/dense"]["status"] == rows["dose_1000/sparse"]["status"] == "success"
    assert rows["dose_1000/dense"]["bundle_sha256"] == before["dose_1000/dense"]


def test_a_failing_job_does_not_stop_the_sweep_and_the_figure_is_drawn(tmp_path):
    # The failing job first: Hydra then skips on_multirun_end, so the figure must be redrawn after
    # every later job.
    result = run_cli(["--multirun", *SMOKE, "dose=-5,100000", "view=baseline"], tmp_path, timeout=900)
    assert result.returncode != 0
    assert "job FAILED" in result.stdout and "dose=-5" in result.stdout
    assert "Traceback" not in result.stdout and "Traceback" not in result.stderr
    assert "dose=-5.0 is not allowed" in result.stderr and len(result.stderr.strip().splitlines()) <= 4
    sweep = sweep_dir(tmp_path)
    rows = {r["dose"]: r for r in summary(sweep)}
    assert rows["100000.0"]["status"] == "success"
    assert rows["-5.0"]["status"] == "failed" and "dose=-5.0 is not allowed" in rows["-5.0"]["error"]
    skip = json.loads((sweep / "skip_summary.json").read_text())
    assert skip["failed_count"] == 1 and "dose=-5.0" in skip["failed"][0]["reason"]
    figure = sweep / "study_summary.png"
    assert figure.read_bytes().startswith(b"\x89PNG") and len(figure.read_bytes()) > 10_000
    last_job = sweep / rows["100000.0"]["job_dir"] / "training_manifest.json"
    assert figure.stat().st_mtime >= last_job.stat().st_mtime  # drawn after the last job


def test_nan_loss_stops_the_job_without_a_bundle(tmp_path):
    result = run_cli([*SMOKE, "view=baseline", "trainer.learning_rate=1e12", "trainer.epochs=3"], tmp_path,
                     timeout=600)
    assert result.returncode == 1
    assert "training loss became" in result.stderr
    assert "Traceback" not in result.stdout and "Traceback" not in result.stderr
    record = json.loads(next(tmp_path.glob("outputs/runs/*/training_manifest.json")).read_text())
    assert record["status"] == "failed" and record["error"].startswith("Training failed: NonFiniteLoss")
    assert not list(tmp_path.glob("outputs/runs/*/wts.h5.zip"))


def test_a_killed_job_is_redone_from_its_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = [*SMOKE, "view=baseline", "trainer.epochs=12", "trainer.early_stopping_patience=100",
            "evaluate.enabled=false", f"hydra.run.dir={run_dir}"]
    env = dict(os.environ)
    process = subprocess.Popen([sys.executable, "-m", "fly64_train", *args], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = run_dir / "checkpoint.npz"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), "the job never reached its first checkpoint"
    record = json.loads((run_dir / "training_manifest.json").read_text())
    assert record["status"] == "running" and not (run_dir / "wts.h5.zip").exists()
    result = run_cli(args, tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "training_manifest.json").read_text())
    assert record["status"] == "success" and record["resumed_from_epoch"] >= 1
    assert record["epochs_completed"] == 12 and not checkpoint.exists()


def test_submitit_local_runs_each_job_in_its_own_process(tmp_path):
    # two jobs show the launcher's process per job; the whole matrix is test_basic_sweep_summarises_six_jobs
    result = run_cli(["--multirun", *SMOKE, "dose=1000", "view=baseline,dense",
                      "hydra/launcher=fly64_local", "hydra.launcher.cpus_per_task=1"], tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    rows = summary(sweep)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"success"}
    assert (sweep / ".submitit").is_dir()
