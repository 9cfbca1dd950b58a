"""The fly64-train console script: Hydra composes the config, run_job does the work.

This module and the sweep callback (sweep.py) are the only ones that know Hydra's runtime (run
directory, overrides, run mode). A value Hydra rejects while composing (a typo, a wrong type, a
choice outside its Enum) gets Hydra's short message before any run directory exists; a value a
rule rejects at run time gets one line on stderr, its traceback only in the job's log file. The
task function returns the job's objective (`objective`, e.g. val_loss) for sweepers such as
Optuna; None when the job has none (dry run, prepare, no validation split). A failed job raises
under --multirun, so Hydra reports it as failed (in one line; the Optuna sweeper records a failed
trial). A full disk or an unwritable directory names the setting that chose it (`dataset.cache_dir`,
`hydra.run.dir`, `hydra.sweep.dir`): this module tells `files.configured_dirs` which is which.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fly64_train import __version__, files
from fly64_train.config import ConfigError
from fly64_train.hydra_setup import conf_dir, register_configs
from fly64_train.logs import FILE_ONLY
from fly64_train.runner import run_job

log = logging.getLogger("fly64_train")

register_configs()


class JobFailed(CompactHydraException):
    """A job of a sweep failed: Hydra reports its one-line message at the end, not a traceback."""


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def _app(cfg: DictConfig) -> Optional[float]:
    runtime = HydraConfig.get()
    run_dir = Path(runtime.runtime.output_dir)
    overrides = list(runtime.overrides.task)
    config = OmegaConf.to_object(cfg)
    multirun = runtime.mode == RunMode.MULTIRUN
    settings = {runtime.sweep.dir: "hydra.sweep.dir"} if multirun else {run_dir: "hydra.run.dir"}
    settings[config.dataset.cache_dir] = "dataset.cache_dir"
    try:
        with files.configured_dirs(settings):
            record = run_job(config, run_dir, overrides)
    except Exception as exc:  # noqa: BLE001 - one line on the terminal; the traceback goes to the job log
        log.error("job failed: %s", exc, exc_info=True, extra=FILE_ONLY)  # the traceback: job log file only
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if multirun:  # Hydra records the failure; the sweep goes on with the other jobs
            raise JobFailed(str(exc)) from exc
        print(f"fly64-train: error: {exc}", file=sys.stderr)
        if not isinstance(exc, files.StorageError):  # its line is all there is: the run dir may hold nothing
            print(f"fly64-train: the job's manifest and log are in {run_dir}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, ConfigError) else 1)
    return (record.get("objective") or {}).get("value")


def version() -> str:
    return f"fly64-train {__version__} (Hydra {hydra.__version__})"


def main() -> None:
    if any(arg in ("--version", "-V") for arg in sys.argv[1:]):
        print(version())
        return
    _app()


if __name__ == "__main__":
    main()
