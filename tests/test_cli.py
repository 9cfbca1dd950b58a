"""The console script end to end, in subprocesses: help, dry runs, the 9-job dry-run sweep, clear
errors for bad overrides, and the installed-wheel case (conf/ shipped as package data)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli


def manifests(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("**/training_manifest.json"))]


def test_help_lists_config_groups_field_help_and_examples(tmp_path):
    result = run_cli(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for text in ("backend: pytorch, tensorflow", "dataset: fly64_synthetic, npz",
                 "job: evaluate, iterative, prepare, smoke, study, train", "logger: csv, mlflow, tensorboard",
                 "--multirun dose=1000,10000,100000", "hydra/sweeper=fly64_optuna", "fly64-train --version",
                 "--multirun job=train,iterative"):
        assert text in result.stdout
    lines = result.stdout.splitlines()
    dose = next(line for line in lines if line.startswith("dose: 1000.0"))
    assert "# photons per pattern" in dose  # the field's help text, from its metadata
    view = next(line for line in lines if line.startswith("view: dense"))
    assert "[baseline|dense|sparse]" in view
    assert any(line.startswith("  learning_rate: 0.001") and "Adam" in line for line in lines)
    # Every launcher preset the help names exists.
    presets = re.findall(r"hydra/launcher=(\w+)", result.stdout)
    assert presets and all((REPO / "conf" / "hydra" / "launcher" / f"{name}.yaml").is_file() for name in presets)


def test_version_and_python_dash_m(tmp_path):
    from importlib import metadata

    import fly64_train

    result = run_cli(["--version"], tmp_path)  # run_cli runs `python -m fly64_train`
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"fly64-train {fly64_train.__version__} ")
    assert metadata.version("fly64-train") == fly64_train.__version__
    assert not (tmp_path / "outputs").exists()


def test_single_dry_run_records_the_plan(tmp_path):
    result = run_cli(["dry_run=true", "dose=1e4", "view=sparse"], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    run_dirs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(run_dirs) == 1 and run_dirs[0].name.endswith("_dose10000_sparse")
    record = json.loads((run_dirs[0] / "training_manifest.json").read_text())
    assert record["status"] == "planned" and record["dry_run"] is True
    assert record["gridsize"] == 2 and record["dose"] == 10000.0 and record["view"] == "sparse"
    assert record["backend"] == "tensorflow" and "dose=1e4" in record["overrides"]
    assert record["plan"]["datasets"]["train"].endswith("sparse_train.npz")
    legacy_params = json.loads((run_dirs[0] / "legacy_params.json").read_text())
    assert legacy_params["nphotons"] == 10000.0 and legacy_params["gridsize"] == 2
    assert "[dry run] dose_10000/sparse" in result.stdout
    log_text = (run_dirs[0] / "train.log").read_text()  # <job.name>.log: what the terminal showed, too
    assert "[dry run] dose_10000/sparse" in log_text and "legacy params:" in log_text
    # Dry runs build nothing: no dataset cache, no bundle.
    assert not (tmp_path / "outputs" / "cache").exists()
    assert not list(tmp_path.glob("**/wts.h5.zip"))


def test_dry_run_multirun_makes_nine_job_directories(tmp_path):
    result = run_cli(["--multirun", "dry_run=true", "dose=1000,10000,100000", "view=baseline,dense,sparse"],
                     tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    sweep = next((tmp_path / "outputs" / "multirun").iterdir())
    jobs = sorted(str(p.parent.relative_to(sweep)) for p in sweep.glob("dose_*/*/training_manifest.json"))
    assert jobs == [f"dose_{d}/{v}" for d in (1000, 10000, 100000) for v in ("baseline", "dense", "sparse")]
    assert {r["status"] for r in manifests(sweep)} == {"planned"}
    assert {(r["view"], r["gridsize"]) for r in manifests(sweep)} == {("baseline", 1), ("dense", 2), ("sparse", 2)}
    summary = json.loads((sweep / "study_summary.json").read_text())
    assert summary["n_jobs"] == 9


@pytest.mark.parametrize("args,fragment", [
    (["view=baseline", "model.gridsize=2"], "model.gridsize=2 is not allowed: view=baseline requires gridsize 1"),
    (["dose=-5"], "dose=-5.0 is not allowed: expected a positive number"),
    (["backend=pytorch", "backend.compile=true"], "backend.compile=True is not allowed"),
])
def test_bad_values_exit_with_one_clear_line_and_the_traceback_in_the_log(tmp_path, args, fragment):
    result = run_cli(["dry_run=true", *args], tmp_path, timeout=120)
    assert result.returncode == 2
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith("fly64-train: error:") and fragment in first
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert len(result.stderr.strip().splitlines()) == 2  # the error and where the manifest and log are
    record = manifests(tmp_path / "outputs")[0]
    assert record["status"] == "failed" and fragment in record["error"]
    log_text = next((tmp_path / "outputs" / "runs").glob("*/train.log")).read_text()
    assert "Traceback (most recent call last)" in log_text and fragment in log_text


@pytest.mark.parametrize("override,message", [("view=bogus", "expected one of [baseline, dense, sparse]"),
                                              ("backend.name=jax", "expected one of [tensorflow, pytorch]")])
def test_a_bad_choice_fails_while_composing_and_writes_nothing(tmp_path, override, message):
    result = run_cli([override], tmp_path, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) <= 8  # Hydra's own message
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert not (tmp_path / "outputs").exists()  # no run directory, no cache


def test_a_failing_sweep_job_is_one_line_not_a_traceback(tmp_path):
    result = run_cli(["--multirun", "dry_run=true", "dose=1000,-5", "view=baseline"], tmp_path, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert "dose=-5.0 is not allowed" in result.stderr and len(result.stderr.strip().splitlines()) <= 4
    assert "job FAILED (dry_run=True dose=-5 view=baseline)" in result.stdout
    sweep = next((tmp_path / "outputs" / "multirun").iterdir())
    failed_log = (sweep / "dose_-5" / "baseline" / "train.log").read_text()
    assert "Traceback (most recent call last)" in failed_log and "job FAILED" in failed_log  # sweep status too
    assert "study summary: 2 jobs, failed: dose_-5/baseline" in failed_log


def test_typo_fails_at_composition_with_hydras_message(tmp_path):
    result = run_cli(["trainer.epocs=3"], tmp_path, timeout=120)
    assert result.returncode != 0
    assert "epocs" in result.stderr and "Could not override" in result.stderr


@pytest.mark.slow  # builds and installs the wheel
def test_installed_wheel_finds_its_conf(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("fly64_train-*.whl"))
    assert "fly64_train/conf/config.yaml" in zipfile.ZipFile(wheel).namelist()
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target))
    code = "import sys; from fly64_train.cli import main; sys.argv[0] = 'fly64-train'; main()"
    info = subprocess.run([sys.executable, "-c", code, "--info", "searchpath"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    assert str(target / "fly64_train" / "conf") in info.stdout
    dry = subprocess.run([sys.executable, "-c", code, "dry_run=true", "view=baseline"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert manifests(elsewhere / "outputs")[0]["status"] == "planned"
