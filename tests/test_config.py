"""Composition over the study matrix, validation of bad overrides, directory naming."""
from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from fly64_train import config, hydra_setup, study
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
    ("train", lambda c: c.trainer.epochs == 8 and c.trainer.n_groups == 1024 and c.model.member_encoding == "shared"
     and not c.model.pad_object and c.model.input_transform == "backprop"),
    ("prepare", lambda c: c.job.kind == "prepare"),
    # train_long: the train preset's network on more content, for longer
    ("train_long", lambda c: c.job.kind == "train" and c.model.n_filters_scale == 1 and not c.model.pad_object
     and c.dataset.extra_train_tiles == 8 and c.trainer.n_groups is None and c.trainer.max_steps == 6000),
    # train_raar: the train preset on the group's RAAR solve, its heads correcting the estimate
    ("train_raar", lambda c: c.trainer.epochs == 8 and c.trainer.n_groups == 1024 and c.model.input_transform == "er"
     and c.model.er_solver == "raar" and c.model.er_iterations == 50 and c.model.er_residual),
])
def test_job_presets(job, expect):
    assert expect(validate(compose_config(f"job={job}")))


def test_train_raar_takes_its_noise_band_from_the_dose_unless_overridden():
    assert [validate(compose_config("job=train_raar", f"dose={dose}")).model.er_tolerance
            for dose in (1000, 1e4, 100000)] == [1.0, 0.0, 0.0]
    assert validate(compose_config("job=train_raar", "dose=1000", "model.er_tolerance=0.5")).model.er_tolerance == 0.5


def test_grouped_views_take_larger_groups_of_their_nearest_patterns():
    config = validate(compose_config("view=dense", "model.gridsize=3", "trainer.neighbor_count=9"))
    assert config.gridsize == config.model.gridsize == 3
    assert validate(compose_config("view=sparse", "model.gridsize=3", "trainer.neighbor_count=12")).gridsize == 3
    assert validate(compose_config("view=dense")).gridsize == 2  # null still follows the view


def test_npz_dataset_requires_both_paths():
    with pytest.raises(ConfigError, match="dataset.train_path=None is not allowed: dataset=npz needs"):
        validate(compose_config("dataset=npz"))
    config = validate(compose_config("dataset=npz", "dataset.train_path=a.npz", "dataset.test_path=b.npz"))
    assert config.dataset.source == "npz"


