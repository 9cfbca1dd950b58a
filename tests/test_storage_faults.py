"""Shared-filesystem faults: a full disk, a read-only directory, a damaged cache entry and two sweeps
into one directory each end in one line naming the path and the fix, leave nothing a later run
reads as valid, and the rerun gives the same bytes. Faults are injected where fly64-train opens
files (tests/faults.py), or made real with chmod when not running as root."""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fly64_train import bundle, files, sweep
from fly64_train.config import DatasetConfig, TrainingConfig
from fly64_train.data import cache, simulate, store
from fly64_train.data.contract import StudyData, save_dataset
from fly64_train.logs import JobLogHandler
from fly64_train.sweep_lock import LOCK_NAME, SweepDirBusy, SweepLock
from tests.conftest import REPO
from tests.faults import FullDisk, ReadOnly, cli_with_faults, read_only_dir, restore_writable


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-"))


def _config(tmp_path: Path, view: str = "baseline", cache: str = "cache") -> TrainingConfig:
    dataset = DatasetConfig(object_size=192, scan_step=8.0, scan_row_spacing=10.0, cache_dir=str(tmp_path / cache))
    return TrainingConfig(dataset=dataset, view=view, dose=1000.0)


# ----------------------------------------------------------------------------- no space left

def test_a_full_disk_names_the_path_bytes_and_setting_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "run" / "metrics.json"
    files.write_json(target, {"old": True})
    FullDisk(room=100).install(monkeypatch)
    with files.configured_dirs({tmp_path / "run": "hydra.run.dir"}), pytest.raises(files.StorageError) as caught:
        files.write_json(target, {"values": list(range(200))})
    message = str(caught.value)
    assert caught.value.errno == errno.ENOSPC and "\n" not in message
    assert message.startswith(f"no space left on device writing {target} (needs ")
    assert "set hydra.run.dir to a directory on a filesystem with room" in message
    assert json.loads(target.read_text()) == {"old": True}  # the complete old file, not half a new one
    assert _leftovers(tmp_path) == []


def test_the_deepest_configured_directory_names_the_setting(tmp_path):
    with files.configured_dirs({tmp_path: "hydra.run.dir", tmp_path / "cache": "dataset.cache_dir"}):
        assert files.setting_for(tmp_path / "cache" / "x" / "a.npz") == "dataset.cache_dir"
        assert files.setting_for(tmp_path / "cachet" / "a.npz") == "hydra.run.dir"
    assert files.setting_for(tmp_path / "a.npz") is None  # outside the block


def test_a_dataset_file_on_a_full_disk_is_removed_and_the_rewrite_is_identical(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    data = StudyData(diffraction=rng.random((20, 16, 16), dtype=np.float32), xcoords=rng.random(20) * 40 + 20,
                     ycoords=rng.random(20) * 40 + 20, probe=np.ones((16, 16), np.complex64),
                     obj=np.ones((96, 96), np.complex64), metadata={"dose": 1000.0})
    save_dataset(tmp_path / "reference.npz", data)
    disk = FullDisk(room=30_000).install(monkeypatch)
    with pytest.raises(files.StorageError, match=r"writing .*patched_train.npz \(needs 9[0-9]\.[0-9] kB\)"):
        save_dataset(tmp_path / "patched_train.npz", data)
    assert disk.refused >= 1 and not (tmp_path / "patched_train.npz").exists() and _leftovers(tmp_path) == []
    monkeypatch.undo()  # space freed
    save_dataset(tmp_path / "patched_train.npz", data)
    assert _sha(tmp_path / "patched_train.npz") == _sha(tmp_path / "reference.npz")


def test_a_bundle_on_a_full_disk_leaves_no_bundle_and_says_how_big_it_is(tmp_path, monkeypatch):
    weights = {"encoder/kernel": np.arange(4096, dtype=np.float32), "probe": np.ones((8, 8), np.complex64)}
    size = len(bundle.bundle_bytes(weights, {"backend": "x"}))
    FullDisk(room=size - 1).install(monkeypatch)
    with pytest.raises(files.StorageError) as caught:
        bundle.write_bundle(tmp_path / bundle.BUNDLE_NAME, weights, {"backend": "x"})
    assert f"(needs {files.format_bytes(size)})" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_the_study_summary_on_a_full_disk_keeps_the_last_complete_one(tmp_path, monkeypatch):
    job = tmp_path / "dose_1000" / "dense"
    files.write_json(job / "training_manifest.json", {"dose": 1000.0, "view": "dense", "status": "success"})
    sweep.write_summary(tmp_path, figure=False)
    before = {name: (tmp_path / name).read_bytes() for name in ("study_summary.csv", "study_summary.json")}
    files.write_json(job / "training_manifest.json", {"dose": 1000.0, "view": "dense", "status": "failed"})
    FullDisk(room=0).install(monkeypatch)
    with pytest.raises(files.StorageError, match="set hydra.sweep.dir to a directory on a filesystem with room"):
        sweep.write_summary(tmp_path, figure=False)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert _leftovers(tmp_path) == []


def test_the_job_log_on_a_full_disk_stops_quietly(tmp_path, capsys):
    handler = JobLogHandler(tmp_path / "train.log")

    class FullStream(io.StringIO):
        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    handler.setStream(FullStream())
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "epoch 1", None, None)
    handler.handle(record)
    handler.handle(record)
    assert handler.broken and capsys.readouterr().err == ""  # no "--- Logging error ---" traceback per record
    handler.close()


