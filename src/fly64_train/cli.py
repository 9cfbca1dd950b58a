"""The fly64-train console script: Hydra composes the config, run_job does the work.

This is the only module that knows Hydra's runtime (run directory, overrides, run mode). The task
function returns the job's objective (`objective`, e.g. val_loss) for sweepers such as Optuna;
None when the job has none (dry run, prepare, no validation split). A failed job raises under
--multirun, so Hydra reports it as failed (and the Optuna sweeper records a failed trial).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fly64_train.config import ConfigError, conf_dir, register_configs
from fly64_train.runner import run_job

log = logging.getLogger("fly64_train")

register_configs()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def _app(cfg: DictConfig) -> Optional[float]:
    runtime = HydraConfig.get()
    run_dir = Path(runtime.runtime.output_dir)
    overrides = list(runtime.overrides.task)
    config = OmegaConf.to_object(cfg)
    try:
        record = run_job(config, run_dir, overrides)
    except Exception as exc:  # noqa: BLE001 - reported as one line; the traceback goes to the job log
        log.error("job failed", exc_info=True)
        if runtime.mode == RunMode.MULTIRUN or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise  # Hydra records the failure and the sweep goes on with the other jobs
        print(f"fly64-train: error: {exc}", file=sys.stderr)
        print(f"fly64-train: the job's manifest and log are in {run_dir}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, ConfigError) else 1)
    return (record.get("objective") or {}).get("value")


def main() -> None:
    _app()


if __name__ == "__main__":
    main()
