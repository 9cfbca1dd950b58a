"""Whole jobs through the console script: training with each backend, byte-identical deterministic
bundles, cross-backend evaluation of bundles, job=prepare, a user's own NPZ files, a corrupt bundle."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

SMOKE = ["job=smoke", "backend.threads=1", "deterministic=true"]


def train(cwd: Path, name: str, *args: str) -> dict:
    run_dir = cwd / name
    result = run_cli([*SMOKE, f"hydra.run.dir={run_dir}", *args], cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "training_manifest.json").read_text())
    record["_dir"] = run_dir
    record["_stderr"] = result.stderr
    return record


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def tf_run(workdir):
    return train(workdir, "tf_a", "view=dense")


@pytest.fixture(scope="module")
def torch_run(workdir):
    return train(workdir, "torch_a", "view=dense", "backend=pytorch")


@pytest.mark.parametrize("run", ["tf_run", "torch_run"])
def test_a_training_job_leaves_a_complete_run_directory(run, request):
    record = request.getfixturevalue(run)
    run_dir = record["_dir"]
    assert record["status"] == "success" and record["gridsize"] == 2
    for name in ("wts.h5.zip", "metrics.json", "reconstruction.png", "history.csv", "legacy_params.json",
                 "resolved_config.json", "smoke.log"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoint.npz").exists()
    bundle = run_dir / "wts.h5.zip"
    assert record["bundle_sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert record["bundle_size_bytes"] == bundle.stat().st_size
    assert record["epochs_completed"] == 2 and len((run_dir / "history.csv").read_text().splitlines()) == 3
    assert "epoch 2/2 loss=" in (run_dir / "smoke.log").read_text()  # <job.name>.log
    assert set(record["metrics"]["amplitude"]) >= {"mae", "psnr", "ssim", "ssim_original", "frc50", "data_range"}
    # what the study needs to read a job: the footprint, the lit region, the budget
    assert record["probe_diameter_px"] == pytest.approx(38.0, abs=0.5)
    assert record["metrics"]["illumination_threshold"] == 0.1 and record["metrics"]["region"]["scored_pixels"] > 0
    assert record["train_groups"] == 64 and 64 < record["train_positions"] <= 4 * 64  # distinct members of 64 groups
    assert record["optimiser_steps"] == 2 * 4  # 2 epochs × ceil(64 · 0.95 / 16) batches
    framework = "tensorflow" if run == "tf_run" else "torch"
    assert framework in record["versions"]
    assert "oneDNN custom operations" not in record["_stderr"]  # framework start-up notes filtered


@pytest.mark.parametrize("backend", ["tensorflow", "pytorch"])
def test_deterministic_runs_give_the_same_bundle_bytes(workdir, backend, tf_run, torch_run):
    first = tf_run if backend == "tensorflow" else torch_run
    second = train(workdir, f"{backend}_b", "view=dense", f"backend={backend}")
    assert second["bundle_sha256"] == first["bundle_sha256"]


@pytest.mark.parametrize("source,evaluator", [("tf_run", "pytorch"), ("torch_run", "tensorflow"),
                                              ("tf_run", "tensorflow")])
def test_job_evaluate_scores_a_bundle_from_either_backend_the_same(workdir, source, evaluator, request):
    trained = request.getfixturevalue(source)
    out = workdir / f"eval_{source}_{evaluator}"
    result = run_cli(["job=evaluate", f"evaluate.bundle={trained['_dir'] / 'wts.h5.zip'}", f"backend={evaluator}",
                      "backend.threads=1", f"hydra.run.dir={out}"], workdir, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "training_manifest.json").read_text())
    assert record["status"] == "success" and record["trained_backend"] == trained["backend"]
    for part in ("amplitude", "phase"):
        for name in ("ssim", "mae", "psnr"):
            assert record["metrics"][part][name] == pytest.approx(trained["metrics"][part][name], rel=1e-3, abs=1e-4)


def test_a_corrupt_bundle_fails_evaluation_clearly(workdir, tf_run):
    broken = workdir / "broken" / "wts.h5.zip"
    broken.parent.mkdir()
    data = (tf_run["_dir"] / "wts.h5.zip").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    result = run_cli(["job=evaluate", f"evaluate.bundle={broken}", f"hydra.run.dir={workdir / 'eval_broken'}"],
                     workdir, timeout=300)
    assert result.returncode == 1
    assert str(broken) in result.stderr and "Traceback" not in result.stderr


def test_prepare_builds_every_view_of_a_dose(workdir):
    result = run_cli(["job=prepare", "job.name=prepare", "dataset.object_size=384", "dataset.scan_step=4",
                      "dose=1e4", f"hydra.run.dir={workdir / 'prep'}"], workdir, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout
    # per view: D, S, counts and the mean nearest-neighbour overlap
    lines = {tuple(line.split()[:2]): line for line in printed.splitlines() if line.startswith("  ")}
    for view, low, high in (("dense", 0.5, 0.65), ("sparse", 0.0, 0.15)):
        for split in ("train", "test"):
            line = lines[view, split]
            diameter, spacing = (float(line.split(f"{name} = ")[1].split()[0]) for name in ("D", "S"))
            assert diameter == pytest.approx(38.0, abs=0.5)
            # both printed to 0.1 px: S and (1 − f)·D each carry up to 0.05 px of rounding
            assert spacing == pytest.approx((0.3 if view == "dense" else 0.8) * diameter, abs=0.1)
            assert low <= float(line.rsplit(" ", 1)[1]) <= high, line
    for name in ("patched_train.npz", "patched_test.npz", "dense_train.npz", "sparse_test.npz"):
        assert name in printed
    paths = [Path(line.split(": ", 1)[1]) for line in printed.splitlines() if line.endswith(".npz")]
    assert paths and all(p.is_file() for p in paths)


def test_a_users_own_npz_files_train_and_stay_untouched(workdir, tf_run):
    train_file = Path(tf_run["train_data_path"])
    test_file = Path(tf_run["test_data_path"])
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (train_file, test_file)}
    record = train(workdir, "user_npz", "dataset=npz", f"dataset.train_path={train_file}",
                   f"dataset.test_path={test_file}", "view=dense")
    assert record["train_data_path"] == str(train_file)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (train_file, test_file)} == before


def test_missing_user_file_is_a_clear_error(workdir):
    result = run_cli([*SMOKE, "dataset=npz", "dataset.train_path=/nonexistent/train.npz",
                      "dataset.test_path=/nonexistent/test.npz", f"hydra.run.dir={workdir / 'missing'}"],
                     workdir, timeout=300)
    assert result.returncode == 1
    assert "/nonexistent/train.npz: dataset.train_path file not found" in result.stderr.splitlines()[0]


def test_a_supervised_job_with_the_ffno_trains_on_the_truth_and_records_its_method(workdir):
    """model_type=supervised (the study's supervised baseline) with the ffno generator: the manifest,
    the bundle and the sweep summary say what trained; evaluation is the same as for a PINN."""
    from fly64_train import bundle
    from fly64_train.step_curves import read_curves

    record = train(workdir, "supervised", "view=baseline", "backend=pytorch", "model.model_type=supervised",
                   "model.generator=ffno", "model.pad_object=false", "model.ffno_width=8", "trainer.epochs=2",
                   "trainer.max_steps=5", "evaluate.every_steps=2", "evaluate.curve_patterns=16")
    assert record["status"] == "success" and record["metrics"]["phase"]["ssim"] is not None
    # the learning curves: steps 0, 2, 4 and the last (max_steps ends the second epoch early)
    assert record["optimiser_steps"] == 5 and record["epochs_completed"] == 2
    points = read_curves(record["_dir"] / record["curves"])
    assert [p["step"] for p in points] == [0, 2, 4, 5]
    assert all(-1 <= p[f"{split}_phase_patch_corr"] <= 1 for p in points for split in ("test", "train"))
    assert (record["model_type"], record["generator"], record["method"]) == ("supervised", "ffno", "supervised")
    _, content = bundle.read_bundle(record["_dir"] / "wts.h5.zip")
    assert (content["model_type"], content["generator"]) == ("supervised", "ffno")
    assert content["geometry"]["generator"] == "ffno" and content["geometry"]["ffno_width"] == 8


def test_extra_training_tiles_train_a_supervised_job_on_their_truth(workdir, tf_run):
    """dataset.extra_train_tiles: the training split gains the tiles' positions (and their truth, which
    the supervised mode cuts from the wider object); the test split scores as before."""
    from fly64_train.data.contract import load_dataset
    from fly64_train.step_curves import read_curves

    record = train(workdir, "tiles", "view=dense", "dataset.extra_train_tiles=1", "model.model_type=supervised",
                   "trainer.n_groups=null", "trainer.max_steps=3", "evaluate.every_steps=2",
                   "evaluate.curve_patterns=16")
    assert record["status"] == "success" and record["metrics"]["phase"]["ssim"] is not None
    train_data = load_dataset(record["train_data_path"])
    assert train_data.metadata["extra_train_tiles"]["count"] == 1 and train_data.obj.shape == (320, 640)
    plain = load_dataset(tf_run["train_data_path"])
    assert record["train_positions"] == train_data.n > 2 * plain.n  # the tile is scanned whole
    assert train_data.xcoords.max() > 320 and load_dataset(record["test_data_path"]).xcoords.max() < 320
    points = read_curves(record["_dir"] / record["curves"])
    assert all(-1 <= p["train_phase_patch_corr"] <= 1 for p in points)
    # the training groups on the study object get their own curve (the test picture's other half)
    assert all(-1 <= p[f"train_study_{part}_patch_corr"] <= 1 for p in points for part in ("amplitude", "phase"))
