"""Composition over the study matrix, validation of bad overrides, directory naming."""
from __future__ import annotations

import itertools

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from fly64_train import study
from fly64_train.config import ConfigError, TrainingConfig, from_dict, to_dict, validate
from tests.conftest import compose_config

MATRIX = list(itertools.product(["1000", "1e4", "100000"], study.VIEWS, ["tensorflow", "pytorch"]))


@pytest.mark.parametrize("dose,view,backend", MATRIX)
def test_matrix_composes_into_a_valid_training_config(dose, view, backend):
    config = validate(compose_config(f"dose={dose}", f"view={view}", f"backend={backend}"))
    assert isinstance(config, TrainingConfig)
    assert config.dose == float(dose)
    assert config.view == view
    assert config.backend.name == backend
    assert config.gridsize == config.model.gridsize == (1 if view == "baseline" else 2)
    assert config.model.N == 64 and config.trainer.neighbor_count == study.NEIGHBOR_COUNT


def test_defaults_are_the_default_cpu_study_job():
    config = validate(compose_config())
    assert (config.dose, config.view, config.backend.name, config.job.name) == (1000.0, "dense", "tensorflow", "train")
    assert config.dataset.source == "synthetic"
    assert (config.dataset.simulation_seed, config.dataset.grouping_seed, config.dataset.subsampling_seed) == (42, 123, 456)


def test_float_and_integer_doses_are_the_same_job():
    assert compose_config("dose=1e3").dose == compose_config("dose=1000").dose == 1000.0
    assert study.job_name(1e3, "dense") == "dose_1000/dense"
    assert study.format_number(2.5) == "2.5"


@pytest.mark.parametrize("job,expect", [
    ("smoke", lambda c: c.trainer.epochs <= 2 and c.model.n_filters_scale == 1),
    ("study", lambda c: c.model.N == 128 and c.trainer.n_groups is None and c.trainer.epochs == 50),
    ("train", lambda c: c.trainer.epochs == 20 and c.trainer.n_groups == 1024 and c.model.member_encoding == "shared"),
    ("prepare", lambda c: c.job.kind == "prepare"),
])
def test_job_presets(job, expect):
    assert expect(validate(compose_config(f"job={job}")))


def test_npz_dataset_requires_both_paths():
    with pytest.raises(Exception, match="train_path"):
        validate(compose_config("dataset=npz"))
    config = validate(compose_config("dataset=npz", "dataset.train_path=a.npz", "dataset.test_path=b.npz"))
    assert config.dataset.source == "npz"


@pytest.mark.parametrize("overrides,field,fragment", [
    (["view=baseline", "model.gridsize=2"], "model.gridsize=2", "view=baseline requires gridsize 1"),
    (["view=sparse", "model.gridsize=1"], "model.gridsize=1", "view=sparse requires gridsize 2"),
    (["view=diagonal"], "view='diagonal'", "baseline, dense, sparse"),
    (["dose=0"], "dose=0.0", "positive"),
    (["dose=-1000"], "dose=-1000.0", "positive"),
    (["dose=nan"], "dose=nan", "positive"),
    (["trainer.neighbor_count=3"], "trainer.neighbor_count=3", "at least C = gridsize² = 4"),
    (["trainer.batch_size=0"], "trainer.batch_size=0", "positive integer"),
    (["trainer.epochs=0"], "trainer.epochs=0", "positive"),
    (["trainer.nll_weight=2"], "trainer.nll_weight=2.0", "[0, 1]"),
    (["model.N=96"], "model.N=96", "64, 128"),
    (["backend.threads=-1"], "backend.threads=-1", "positive"),
    (["job=evaluate"], "evaluate.bundle=None", "evaluate.bundle=<path"),
    (["model.member_encoding=mixed"], "model.member_encoding='mixed'", "shared, stacked"),
    (["view=dense", "model.object_big=false"], "model.object_big=False", "member_encoding=stacked"),
])
def test_bad_values_fail_with_one_clear_line(overrides, field, fragment):
    with pytest.raises(ConfigError) as info:
        validate(compose_config(*overrides))
    message = str(info.value)
    assert "\n" not in message
    assert field in message and fragment in message


def test_member_encoding_choices():
    assert validate(compose_config("view=dense", "model.object_big=false",
                                   "model.member_encoding=stacked")).model.object_big is False
    assert validate(compose_config("view=baseline", "model.object_big=false")).gridsize == 1  # one member


def test_neighbor_count_below_c_is_fine_for_gridsize_one():
    assert validate(compose_config("view=baseline", "trainer.neighbor_count=1")).gridsize == 1


@pytest.mark.parametrize("override", ["trainer.epocs=3", "view=dense backend=jax", "backend=jax", "dataset=fly128"])
def test_typos_fail_at_composition_with_hydras_message(override):
    with pytest.raises(ConfigCompositionException):
        compose_config(*override.split())


@pytest.mark.parametrize("override", ["trainer.batch_size=1.5", "trainer.batch_size=sixteen", "dose=lots",
                                      "deterministic=maybe"])
def test_wrong_types_fail_at_composition(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config(override)


def test_config_round_trips_through_a_plain_dict():
    config = validate(compose_config("view=sparse", "backend=pytorch", "trainer.epochs=3"))
    assert from_dict(to_dict(config)) == config
