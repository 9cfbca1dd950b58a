"""Shared fixtures: the ConfigStore is filled once, and `compose` builds a TrainingConfig from
overrides exactly as the CLI does (minus Hydra's runtime)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fly64_train.config import TrainingConfig
from fly64_train.hydra_setup import conf_dir, register_configs

register_configs()
REPO = Path(__file__).resolve().parents[1]


def benchmark_script(name: str) -> Path:
    return REPO / "benchmarks" / f"{name}.py"


def load_benchmark(name: str):
    """A benchmarks/<name>.py script as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, benchmark_script(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_config(*overrides: str) -> TrainingConfig:
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_object(cfg)


@pytest.fixture
def compose_cfg():
    return compose_config


def run_cli(args: list[str], cwd: Path, timeout: float = 600, env_extra: dict | None = None):
    """Run the installed console script (via this interpreter) in `cwd`; return CompletedProcess."""
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    env.update(env_extra or {})
    command = [sys.executable, "-m", "fly64_train", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# The files that train whole jobs, longest first; the rest keep their order. With the README's
# `-n 2 --dist loadfile` each file runs on one worker, so starting the long ones first keeps one
# worker from running them alone at the end.
LONGEST_FIRST = ("test_sweep.py", "test_e2e.py", "test_storage_faults.py", "test_backend_contract.py",
                 "test_iterative.py", "test_optuna_sweep.py", "test_tracking.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: within a file and among the rest, collection order stays
