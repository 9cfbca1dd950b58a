"""Shared fixtures: the ConfigStore is filled once, and `compose` builds a TrainingConfig from
overrides exactly as the CLI does (minus Hydra's runtime)."""
from __future__ import annotations

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
