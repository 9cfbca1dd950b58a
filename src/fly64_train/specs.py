"""What a TrainingConfig becomes for the parts that do not read the config schema: the backend
contract's `ModelSpec` (with its `TrainingSettings`) and the training loop's `LoopSettings`.

The one translation from the schema: the defaults of every trainer setting live in config.py's
`TrainerConfig` only, so the settings classes (backends/base.py, training.py) declare none.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from fly64_train import architecture
from fly64_train.architecture import Geometry
from fly64_train.backends.base import ModelSpec, TrainingSettings
from fly64_train.config import TrainingConfig, from_dict
from fly64_train.training import LoopSettings


def training_settings(config: TrainingConfig, compile: bool) -> TrainingSettings:
    """How the model trains (loss weights, what is trainable, Adam's rate, compiled steps)."""
    model, trainer = config.model, config.trainer
    return TrainingSettings(learning_rate=float(trainer.learning_rate), nll_weight=float(trainer.nll_weight),
                            mae_weight=float(trainer.mae_weight), probe_trainable=bool(model.probe_trainable),
                            intensity_scale_trainable=bool(model.intensity_scale_trainable), compile=bool(compile),
                            model_type=str(model.model_type))


def loop_settings(config: TrainingConfig, **changes: Any) -> LoopSettings:
    """The training loop's schedule from `config.trainer` and `config.seed`; `changes` replace fields."""
    trainer = config.trainer
    values = dict(epochs=trainer.epochs, batch_size=trainer.batch_size,
                  validation_fraction=trainer.validation_fraction, lr_plateau_factor=trainer.lr_plateau_factor,
                  lr_plateau_patience=trainer.lr_plateau_patience, min_lr=trainer.min_lr,
                  early_stopping_patience=trainer.early_stopping_patience, seed=config.seed,
                  checkpoint=trainer.checkpoint_every_epoch, max_steps=trainer.max_steps,
                  learning_rate=trainer.learning_rate, lr_schedule=str(trainer.lr_schedule),
                  warmup_steps=trainer.warmup_steps)
    return LoopSettings(**{**values, **changes})


def spec_from_config(config: TrainingConfig, padded_size: int, probe: np.ndarray) -> ModelSpec:
    """The spec of a validated TrainingConfig, once the data fixed the canvas size and the probe."""
    model = config.model
    geometry = Geometry(N=int(model.N), gridsize=int(config.gridsize), n_filters_scale=int(model.n_filters_scale),
                        object_big=bool(model.object_big), probe_big=bool(model.probe_big),
                        amp_activation=str(model.amp_activation), padded_size=int(padded_size),
                        member_encoding=str(model.member_encoding), pad_object=bool(model.pad_object),
                        generator=str(model.generator), ffno_width=int(model.ffno_width),
                        ffno_modes=None if model.ffno_modes is None else int(model.ffno_modes),
                        ffno_blocks=int(model.ffno_blocks), unet_width=int(model.unet_width),
                        input_transform=str(model.input_transform),
                        er_iterations=int(model.er_iterations),
                        er_residual=bool(model.er_residual),
                        er_solver=str(model.er_solver), er_tolerance=float(model.er_tolerance))
    return ModelSpec(geometry, training_settings(config, config.backend.compile), probe,
                     architecture.intensity_scale(config.dose, geometry.N), config.seed)


def spec_from_bundle(content: Mapping[str, Any], seed: int, compile: bool) -> ModelSpec:
    """The spec of a bundle's model (its manifest content), for loading its weights into `compile`d or eager
    steps of any backend. The probe is the bundle's own (replaced by set_weights anyway)."""
    geometry = Geometry.from_dict(content["geometry"])
    probe = np.zeros((geometry.N, geometry.N), np.complex64)
    return ModelSpec(geometry, training_settings(from_dict(content["config"]), compile), probe,
                     float(content["intensity_scale"]), seed)
