"""Optuna sweeps of smoke jobs (hydra/sweeper=fly64_optuna): trials run and the best value is
reported, the study summary lists every trial, a rerun into the same sweep reuses the finished
trials, and a failed trial is recorded while the study goes on."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

# The README's example, at smoke scale: one network width, no test evaluation (the objective is val_loss).
OPTUNA = ["--multirun", "job=smoke", "view=baseline", "backend.threads=1", "model.n_filters_scale=1",
          "evaluate.enabled=false", "hydra/sweeper=fly64_optuna", "hydra.sweeper.n_trials=2"]


def sweep_dir(cwd: Path) -> Path:
    return next((cwd / "outputs" / "multirun").iterdir())


def summary(sweep: Path) -> list[dict]:
    with open(sweep / "study_summary.csv") as handle:
        return list(csv.DictReader(handle))


def overrides(row: dict) -> dict:
    return dict(item.split("=", 1) for item in row["overrides"].split())


@pytest.fixture(scope="module")
def optuna_sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("optuna")
    return cwd, run_cli(OPTUNA, cwd, timeout=900)


def test_a_two_trial_optuna_sweep_finishes_and_reports_the_best_value(optuna_sweep):
    cwd, result = optuna_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(cwd)
    rows = summary(sweep)
    assert [r["job_dir"] for r in rows] == ["trial_0", "trial_1"]  # every trial in its own directory
    assert {r["status"] for r in rows} == {"success"} and {r["objective"] for r in rows} == {"val_loss"}
    for row in rows:
        params = overrides(row)
        assert 1e-4 <= float(params["trainer.learning_rate"]) <= 1e-2
        assert params["trainer.batch_size"] in ("8", "16", "32") and params["model.n_filters_scale"] == "1"
        manifest = json.loads((sweep / row["job_dir"] / "training_manifest.json").read_text())
        assert manifest["objective"] == {"name": "val_loss", "direction": "minimize", "value": manifest["val_loss"]}
        assert float(row["objective_value"]) == pytest.approx(manifest["val_loss"])
    values = [float(r["objective_value"]) for r in rows]
    best = min(values)
    optuna = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert optuna["best_value"] == pytest.approx(best)
    best_row = rows[values.index(best)]
    assert {k: str(v) for k, v in optuna["best_params"].items()} == {
        k: v for k, v in overrides(best_row).items() if k in optuna["best_params"]}
    assert f"best val_loss (minimize): {best:.6g} in {best_row['job_dir']}" in result.stdout
    study = json.loads((sweep / "study_summary.json").read_text())
    assert study["objective"] == {"name": "val_loss", "direction": "minimize", "best_value": pytest.approx(best),
                                  "best_job_dir": best_row["job_dir"]}
    assert (sweep / "study_summary.png").read_bytes().startswith(b"\x89PNG")


def test_a_rerun_into_the_same_sweep_reuses_the_finished_trials(optuna_sweep):
    cwd, first = optuna_sweep
    assert first.returncode == 0
    sweep = sweep_dir(cwd)
    before = summary(sweep)
    again = run_cli([*OPTUNA, f"hydra.sweep.dir={sweep}"], cwd, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = summary(sweep)
    assert {r["status"] for r in rows} == {"skipped"}  # the seeded sampler proposed the same trials
    assert [(r["overrides"], r["bundle_sha256"], r["objective_value"]) for r in rows] == [
        (r["overrides"], r["bundle_sha256"], r["objective_value"]) for r in before]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"]
    assert best == pytest.approx(min(float(r["objective_value"]) for r in before))


def test_a_failed_trial_is_recorded_and_the_study_goes_on(tmp_path):
    # Random sampler, seed 0: the first trial draws dose -1 (invalid), the second 100000.
    result = run_cli(["--multirun", "job=smoke", "view=baseline", "backend.threads=1", "evaluate.enabled=false",
                      "hydra/sweeper=fly64_optuna", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
                      "hydra.sweeper.params=null", "hydra.sweeper.n_trials=2", "dose=choice(100000,-1)"],
                     tmp_path, timeout=900)
    assert result.returncode == 1
    sweep = sweep_dir(tmp_path)
    rows = {r["job_dir"]: r for r in summary(sweep)}
    assert rows["trial_0"]["status"] == "failed" and "dose=-1.0 is not allowed" in rows["trial_0"]["error"]
    assert rows["trial_1"]["status"] == "success" and math.isfinite(float(rows["trial_1"]["objective_value"]))
    assert "1 of 2 jobs failed: trial_0" in result.stderr
    optuna = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert optuna["best_params"] == {"dose": 100000}
    assert optuna["best_value"] == pytest.approx(float(rows["trial_1"]["objective_value"]))
    assert json.loads((sweep / "skip_summary.json").read_text())["failed_count"] == 1
    assert (sweep / "study_summary.png").read_bytes().startswith(b"\x89PNG")


def test_trials_without_a_value_still_leave_the_figure(tmp_path):
    # Dry runs return no objective: Optuna fails every trial and the plugin stops before the end
    # of the sweep (no on_multirun_end), so the figure is drawn after each such trial.
    result = run_cli(["--multirun", "dry_run=true", "hydra/sweeper=fly64_optuna", "hydra.sweeper.n_trials=2"],
                     tmp_path, timeout=300)
    assert result.returncode == 1 and "No trials are completed yet" in result.stderr
    sweep = sweep_dir(tmp_path)
    assert [r["status"] for r in summary(sweep)] == ["planned", "planned"]
    assert (sweep / "study_summary.png").read_bytes().startswith(b"\x89PNG")