@pytest.mark.parametrize("overrides,field,fragment", [
    (["view=baseline", "model.gridsize=2"], "model.gridsize=2", "view=baseline requires gridsize 1"),
    (["view=sparse", "model.gridsize=1"], "model.gridsize=1", "view=sparse requires gridsize 2 or larger"),
    (["view=dense", "model.gridsize=3"], "trainer.neighbor_count=7", "at least C = gridsize² = 9"),
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
    (["backend=pytorch", "backend.compile=true"], "backend.compile=True", "the pytorch backend runs eagerly"),
    (["trainer.validation_fraction=0.5"], "trainer.validation_fraction=0.5", "[0, 0.5)"),
    (["trainer.n_groups=0"], "trainer.n_groups=0", "positive count or null"),
    (["view=dense", "model.object_big=false"], "model.object_big=False", "member_encoding=stacked"),
    (["job=smoke", "model.generator=ffno"], "model.pad_object=True", "set model.pad_object=false"),
    (["model.generator=ffno", "model.ffno_modes=40"], "model.ffno_modes=40", "1 to N/2 = 32"),
    (["model.generator=ffno", "model.ffno_width=0"], "model.ffno_width=0", "positive integer"),
    (["model.er_iterations=20"], "model.er_iterations=20", "need model.input_transform=er"),
    (["model.input_transform=er", "model.er_iterations=0"], "model.er_iterations=0", "positive integer"),
    (["model.er_residual=true"], "model.er_residual=True", "needs model.input_transform=er"),
    (["model.er_solver=raar"], "model.er_solver='raar'", "needs model.input_transform=er"),
    (["model.input_transform=er", "model.er_tolerance=1"], "model.er_tolerance=1.0", "model.er_iterations > 1"),
    (["job=train_raar", "model.er_tolerance=-0.5"], "model.er_tolerance=-0.5", "finite number ≥ 0"),
    (["job=train_raar", "model.er_tolerance=nan"], "model.er_tolerance=nan", "finite number ≥ 0"),
    (["model.input_transform=er", "model.er_residual=true", "model.amp_activation=swish"], "model.er_residual=True",
     "model.amp_activation=sigmoid"),
    (["dataset.extra_train_tiles=-1"], "dataset.extra_train_tiles=-1", "a count ≥ 0"),
    (["dataset.extra_train_tiles=9"], "dataset.extra_train_tiles=9", "8 picture pairs"),
    (["dataset.extra_train_tiles=2", "dataset.object_path=o.npz"], "dataset.extra_train_tiles=2",
     "cannot extend dataset.object_path"),
    (["dataset=npz", "dataset.train_path=a.npz", "dataset.test_path=b.npz", "dataset.extra_train_tiles=1"],
     "dataset.extra_train_tiles=1", "need dataset.source=synthetic"),
    (["view=dense", "model.model_type=supervised", "model.member_encoding=stacked", "model.object_big=false"],
     "model.object_big=False", "model_type=supervised compares every member's patch"),
    (["trainer.warmup_steps=100"], "trainer.warmup_steps=100", "belongs to trainer.lr_schedule=cosine"),
    (["trainer.lr_schedule=cosine", "trainer.warmup_steps=-5"], "trainer.warmup_steps=-5", "whole number of steps"),
    (["trainer.lr_schedule=cosine", "trainer.min_lr=1e-3"], "trainer.min_lr=0.001", "min_lr < learning_rate"),
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


@pytest.mark.parametrize("override,choices", [
    ("view=diagonal", "baseline, dense, sparse"), ("backend.name=jax", "tensorflow, pytorch"),
    ("dataset.source=hdf5", "synthetic, npz"), ("job.kind=fit", "train, prepare, evaluate, iterative"),
    ("model.amp_activation=tanh", "sigmoid, swish, softplus, relu"), ("model.member_encoding=mixed", "shared, stacked"),
    ("model.model_type=hybrid", "pinn, supervised"), ("model.generator=resnet", "cnn, ffno, unet"),
    ("trainer.lr_schedule=onecycle", "plateau, cosine")])
def test_choices_fail_at_composition(override, choices):
    """Choices are Enums: Hydra rejects a value outside them while composing (no run directory yet)."""
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(override)
    assert f"expected one of [{choices}]" in str(info.value.__cause__)


def test_choices_are_the_owning_modules_lists():
    from fly64_train import architecture
    from fly64_train.backends import registry
    assert config.View.values() == list(study.VIEWS)
    assert config.BackendName.values() == list(registry.BACKENDS)
    assert config.AmpActivation.values() == list(architecture.AMP_ACTIVATIONS)
    assert config.MemberEncoding.values() == list(architecture.MEMBER_ENCODINGS)
    assert config.Generator.values() == list(architecture.GENERATORS)


def test_generator_choice_reaches_the_spec():
    from fly64_train import architecture
    from fly64_train.specs import spec_from_config

    cfg = validate(compose_config("model.generator=ffno", "model.ffno_blocks=2"))  # the train preset: full head
    probe = np.ones((64, 64), np.complex64)
    geometry = spec_from_config(cfg, 64, probe).geometry
    assert (geometry.generator, geometry.ffno_blocks, geometry.ffno_modes) == ("ffno", 2, 12)  # min(12, 64/4)
    assert geometry.ffno_width == architecture.FFNO_WIDTH
    assert spec_from_config(validate(compose_config()), 64, probe).geometry.generator == "cnn"  # the reference


def test_choices_from_python_are_checked_and_compare_as_strings():
    made = TrainingConfig(view="sparse", backend=config.BackendConfig(name="pytorch", compile=False))
    assert made.view is config.View.sparse and made.view == "sparse" and f"{made.view}" == "sparse"
    assert made.backend.name is config.BackendName.pytorch
    with pytest.raises(ConfigError, match=r"^view='diagonal' is not allowed: expected one of baseline, dense, sparse$"):
        TrainingConfig(view="diagonal")
    with pytest.raises(ConfigError, match=r"^model.amp_activation='tanh' is not allowed"):
        config.ModelConfig(amp_activation="tanh")


def test_every_field_has_help_and_help_shows_it():
    for cls in (TrainingConfig, config.JobConfig, config.BackendConfig, config.DatasetConfig, config.ModelConfig,
                config.TrainerConfig, config.EvaluateConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
    text = hydra_setup.describe()
    assert "dose: 1000.0" in text and "photons per pattern" in text
    assert "view: dense" in text and "[baseline|dense|sparse]" in text
    assert "  learning_rate: 0.001" in text and "Adam's initial learning rate" in text
    assert "generator: cnn" in text and "[cnn|ffno|unet]" in text


@pytest.mark.parametrize("override", ["trainer.batch_size=1.5", "trainer.batch_size=sixteen", "dose=lots",
                                      "deterministic=maybe"])
def test_wrong_types_fail_at_composition(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config(override)


def test_config_round_trips_through_a_plain_dict():
    composed = validate(compose_config("view=sparse", "backend=pytorch", "trainer.epochs=3"))
    plain = to_dict(composed)
    assert type(plain["view"]) is str and type(plain["backend"]["name"]) is str
    assert type(plain["model"]["member_encoding"]) is str and type(plain["job"]["kind"]) is str
    assert json.loads(json.dumps(plain)) == plain
    assert from_dict(plain) == composed
    assert from_dict({**plain, "retired_field": 1, "model": {"N": 64}}).model.member_encoding == "shared"


def test_every_job_kind_has_its_function_in_the_runner():
    from fly64_train import runner

    assert set(runner.JOBS) == set(config.JobKind.values())