# ----------------------------------------------------------------------------- the dataset cache

def test_a_build_that_runs_out_of_space_leaves_nothing_complete_and_the_rebuild_is_identical(tmp_path, monkeypatch):
    reference = store.dataset_paths(_config(tmp_path, cache="reference"))[0]
    config = _config(tmp_path)
    FullDisk(room=200_000).install(monkeypatch)  # the first NPZ does not fit
    with files.configured_dirs({tmp_path / "cache": "dataset.cache_dir"}), \
            pytest.raises(files.StorageError) as caught:
        store.dataset_paths(config)
    unit = Path(store.planned_paths(config)["cache_entry"])
    assert str(caught.value).startswith(f"no space left on device writing {unit} (needs ")
    assert "set dataset.cache_dir to a directory on a filesystem with room" in str(caught.value)
    entry = unit.parents[1]
    assert not (entry / "study.json").exists() and not unit.exists() and _leftovers(tmp_path / "cache") == []
    assert not store.planned_paths(config)["exists"]
    monkeypatch.undo()  # space freed: the same call completes with the same bytes
    train, _ = store.dataset_paths(config)
    assert _sha(train) == _sha(reference) and (entry / "study.json").is_file()


def test_too_little_free_space_stops_before_the_simulation(tmp_path, monkeypatch):
    free = 1000

    class Usage:
        def __init__(self, path):
            self.free = free

    monkeypatch.setattr(files.shutil, "disk_usage", Usage)
    simulated = []
    monkeypatch.setattr(simulate, "far_field", lambda *a, **k: simulated.append(1))
    with pytest.raises(files.StorageError) as caught:
        store.dataset_paths(_config(tmp_path))
    assert f"{files.format_bytes(free)} free" in str(caught.value) and "dataset.cache_dir" in str(caught.value)
    assert not simulated


