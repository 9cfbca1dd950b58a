"""The objective a job returns to a sweeper, the `logger` group's composition (several at once),
and the fly64_optuna sweeper preset (search space, direction following the objective, trial dirs)."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from fly64_train import objective
from fly64_train.config import (ConfigError, CsvLoggerConfig, MlflowLoggerConfig, TrainingConfig, from_dict, to_dict,
                                validate)
from fly64_train.hydra_setup import conf_dir
from fly64_train.sweep import best_job
from tests.conftest import compose_config

RECORD = {"final_loss": 0.4, "val_loss": 0.5,
          "metrics": {"amplitude": {"ssim": 0.26, "psnr": 17.1, "mae": 0.1, "frc50": 21},
                      "phase": {"ssim": 0.05, "psnr": float("inf")},
                      "patchwise": {"amplitude_correlation": 0.37, "phase_correlation": 0.35}}}


@pytest.mark.parametrize("name,direction,expected", [
    ("val_loss", "minimize", 0.5), ("final_loss", "minimize", 0.4), ("amplitude_ssim", "maximize", 0.26),
    ("phase_ssim", "maximize", 0.05), ("amplitude_mae", "minimize", 0.1), ("amplitude_frc50", "maximize", 21.0),
    ("phase_patch_corr", "maximize", 0.35), ("amplitude_patch_corr", "maximize", 0.37)])
def test_each_objective_reads_its_value_and_knows_its_direction(name, direction, expected):
    assert objective.describe(RECORD, name) == {"name": name, "direction": direction, "value": expected}


def test_missing_or_non_finite_results_have_no_value():
    assert objective.value(RECORD, "phase_psnr") is None  # +inf (a perfect reconstruction) is no objective
    assert objective.value({"val_loss": None}, "val_loss") is None
    assert objective.value({"final_loss": 0.3}, "amplitude_ssim") is None
    assert objective.value({"val_loss": float("nan")}, "val_loss") is None
    with pytest.raises(ValueError, match="objective='accuracy' is not allowed"):
        objective.direction("accuracy")


def test_best_job_follows_the_direction():
    rows = [{"objective": "val_loss", "objective_value": v, "job_dir": d} for v, d in ((0.3, "a"), (0.1, "b"))]
    rows.append({"objective": "val_loss", "objective_value": None, "job_dir": "failed"})
    assert best_job(rows)["job_dir"] == "b"
    for row in rows:
        row["objective"] = "phase_ssim"
    assert best_job(rows)["job_dir"] == "a"
    assert best_job([]) is None


def test_objective_is_validated():
    with pytest.raises(ConfigCompositionException) as info:  # a Choice: rejected while composing
        compose_config("objective=accuracy")
    assert "expected one of [val_loss, final_loss" in str(info.value.__cause__)
    with pytest.raises(ConfigError, match="objective='accuracy' is not allowed: expected one of val_loss"):
        TrainingConfig(objective="accuracy")  # built in Python: the same choices
    with pytest.raises(ConfigError, match="a test metric needs evaluate.enabled=true"):
        validate(compose_config("objective=phase_ssim", "evaluate.enabled=false"))
    assert validate(compose_config("objective=final_loss", "evaluate.enabled=false")).objective == "final_loss"


def test_the_default_logger_is_csv_and_several_can_be_chosen():
    assert compose_config().logger.selected() == ["csv"]
    config = compose_config("logger=[csv,tensorboard,mlflow]")
    assert config.logger.selected() == ["csv", "tensorboard", "mlflow"]
    assert config.logger.csv == CsvLoggerConfig()
    assert config.logger.mlflow.tracking_uri == "sqlite:///outputs/mlflow.db"
    assert compose_config("logger=mlflow", "logger.mlflow.tracking_uri=http://tracking:5000").logger.mlflow == \
        MlflowLoggerConfig(tracking_uri="http://tracking:5000")
    assert compose_config("logger=[]").logger.selected() == []
    with pytest.raises(ConfigCompositionException):
        compose_config("logger=wandb")


def test_loggers_and_objective_survive_the_dict_round_trip():
    config = compose_config("logger=[tensorboard,mlflow]", "objective=phase_ssim")
    assert from_dict(to_dict(config)) == config


def hydra_config(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_the_optuna_preset_searches_the_recipe_and_follows_the_objective():
    cfg = hydra_config("hydra/sweeper=fly64_optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert dict(sweeper.params) == {"trainer.learning_rate": "tag(log, interval(1e-4, 1e-2))",
                                    "trainer.batch_size": "choice(8, 16, 32)",
                                    "model.n_filters_scale": "choice(1, 2)"}
    assert sweeper.direction == "minimize" and sweeper.max_failure_rate == 1.0
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 42
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "trial_${hydra.job.num}"
    assert hydra_config("hydra/sweeper=fly64_optuna", "objective=phase_ssim").hydra.sweeper.direction == "maximize"
    assert hydra_config("hydra/sweeper=fly64_optuna", "seed=7").hydra.sweeper.sampler.seed == 7
    # Another sampler can be chosen (the grid sampler has no seed).
    grid = hydra_config("hydra/sweeper=fly64_optuna", "hydra/sweeper/sampler=grid").hydra.sweeper.sampler
    assert grid._target_ == "optuna.samplers.GridSampler"


def test_the_basic_sweeper_keeps_the_study_layout():
    cfg = hydra_config()
    # a method other than PtychoPINN gets a suffix (dense_lsqml), PtychoPINN's jobs keep dose_<d>/<view>
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == (
        "dose_${fly64.int:${dose}}/${view}${fly64.method_suffix:${job.kind},${model.model_type},${iterative.engine}}")
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
