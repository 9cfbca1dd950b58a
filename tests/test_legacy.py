"""The bridge into the legacy params dict (reference §6.1-6.3)."""
from __future__ import annotations

import ast
import math

import pytest

from fly64_train import legacy
from fly64_train.config import validate
from tests.conftest import compose_config


def bridged(*overrides):
    config = validate(compose_config(*overrides))
    return config, legacy.update_legacy_dict(legacy.new_params(), config, output_dir="/tmp/run",
                                             train_data_file="a.npz", test_data_file="b.npz")


# The original's `ptycho.params.cfg` defaults as the reference (§6.1) tabulates them, copied verbatim.
REFERENCE_6_1 = """
N 128 · offset 4 · gridsize 2 · outer_offset_train None · outer_offset_test None · batch_size 16 ·
nepochs 60 · n_filters_scale 2 · output_prefix 'outputs' · big_gridsize 10 · max_position_jitter 10 ·
sim_jitter_scale 0. · default_probe_scale 0.7 · mae_weight 0. · nll_weight 1. · tv_weight 0. ·
realspace_mae_weight 0. · realspace_weight 0. · nphotons 1e9 · nimgs_train 9 · nimgs_test 3 ·
data_source 'generic' · probe.trainable False · intensity_scale.trainable False · positions.provided False ·
object.big True · probe.big False · probe_scale 10. · set_phi False · probe.mask True · pad_object True ·
model_type 'pinn' · label '' · size 392 · amp_activation 'sigmoid' · h5_path 'wts.h5' · npseed 42 ·
debug True · gaussian_smoothing_sigma 0.0 · use_xla_translate True.
"""


def reference_table() -> dict:
    entries = REFERENCE_6_1.strip().rstrip(".").replace("\n", " ").split(" · ")
    return {key: ast.literal_eval(value) for key, value in (entry.strip().split(" ", 1) for entry in entries)}


def test_defaults_are_the_references_table():
    table = reference_table()
    assert len(table) == 40
    params = legacy.new_params()
    assert params == table
    for key, value in table.items():  # the same types too (True is not 1, 0. is not 0)
        assert type(params[key]) is type(value), key


def test_bridge_renames_keys_and_sets_nphotons_to_the_dose():
    config, params = bridged("dose=1e4", "view=sparse", "model.probe_trainable=true")
    assert params["nphotons"] == 1e4
    assert params["gridsize"] == 2 and params["N"] == 64
    assert params["probe.trainable"] is True
    assert params["intensity_scale.trainable"] is True
    assert params["object.big"] is True and params["probe.big"] is True and params["probe.mask"] is False
    assert params["positions.provided"] is True
    assert params["output_prefix"] == "/tmp/run"
    assert params["train_data_file_path"] == "a.npz" and params["test_data_file_path"] == "b.npz"
    for old_name in legacy.KEY_MAPPINGS:
        assert old_name not in params
    assert params["nepochs"] == config.trainer.epochs and params["batch_size"] == config.trainer.batch_size
    assert params["neighbor_count"] == 7
    assert params["compile"] is True and bridged("backend.compile=false")[1]["compile"] is False


@pytest.mark.parametrize("dose,N,expected", [(1e3, 64, 0.9882), (1e4, 64, 3.125), (1e5, 64, 9.8821),
                                             (1e3, 128, 0.4941), (1e5, 128, 4.9411)])
def test_intensity_scale_matches_the_reference_values(dose, N, expected):
    _, params = bridged(f"dose={dose}", f"model.N={N}")
    assert math.isclose(params["intensity_scale"], expected, rel_tol=1e-4)


def test_derived_big_n_follows_gridsize():
    assert bridged("view=baseline")[1]["bigN"] == 64
    assert bridged("view=dense")[1]["bigN"] == 68


def test_runtime_keys_are_the_only_other_writes():
    params = legacy.new_params()
    legacy.set_runtime(params, padded_size=96)
    assert params["padded_size"] == 96
    with pytest.raises(KeyError, match="not runtime keys"):
        legacy.set_runtime(params, gridsize=3)


def test_bridge_writes_choices_as_plain_strings():
    _, params = bridged("backend=pytorch", "backend.compile=false", "model.amp_activation=swish")
    assert type(params["backend"]) is str and params["backend"] == "pytorch"
    assert type(params["amp_activation"]) is str and type(params["member_encoding"]) is str