def test_a_damaged_entry_is_reported_once_moved_aside_and_rebuilt(tmp_path, caplog):
    config = _config(tmp_path, view="dense")
    train, _ = store.dataset_paths(config)
    original = train.read_bytes()
    unit = train.parent
    damages = {
        "bit flip": lambda: train.write_bytes(original[:999] + bytes([original[999] ^ 1]) + original[1000:]),
        "truncated": lambda: train.write_bytes(original[: len(original) // 2]),
        "missing file": lambda: train.unlink(),
    }
    for number, (name, damage) in enumerate(damages.items(), start=1):
        damage()
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert store.dataset_paths(config)[0] == train
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and f"cache unit {unit} is " in warnings[0] and "moved aside" in warnings[0], name
        assert train.read_bytes() == original, name  # rebuilt to the same bytes
        aside = sorted(unit.parent.glob(f"{unit.name}.damaged-*"))
        assert len(aside) == number, name  # kept for inspection, never deleted
    assert store.planned_paths(config)["exists"]


def test_verification_hashes_each_file_once_per_process(tmp_path, monkeypatch):
    config = _config(tmp_path)
    store.dataset_paths(config)
    hashed = []
    monkeypatch.setattr(cache, "sha256_file", lambda path: hashed.append(path) or files.sha256_file(path))
    cache._VERIFIED.clear()
    for _ in range(3):
        store.dataset_paths(config)
    assert len(hashed) == 2  # patched_train.npz and patched_test.npz, once each


def test_a_read_only_cache_with_a_verified_entry_is_read(tmp_path, monkeypatch):
    config = _config(tmp_path)
    paths = store.dataset_paths(config)
    how = read_only_dir(tmp_path / "cache", monkeypatch)
    try:
        assert store.dataset_paths(config) == paths
        with pytest.raises(files.StorageError) as caught:  # a dose not in the cache must be built
            store.dataset_paths(dataclasses.replace(config, dose=10000.0))
        assert str(caught.value).startswith(f"cannot write {tmp_path / 'cache'}"), how
        assert str(caught.value).endswith("set dataset.cache_dir to a writable directory")
    finally:
        restore_writable(tmp_path / "cache")


def test_a_read_only_cache_with_a_damaged_entry_names_the_entry(tmp_path, monkeypatch):
    config = _config(tmp_path)
    train, _ = store.dataset_paths(config)
    train.write_bytes(train.read_bytes()[:-10])
    read_only_dir(tmp_path / "cache", monkeypatch)
    try:
        with pytest.raises(files.StorageError) as caught:
            store.dataset_paths(config)
        message = str(caught.value)
        assert f"to rebuild cache unit {train.parent}, which is corrupt (patched_train.npz has" in message
        assert "set dataset.cache_dir to a writable directory" in message
    finally:
        restore_writable(tmp_path / "cache")


def test_the_writability_check_uses_chmod_when_it_binds(tmp_path, monkeypatch):
    how = read_only_dir(tmp_path / "out", monkeypatch)
    assert how == ("injected" if os.geteuid() == 0 else "chmod")
    try:
        with pytest.raises(files.StorageError, match=r"cannot write .*out: (read-only file system|permission denied); "
                                                     r"set hydra.run.dir to a writable directory"):
            files.check_writable(tmp_path / "out", "hydra.run.dir")
        assert files.check_writable(tmp_path / "elsewhere") == tmp_path / "elsewhere"
        assert list((tmp_path / "elsewhere").iterdir()) == []  # the probe file is gone
    finally:
        restore_writable(tmp_path / "out")


# ----------------------------------------------------------------------------- one sweep dir, one writer

HOLD = """
import sys, time
sys.path.insert(0, {src!r})
from fly64_train.sweep_lock import SweepLock
SweepLock({dir!r}).acquire()
print("held", flush=True)
time.sleep(60)
"""


def _holder(sweep_dir: Path) -> subprocess.Popen:
    code = HOLD.format(src=str(REPO / "src"), dir=str(sweep_dir))
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_held_sweep_dir_names_the_holder_and_a_killed_holders_lock_is_taken_over(tmp_path):
    process = _holder(tmp_path)
    try:
        with pytest.raises(SweepDirBusy) as caught:
            SweepLock(tmp_path).acquire()
        assert str(caught.value).startswith(f"sweep directory {tmp_path} is in use by another sweep "
                                            f"(pid {process.pid} on host {socket.gethostname()}, started ")
        assert "set hydra.sweep.dir to another directory" in str(caught.value)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    lock = SweepLock(tmp_path)
    stale = lock.acquire()  # the flock died with the process; its record is what is left
    assert stale["pid"] == process.pid and lock.held
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released: nothing to report as stale
    assert SweepLock(tmp_path).acquire() is None


def _cli(args: list[str], cwd: Path, timeout: float = 300, **fault_env) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update({k: str(v) for k, v in fault_env.items()})
    return subprocess.run([*cli_with_faults(), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_second_sweep_into_a_live_sweeps_dir_stops_at_once(tmp_path):
    sweep_dir = tmp_path / "sweep"
    process = _holder(sweep_dir)
    try:
        result = _cli(["--multirun", "dry_run=true", "view=baseline,dense", f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"fly64-train: error: sweep directory {sweep_dir} is in use by another sweep (pid {process.pid} on host "
        f"{socket.gethostname()}, started {json.loads((sweep_dir / LOCK_NAME).read_text())['started_at']}); "
        "wait for it to end or set hydra.sweep.dir to another directory"]
    assert not list(sweep_dir.glob("dose_*"))  # no job ran
    # the holder was killed: the next sweep takes its lock over and runs
    result = _cli(["--multirun", "dry_run=true", "view=baseline,dense", f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"taking over the lock of a sweep that is no longer running (pid {process.pid}" in result.stdout
    assert json.loads((sweep_dir / "study_summary.json").read_text())["n_jobs"] == 2
    assert (sweep_dir / LOCK_NAME).read_text() == ""


def _read_only_env(directory: Path) -> dict:
    """Subprocess faults: chmod when that binds (not root), else the injected read-only directory."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return {}
    return {"FLY64_TEST_READ_ONLY": str(directory)}


@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_an_unwritable_output_dir_is_one_line_before_any_work(tmp_path, mode):
    locked = tmp_path / "locked"
    env = _read_only_env(locked)
    try:
        if mode == "run":
            args, setting, target = [f"hydra.run.dir={locked / 'run'}"], "hydra.run.dir", locked / "run"
        else:
            args, setting, target = ["--multirun", f"hydra.sweep.dir={locked / 'sweep'}"], "hydra.sweep.dir", locked / "sweep"
        result = _cli([*args, "dry_run=true"], tmp_path, **env)
    finally:
        locked.chmod(0o755)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"fly64-train: error: cannot write {target}: "
        f"{'read-only file system' if env else 'permission denied'}; set {setting} to a writable directory"]
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("room,when", [(1_000, "before the job"), (4096 + 3300, "half-way through the job")])
def test_a_full_run_dir_is_one_line_and_leaves_no_record_that_says_planned(tmp_path, room, when):
    run_dir = tmp_path / "run"
    result = _cli(["dry_run=true", f"hydra.run.dir={run_dir}"], tmp_path, FLY64_TEST_FULL_DISK=room)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fly64-train: error: no space left on device writing {run_dir}")
    assert lines[0].endswith("free space there or set hydra.run.dir to a directory on a filesystem with room")
    if when == "half-way through the job":  # the file that did not fit, and its size
        assert re.search(r"writing \S+/legacy_params.json \(needs 1\.[0-9] kB\)", lines[0]), lines[0]
    manifest = run_dir / "training_manifest.json"
    assert not manifest.exists() or json.loads(manifest.read_text())["status"] == "running"
    assert _leftovers(tmp_path) == []
    result = _cli(["dry_run=true", f"hydra.run.dir={run_dir}"], tmp_path)  # space freed
    assert result.returncode == 0, result.stderr
    assert json.loads(manifest.read_text())["status"] == "planned"


@pytest.mark.slow
def test_a_bundle_that_does_not_fit_is_redone_to_the_same_bytes_once_there_is_room(tmp_path):
    smoke = ["job=smoke", "backend.threads=1", "deterministic=true", "view=dense"]
    undisturbed = _cli([*smoke, f"hydra.run.dir={tmp_path / 'a'}"], tmp_path, timeout=900)
    assert undisturbed.returncode == 0, undisturbed.stderr[-2000:]
    run_dir = tmp_path / "b"
    full = _cli([*smoke, f"hydra.run.dir={run_dir}"], tmp_path, timeout=900, FLY64_TEST_FULL_DISK=0,
                FLY64_TEST_FULL_DISK_FOR=bundle.BUNDLE_NAME)
    assert full.returncode == 1
    assert full.stderr.strip().splitlines() == [
        f"fly64-train: error: no space left on device writing {run_dir / bundle.BUNDLE_NAME} (needs "
        f"{files.format_bytes((tmp_path / 'a' / bundle.BUNDLE_NAME).stat().st_size)}); free space there or set "
        "hydra.run.dir to a directory on a filesystem with room"]
    record = json.loads((run_dir / "training_manifest.json").read_text())
    assert record["status"] == "failed" and "bundle_sha256" not in record
    assert not (run_dir / bundle.BUNDLE_NAME).exists() and _leftovers(run_dir) == []
    rerun = _cli([*smoke, f"hydra.run.dir={run_dir}"], tmp_path, timeout=900)  # room again: the same command
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming" in (run_dir / "smoke.log").read_text().lower()
    assert _sha(run_dir / bundle.BUNDLE_NAME) == _sha(tmp_path / "a" / bundle.BUNDLE_NAME)
