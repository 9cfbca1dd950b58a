"""job=iterative for real (pty-chi's LSQML, a few epochs on a few hundred patterns) in one sweep with a
PtychoPINN job: both scored on the same test split into one study table with a `method` column; a
rerun reuses both; without pty-chi the job stops with one line naming the extra."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.test_sweep import summary

pytestmark = pytest.mark.slow
# CI installs the iterative extra (setup.sh) and must run these; a developer's older venv without it
# skips them with the command that installs it.
needs_pty_chi = pytest.mark.skipif(importlib.util.find_spec("ptychi") is None and os.environ.get("CI") != "true",
                                   reason="pty-chi is not installed here: pip install -e '.[iterative]'")

# The smoke preset's small object and coarse scan: 207 dense test patterns.
SMALL = ["dataset.object_size=320", "dataset.scan_step=6.0", "dataset.scan_row_spacing=7.0"]
MIXED = ["--multirun", "job=smoke,iterative", *SMALL, "dose=100000", "view=dense", "backend.threads=1",
         "iterative.threads=1", "iterative.epochs=3", "evaluate.every_epochs=2"]


@pytest.fixture(scope="module")
def mixed_sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("mixed")
    result = run_cli(MIXED, cwd, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, next((cwd / "outputs" / "multirun").iterdir())


@needs_pty_chi
def test_one_sweep_scores_both_methods_on_the_same_test_split(mixed_sweep):
    _, sweep = mixed_sweep
    rows = summary(sweep)
    assert [(r["method"], r["job_dir"], r["status"]) for r in rows] == [
        ("PtychoPINN", "dose_100000/dense", "success"), ("LSQML", "dose_100000/dense_lsqml", "success")]
    pinn, lsqml = (json.loads((sweep / r["job_dir"] / "training_manifest.json").read_text()) for r in rows)
    assert lsqml["test_data_path"] == pinn["test_data_path"]  # the very file the network is scored on
    assert lsqml["test_patterns"] == pinn["test_patterns"] == 207
    assert lsqml["gridsize"] is None and lsqml["backend"] is None and "ptychi" in lsqml["versions"]
    for row, record in zip(rows, (pinn, lsqml)):  # time to reconstruct the split: inference vs. LSQML
        assert record["reconstruction_time_s"] > 0
        assert float(row["reconstruction_time_s"]) == pytest.approx(record["reconstruction_time_s"])
        assert float(row["reconstruction_patterns_per_s"]) == pytest.approx(207 / record["reconstruction_time_s"],
                                                                           rel=1e-2)
        metrics = json.loads((sweep / row["job_dir"] / "metrics.json").read_text())
        assert float(row["phase_ssim"]) == pytest.approx(metrics["phase"]["ssim"])
        assert metrics["illumination_threshold"] == 0.1 and "ssim_original" in metrics["amplitude"]
        assert metrics["frc_curves"]["amplitude"] and (sweep / row["job_dir"] / "reconstruction.png").is_file()
    # Three LSQML epochs already reconstruct: each patch's phase follows the truth (the smoke network
    # does not), and the image lives on the ground truth's grid, flat where no light fell.
    assert float(rows[1]["phase_patch_corr"]) > 0.4 > float(rows[0]["phase_patch_corr"])
    with np.load(sweep / rows[1]["job_dir"] / "reconstruction.npz") as data:
        image = data["image"]
    assert image.shape == (320, 320) and image[0, 0] == 1
    with open(sweep / rows[1]["job_dir"] / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert [int(h["epoch"]) for h in history] == [1, 2, 3]
    assert float(history[2]["loss"]) < float(history[1]["loss"]) < float(history[0]["loss"])
    assert history[0]["test_phase_ssim"] == "" and float(history[1]["test_phase_ssim"]) > 0  # every 2nd + last
    assert (sweep / rows[1]["job_dir"] / "iterative.log").read_text().count("epoch 3") >= 1
    comparison = json.loads((sweep / "study_summary.json").read_text())["methods"]
    assert [(c["dose"], c["view"], sorted(c["methods"])) for c in comparison] == [
        (100000.0, "dense", ["LSQML", "PtychoPINN"])]
    assert comparison[0]["methods"]["PtychoPINN"]["training_time_s"] > 0
    png = (sweep / "study_summary.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


@needs_pty_chi
def test_a_rerun_reuses_both_methods(mixed_sweep):
    cwd, sweep = mixed_sweep
    before = {r["job_dir"]: r["amplitude_ssim"] for r in summary(sweep)}
    again = run_cli([*MIXED, f"hydra.sweep.dir={sweep}"], cwd, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = summary(sweep)
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
    assert {r["job_dir"]: r["amplitude_ssim"] for r in rows} == before


def test_without_pty_chi_the_job_stops_with_one_line_naming_the_extra(tmp_path):
    run_dir = tmp_path / "run"
    code = ("import sys; sys.modules['ptychi'] = None  # import ptychi now raises ImportError\n"
            "from fly64_train.cli import main; sys.argv = ['fly64-train'] + sys.argv[1:]; main()")
    result = subprocess.run([sys.executable, "-c", code, "job=iterative", *SMALL, f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("fly64-train: error:")]
    assert len(errors) == 1 and "job=iterative needs pty-chi" in errors[0]
    assert "pip install -e '.[iterative]'" in errors[0] and "Traceback" not in result.stderr
    record = json.loads((run_dir / "training_manifest.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("Engine failed: IterativeUnavailable")
    assert not (tmp_path / "outputs" / "cache").exists()  # it stopped before building any data
