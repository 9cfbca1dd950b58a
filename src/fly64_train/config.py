"""Typed configuration of one fly64 study job.

The dataclasses below are the schema Hydra composes into (typos and wrong types fail at
composition with Hydra's own message); `validate()` then checks the rules that types cannot
express (gridsize follows the view, positive dose, ...) and returns the resolved config.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fly64_train import objective, study
from fly64_train.architecture import MEMBER_ENCODINGS


class ConfigError(ValueError):
    """A configuration value is not allowed. The message is one line naming field, value and rule."""


@dataclass
class JobConfig:
    name: str = "train"
    # train: data → train → bundle → evaluate; prepare: only build the datasets;
    # evaluate: score an existing bundle (evaluate.bundle) on the test split.
    kind: str = "train"


@dataclass
class BackendConfig:
    name: str = "tensorflow"
    # 0 = one thread per core of the machine. Bitwise reproducibility needs a fixed count.
    threads: int = 0
    # tf.function-compile the training step (about 1.7x faster than eager on CPU).
    compile: bool = True


@dataclass
class DatasetConfig:
    name: str = "fly64_synthetic"
    source: str = "synthetic"  # synthetic | npz
    # Synthetic study data (used when source=synthetic): an object_size² object, fly-scanned in
    # rows scan_row_spacing apart with an exposure every scan_step px along x, each position off
    # by Gaussian jitter (std scan_jitter px). The default: 24,676 positions ≈ 0.08·D apart.
    object_kind: str = "images"  # images: camera amplitude, astronaut phase | random: seeded texture
    object_size: int = 660
    scan_step: float = 3.0
    scan_row_spacing: float = 4.8
    scan_jitter: float = 0.5
    probe_path: Optional[str] = None  # NPZ with probeGuess: replaces the synthetic probe
    object_path: Optional[str] = None  # NPZ with objectGuess: replaces the synthetic object
    # A user's own measured data in the data contract (used when source=npz).
    train_path: Optional[str] = None
    test_path: Optional[str] = None
    cache_dir: str = "outputs/cache"
    simulation_seed: int = study.SEEDS["simulation"]
    grouping_seed: int = study.SEEDS["grouping"]
    subsampling_seed: int = study.SEEDS["subsampling"]


@dataclass
class ModelConfig:
    N: int = 64
    gridsize: Optional[int] = None  # None: follows the view (baseline 1, dense/sparse 2)
    n_filters_scale: int = 2
    model_type: str = "pinn"
    amp_activation: str = "sigmoid"
    object_big: bool = True
    probe_big: bool = True
    probe_mask: bool = False
    pad_object: bool = True
    probe_trainable: bool = False
    intensity_scale_trainable: bool = True
    # gridsize 2: 'shared' runs every member's pattern through one single-pattern network (the
    # members meet on the canvas); 'stacked' is the reference's network with the C patterns as
    # input channels, which at CPU scale stays in an amplitude-only solution (README).
    member_encoding: str = "shared"
    # The network's probe is normalised so that an object of this uniform amplitude
    # reproduces the data's mean pattern intensity (keeps the sigmoid head in range).
    object_amplitude: float = 0.5


@dataclass
class TrainerConfig:
    epochs: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-3
    nll_weight: float = 1.0
    mae_weight: float = 0.0
    validation_fraction: float = 0.05
    lr_plateau_factor: float = 0.5
    lr_plateau_patience: int = 2
    min_lr: float = 1e-4
    early_stopping_patience: int = 3
    n_groups: Optional[int] = None  # None: every group the view provides
    neighbor_count: int = study.NEIGHBOR_COUNT
    enable_oversampling: bool = False
    checkpoint_every_epoch: bool = True


@dataclass
class EvaluateConfig:
    enabled: bool = True  # evaluate on the test split after training
    bundle: Optional[str] = None  # job.kind=evaluate: the wts.h5.zip to score
    batch_size: int = 64
    # Score only the illuminated region: pixels whose summed test-scan probe intensity Σ|P|² is at
    # least this fraction of its maximum.
    illumination_threshold: float = 0.1
    # Registration searches shifts of at most this many pixels (the positions are known, so a
    # correct reconstruction sits within a pixel or two); 0 = no registration.
    max_shift_px: float = 2.0


@dataclass
class CsvLoggerConfig:
    filename: str = "history.csv"  # one row per epoch, in the run directory


@dataclass
class TensorBoardLoggerConfig:
    log_dir: str = "tensorboard"  # event files, inside the run directory


@dataclass
class MlflowLoggerConfig:
    # Any MLflow tracking URI (http://host:5000, databricks, ...). The default is a local SQLite
    # store under outputs/ (a relative path is relative to the working directory).
    tracking_uri: str = "sqlite:///outputs/mlflow.db"
    # Where a new experiment keeps its artifacts (a local path or URI; an existing experiment keeps its own).
    artifact_location: str = "outputs/mlartifacts"
    experiment_name: str = "fly64"
    log_bundle: bool = True  # the bundle (wts.h5.zip) as an artifact


@dataclass
class LoggerConfig:
    """The training loggers of a job: the `logger` group, several at once (logger=[csv,mlflow])."""
    csv: Optional[CsvLoggerConfig] = None
    tensorboard: Optional[TensorBoardLoggerConfig] = None
    mlflow: Optional[MlflowLoggerConfig] = None

    def selected(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


@dataclass
class TrainingConfig:
    job: JobConfig = field(default_factory=JobConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # What the job returns to a sweeper (objective.OBJECTIVES: val_loss, amplitude_ssim, ...).
    objective: str = "val_loss"
    dose: float = 1000.0
    view: str = "dense"
    seed: int = 42
    deterministic: bool = False
    dry_run: bool = False
    force: bool = False  # redo a job whose verified bundle is already present

    @property
    def gridsize(self) -> int:
        return study.gridsize_for(self.view) if self.model.gridsize is None else self.model.gridsize


JOB_KINDS = ("train", "prepare", "evaluate")
BACKENDS = ("tensorflow", "pytorch")
DATASET_SOURCES = ("synthetic", "npz")
AMP_ACTIVATIONS = ("sigmoid", "swish", "softplus", "relu")
SUPPORTED_N = (64, 128)


def _fail(name: str, value: Any, rule: str) -> None:
    raise ConfigError(f"{name}={value!r} is not allowed: {rule}")


def _one_of(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        _fail(name, value, "expected one of " + ", ".join(map(str, allowed)))


def _positive(name: str, value: float) -> None:
    if not value > 0:  # also rejects NaN
        _fail(name, value, "expected a positive number")


def validate(config: TrainingConfig) -> TrainingConfig:
    """Check every rule types cannot express; return the config with gridsize resolved."""
    _one_of("view", config.view, tuple(study.VIEWS))
    _one_of("objective", config.objective, tuple(objective.OBJECTIVES))
    if config.objective in objective.TEST_METRICS and not config.evaluate.enabled and config.job.kind == "train":
        _fail("objective", config.objective, "a test metric needs evaluate.enabled=true")
    if config.logger.mlflow is not None and not config.logger.mlflow.experiment_name:
        _fail("logger.mlflow.experiment_name", config.logger.mlflow.experiment_name, "expected a name")
    _positive("dose", config.dose)
    _one_of("job.kind", config.job.kind, JOB_KINDS)
    _one_of("backend.name", config.backend.name, BACKENDS)
    if config.backend.threads < 0:
        _fail("backend.threads", config.backend.threads, "expected 0 (all cores) or a positive count")
    _one_of("dataset.source", config.dataset.source, DATASET_SOURCES)
    if config.dataset.source == "npz":
        for key in ("train_path", "test_path"):
            if not getattr(config.dataset, key):
                _fail(f"dataset.{key}", None, "dataset=npz needs dataset.train_path and dataset.test_path")
    else:
        _one_of("dataset.object_kind", config.dataset.object_kind, study.OBJECT_KINDS)
        _positive("dataset.object_size", config.dataset.object_size)
        _positive("dataset.scan_step", config.dataset.scan_step)
        _positive("dataset.scan_row_spacing", config.dataset.scan_row_spacing)
        if not config.dataset.scan_jitter >= 0:
            _fail("dataset.scan_jitter", config.dataset.scan_jitter, "expected a standard deviation ≥ 0 px")

    model = config.model
    _one_of("model.N", model.N, SUPPORTED_N)
    expected = study.gridsize_for(config.view)
    if model.gridsize is not None and model.gridsize != expected:
        _fail("model.gridsize", model.gridsize, f"view={config.view} requires gridsize {expected}")
    _positive("model.n_filters_scale", model.n_filters_scale)
    _one_of("model.model_type", model.model_type, ("pinn",))
    _one_of("model.amp_activation", model.amp_activation, AMP_ACTIVATIONS)
    if not model.pad_object:
        _fail("model.pad_object", False, "only the padded object head (true) is implemented")
    _positive("model.object_amplitude", model.object_amplitude)
    _one_of("model.member_encoding", model.member_encoding, MEMBER_ENCODINGS)
    if model.member_encoding == "shared" and not model.object_big and config.gridsize > 1:
        _fail("model.object_big", False, "member_encoding=shared gives every member its own patch: "
                                         "needs object_big=true (or member_encoding=stacked)")

    trainer = config.trainer
    _positive("trainer.epochs", trainer.epochs)
    if not isinstance(trainer.batch_size, int) or trainer.batch_size <= 0:
        _fail("trainer.batch_size", trainer.batch_size, "expected a positive integer")
    _positive("trainer.learning_rate", trainer.learning_rate)
    for name in ("nll_weight", "mae_weight"):
        value = getattr(trainer, name)
        if not 0 <= value <= 1:
            _fail(f"trainer.{name}", value, "expected a weight in [0, 1]")
    if trainer.nll_weight == 0 and trainer.mae_weight == 0:
        _fail("trainer.nll_weight", 0.0, "nll_weight and mae_weight cannot both be 0")
    if not 0 <= trainer.validation_fraction < 0.5:
        _fail("trainer.validation_fraction", trainer.validation_fraction, "expected a fraction in [0, 0.5)")
    if not 0 < trainer.lr_plateau_factor < 1:
        _fail("trainer.lr_plateau_factor", trainer.lr_plateau_factor, "expected a factor in (0, 1)")
    if trainer.n_groups is not None and trainer.n_groups < 1:
        _fail("trainer.n_groups", trainer.n_groups, "expected a positive count or null (all groups)")
    gridsize = expected
    members = gridsize * gridsize
    if gridsize > 1 and trainer.neighbor_count < members:
        _fail("trainer.neighbor_count", trainer.neighbor_count,
              f"gridsize {gridsize} groups need at least C = gridsize² = {members} neighbours")
    if config.job.kind == "evaluate" and not config.evaluate.bundle:
        _fail("evaluate.bundle", None, "job=evaluate needs evaluate.bundle=<path to wts.h5.zip>")
    _positive("evaluate.batch_size", config.evaluate.batch_size)
    if not 0 < config.evaluate.illumination_threshold < 1:
        _fail("evaluate.illumination_threshold", config.evaluate.illumination_threshold,
              "expected a fraction of the peak illumination in (0, 1)")
    if not config.evaluate.max_shift_px >= 0:
        _fail("evaluate.max_shift_px", config.evaluate.max_shift_px, "expected a number of pixels ≥ 0")
    return dataclasses.replace(config, model=dataclasses.replace(model, gridsize=gridsize))


def to_dict(config: TrainingConfig) -> dict:
    """Plain JSON-able dict of the config (what manifests record)."""
    return dataclasses.asdict(config)


def from_dict(data: dict) -> TrainingConfig:
    """Rebuild a TrainingConfig from `to_dict` output (e.g. a bundle's manifest)."""
    sections = {f.name: f.type for f in dataclasses.fields(TrainingConfig)}
    kwargs: dict[str, Any] = {}
    nested = {"job": JobConfig, "backend": BackendConfig, "dataset": DatasetConfig,
              "model": ModelConfig, "trainer": TrainerConfig, "evaluate": EvaluateConfig}
    loggers = {"csv": CsvLoggerConfig, "tensorboard": TensorBoardLoggerConfig, "mlflow": MlflowLoggerConfig}
    for key, value in data.items():
        if key not in sections:
            continue
        if key == "logger":
            kwargs[key] = LoggerConfig(**{name: loggers[name](**settings) for name, settings in (value or {}).items()
                                          if name in loggers and settings is not None})
        elif key in nested:
            known = {f.name for f in dataclasses.fields(nested[key])}
            kwargs[key] = nested[key](**{k: v for k, v in value.items() if k in known})
        else:
            kwargs[key] = value
    return TrainingConfig(**kwargs)


def register_configs() -> None:
    """Fill Hydra's ConfigStore with the schema (called by cli.py and the tests' conftest)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("fly64.int"):
        # Directory names use integers where the value is one: dose_1000, not dose_1000.0.
        OmegaConf.register_new_resolver("fly64.int", study.format_number)
    if not OmegaConf.has_resolver("fly64.direction"):
        # The Optuna preset's direction follows the objective: ${fly64.direction:${objective}}.
        OmegaConf.register_new_resolver("fly64.direction", objective.direction)
    store = ConfigStore.instance()
    store.store(name="fly64_schema", node=TrainingConfig)


def conf_dir() -> Path:
    """The absolute conf/ directory: inside an installed wheel, else the checkout's top level."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"fly64-train's conf/ directory is missing (looked in {here / 'conf'} "
                            f"and {here.parents[1] / 'conf'}); reinstall the package")
