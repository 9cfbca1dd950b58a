"""Dataset sources as plug-ins (data/sources.py): the registry is the one list of sources, and a
source registered from outside the package is a `dataset.source` choice that `job=prepare` runs
through, with nothing else edited."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fly64_train import config
from fly64_train.data import sources
from fly64_train.data.contract import load_dataset
from tests.conftest import REPO


def test_the_config_choices_are_the_registered_sources():
    assert config.DatasetSource.values() == list(sources.SOURCES) == ["synthetic", "npz"]
    with pytest.raises(ValueError, match=r"dataset.source='hdf5' is not allowed: expected one of synthetic, npz"):
        sources.get_source("hdf5")


def test_a_registered_toy_source_runs_job_prepare(tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    code = "import sys; import tests.toy_source; from fly64_train.cli import main; sys.argv[0] = 'fly64-train'; main()"
    args = ["job=prepare", "dataset.source=toy", f"dataset.cache_dir={cache}", f"hydra.run.dir={run_dir}"]
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads((run_dir / "training_manifest.json").read_text())
    assert record["status"] == "success" and record["datasets"]["source"] == "toy"
    assert "view_geometry" not in record  # the toy makes no views
    for split in ("train", "test"):
        data = load_dataset(record["datasets"][split])  # what it yields passes the data contract
        assert data.N == 64 and data.n == {"train": 40, "test": 41}[split]  # a 9 × 9 grid, split in two
        assert f"{split}: {record['datasets'][split]}" in done.stdout + done.stderr
    units = list(cache.rglob("complete.json"))  # built once, into the generic cache
    assert len(units) == 1 and units[0].parent.name == "toy"
