"""The legacy PtychoPINN params dict and the one bridge into it.

The dict is the form the original PtychoPINN code reads (reference §6). fly64-train writes it
for the record (`legacy_params.json`, the bundle's manifest) and never reads it back to decide
anything: its own backends are built from a typed `backends.base.ModelSpec`, and what evaluation
needs (`diffraction_norm`) is a field of the bundle's manifest of its own. This module is the
only writer of the dict: the bridge `update_legacy_dict` and `set_runtime` for values known only
once the data is loaded.
"""
from __future__ import annotations

import copy
from typing import Any

from fly64_train import architecture
from fly64_train.config import TrainingConfig, plain

# Defaults of the original `params.cfg` (reference §6.1).
DEFAULT_CFG: dict[str, Any] = {
    "N": 128, "offset": 4, "gridsize": 2, "outer_offset_train": None, "outer_offset_test": None,
    "batch_size": 16, "nepochs": 60, "n_filters_scale": 2, "output_prefix": "outputs",
    "big_gridsize": 10, "max_position_jitter": 10, "sim_jitter_scale": 0.0,
    "default_probe_scale": 0.7, "mae_weight": 0.0, "nll_weight": 1.0, "tv_weight": 0.0,
    "realspace_mae_weight": 0.0, "realspace_weight": 0.0, "nphotons": 1e9, "nimgs_train": 9,
    "nimgs_test": 3, "data_source": "generic", "probe.trainable": False,
    "intensity_scale.trainable": False, "positions.provided": False, "object.big": True,
    "probe.big": False, "probe_scale": 10.0, "set_phi": False, "probe.mask": True,
    "pad_object": True, "model_type": "pinn", "label": "", "size": 392,
    "amp_activation": "sigmoid", "h5_path": "wts.h5", "npseed": 42, "debug": True,
    "gaussian_smoothing_sigma": 0.0, "use_xla_translate": True,
}

# Dataclass field → legacy key, where the names differ (reference §6.3).
KEY_MAPPINGS = {
    "object_big": "object.big",
    "probe_big": "probe.big",
    "probe_mask": "probe.mask",
    "probe_trainable": "probe.trainable",
    "intensity_scale_trainable": "intensity_scale.trainable",
    "positions_provided": "positions.provided",
    "output_dir": "output_prefix",
    "train_data_file": "train_data_file_path",
    "test_data_file": "test_data_file_path",
}

# Keys only known once the data is loaded; `set_runtime` may write these and nothing else.
RUNTIME_KEYS = ("padded_size", "diffraction_norm")


def new_params() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT_CFG)


def dataclass_to_legacy_dict(config: TrainingConfig, output_dir: str = "", train_data_file: str = "",
                             test_data_file: str = "") -> dict[str, Any]:
    """Flatten the config into legacy names (the model node at the top level, renamed keys)."""
    model, trainer = config.model, config.trainer
    flat: dict[str, Any] = {
        "N": model.N,
        "gridsize": config.gridsize,
        "n_filters_scale": model.n_filters_scale,
        "model_type": model.model_type,
        "amp_activation": model.amp_activation,
        "object_big": model.object_big,
        "probe_big": model.probe_big,
        "probe_mask": model.probe_mask,
        "pad_object": model.pad_object,
        "probe_trainable": model.probe_trainable,
        "intensity_scale_trainable": model.intensity_scale_trainable,
        "object_amplitude": model.object_amplitude,
        "member_encoding": model.member_encoding,
        "positions_provided": True,
        "batch_size": trainer.batch_size,
        "nepochs": trainer.epochs,
        "learning_rate": trainer.learning_rate,
        "mae_weight": trainer.mae_weight,
        "nll_weight": trainer.nll_weight,
        "n_groups": trainer.n_groups,
        "neighbor_count": trainer.neighbor_count,
        "enable_oversampling": trainer.enable_oversampling,
        "validation_fraction": trainer.validation_fraction,
        "nphotons": float(config.dose),
        "backend": config.backend.name,
        "compile": config.backend.compile,
        "npseed": config.seed,
        "output_dir": str(output_dir),
        "train_data_file": str(train_data_file),
        "test_data_file": str(test_data_file),
    }
    return {KEY_MAPPINGS.get(key, key): plain(value) for key, value in flat.items()}


def update_legacy_dict(params: dict[str, Any], config: TrainingConfig, output_dir: str = "",
                       train_data_file: str = "", test_data_file: str = "") -> dict[str, Any]:
    """The bridge (CONFIG-001): write the config into `params` and derive dependent keys."""
    params.update(dataclass_to_legacy_dict(config, output_dir, train_data_file, test_data_file))
    gridsize, N = params["gridsize"], params["N"]
    params["bigN"] = N + (gridsize - 1) * params["offset"]
    params["intensity_scale"] = architecture.intensity_scale(params["nphotons"], N)
    return params


def set_runtime(params: dict[str, Any], **values: Any) -> dict[str, Any]:
    """Record values that depend on the loaded data (canvas size, normalisation factor)."""
    unknown = set(values) - set(RUNTIME_KEYS)
    if unknown:
        raise KeyError(f"not runtime keys of the legacy params: {sorted(unknown)}; allowed: {RUNTIME_KEYS}")
    params.update(values)
    return params

