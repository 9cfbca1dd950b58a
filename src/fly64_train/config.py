"""Typed configuration of one fly64 study job.

The dataclasses below are the schema Hydra composes into. Types do the first checks while Hydra
composes, before any run directory exists: a typo, a wrong type, or a value outside a choice
(the `Choice` enums: view, backend.name, dataset.source, dataset.object_kind, job.kind,
model.amp_activation, model.member_encoding, model.generator, model.model_type, trainer.lr_schedule,
objective) fails with Hydra's own short message. Every field carries its help text (shown by
`fly64-train --help`) and, where a type cannot say it, a range rule (`check`); `validate()` runs
those and the rules that span fields, and returns the resolved config. A broken rule is a
ConfigError with one line naming the field, the value and the rule.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

from fly64_train import architecture, objective, study, training
from fly64_train.backends import registry
from fly64_train.data import sources
from fly64_train.iterative import settings as iterative_settings


class ConfigError(ValueError):
    """A configuration value is not allowed. The message is one line naming field, value and rule."""


class Choice(str, enum.Enum):
    """A closed set of config values. OmegaConf checks them at composition (by name = value); in
    Python a member compares, hashes, prints and formats as its value string."""
    __str__ = str.__str__
    __format__ = str.__format__

    def __repr__(self) -> str:
        return repr(self.value)

    @classmethod
    def values(cls) -> list[str]:
        return [member.value for member in cls]


def _choice(name: str, values) -> type[Choice]:
    return Choice(name, [(str(value), str(value)) for value in values], module=__name__, qualname=name)


# Each list comes from the module that owns it; nothing here repeats one.
View = _choice("View", study.VIEWS)
BackendName = _choice("BackendName", registry.BACKENDS)
DatasetSource = _choice("DatasetSource", sources.SOURCES)
ObjectKind = _choice("ObjectKind", study.OBJECT_KINDS)
JobKind = _choice("JobKind", ("train", "prepare", "evaluate", "iterative"))
AmpActivation = _choice("AmpActivation", architecture.AMP_ACTIVATIONS)
MemberEncoding = _choice("MemberEncoding", architecture.MEMBER_ENCODINGS)
Generator = _choice("Generator", architecture.GENERATORS)
InputTransform = _choice("InputTransform", architecture.INPUT_TRANSFORMS)
ErSolver = _choice("ErSolver", architecture.ER_SOLVERS)
ModelType = _choice("ModelType", architecture.MODEL_TYPES)
Objective = _choice("Objective", objective.OBJECTIVES)
LrSchedule = _choice("LrSchedule", training.LR_SCHEDULES)
IterativeEngine = _choice("IterativeEngine", iterative_settings.ENGINES)
NoiseModel = _choice("NoiseModel", iterative_settings.NOISE_MODELS)
Interpolation = _choice("Interpolation", iterative_settings.INTERPOLATIONS)


# ---------------------------------------------------------------------------------------------
# Range rules a type cannot express: value → None (fine) or the rule it breaks.

Check = Callable[[Any], Optional[str]]


def _rule(ok: Callable[[Any], bool], rule: str) -> Check:
    return lambda value: None if ok(value) else rule


positive = _rule(lambda v: v > 0, "expected a positive number")  # also rejects NaN
positive_int = _rule(lambda v: isinstance(v, int) and v > 0, "expected a positive integer")
non_negative = _rule(lambda v: v >= 0, "expected 0 (all cores) or a positive count")
finite_non_negative = _rule(lambda v: math.isfinite(v) and v >= 0, "expected a finite number ≥ 0")
weight = _rule(lambda v: 0 <= v <= 1, "expected a weight in [0, 1]")
optional_count = _rule(lambda v: v is None or v >= 1, "expected a positive count or null")
non_empty = _rule(bool, "expected a name")


def _meta(default: Any = dataclasses.MISSING, help: str = "", check: Optional[Check] = None,
          factory: Any = dataclasses.MISSING) -> Any:
    """A field with help text (shown by --help) and an optional range rule (run by validate)."""
    metadata = {"help": help, "check": check}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def section_type(hint: Any) -> Optional[type]:
    """The dataclass a field holds (also inside Optional[...]), else None."""
    if dataclasses.is_dataclass(hint):
        return hint
    options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return options[0] if len(options) == 1 and dataclasses.is_dataclass(options[0]) else None


def choice_type(hint: Any) -> Optional[type[Choice]]:
    return hint if isinstance(hint, type) and issubclass(hint, Choice) else None


class _Section:
    """Python-side construction (tests, bundles' configs) gets the same choices as composition:
    plain strings become the field's Choice, a value outside it is a ConfigError."""
    PREFIX: ClassVar[str] = ""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            kind = choice_type(field_types(type(self)).get(f.name))
            value = getattr(self, f.name)
            if kind is None or isinstance(value, kind):
                continue
            try:
                setattr(self, f.name, kind(value))
            except ValueError:
                raise ConfigError(f"{self.PREFIX}{f.name}={value!r} is not allowed: expected one of "
                                  + ", ".join(kind.values())) from None


@dataclass
class JobConfig(_Section):
    PREFIX: ClassVar[str] = "job."
    name: str = _meta("train", "the job preset's name; also names the job's log file (<name>.log)")
    kind: JobKind = _meta(JobKind.train, "train: data → train → bundle → evaluate; prepare: only build the "
                                         "datasets; evaluate: score evaluate.bundle on the test split; "
                                         "iterative: reconstruct the test split with pty-chi (iterative.*) and "
                                         "score it the same way")


@dataclass
class BackendConfig(_Section):
    PREFIX: ClassVar[str] = "backend."
    name: BackendName = _meta(BackendName.tensorflow, "the framework that trains the network")
    threads: int = _meta(0, "CPU threads; 0 = one per core. Bitwise reproducibility needs a fixed count",
                         non_negative)
    compile: bool = _meta(True, "compiled training steps (tensorflow: tf.function, about 1.7x faster than "
                                "eager on CPU); pytorch runs eagerly and rejects true")


@dataclass
class DatasetConfig(_Section):
    PREFIX: ClassVar[str] = "dataset."
    name: str = _meta("fly64_synthetic", "the dataset preset's name")
    source: DatasetSource = _meta(DatasetSource.synthetic, "synthetic: simulate the study data; npz: your own "
                                                           "files (train_path, test_path)")
    object_kind: ObjectKind = _meta(ObjectKind.images, "synthetic object: images (camera amplitude, astronaut "
                                                       "phase) or random (a seeded texture)")
    object_size: int = _meta(660, "synthetic: object side in pixels", positive)
    scan_step: float = _meta(3.0, "synthetic fly scan: an exposure every scan_step px along x", positive)
    scan_row_spacing: float = _meta(4.8, "synthetic fly scan: rows this many px apart (default: 24,676 positions "
                                         "≈ 0.08·D apart)", positive)
    scan_jitter: float = _meta(0.5, "synthetic fly scan: Gaussian position jitter (std, px)",
                               _rule(lambda v: v >= 0, "expected a standard deviation ≥ 0 px"))
    extra_train_tiles: int = _meta(0, "synthetic: extra objects scanned for the training split only (scikit-image "
                                      "picture pairs for object_kind=images, up to 8; seeded random objects for "
                                      "random); the test split stays the same",
                                   _rule(lambda v: isinstance(v, int) and v >= 0, "expected a count ≥ 0"))
    probe_path: Optional[str] = _meta(None, "NPZ with probeGuess: replaces the synthetic probe")
    object_path: Optional[str] = _meta(None, "NPZ with objectGuess: replaces the synthetic object")
    train_path: Optional[str] = _meta(None, "npz: training data in the data contract")
    test_path: Optional[str] = _meta(None, "npz: test data in the data contract")
    cache_dir: str = _meta("outputs/cache", "content-addressed dataset cache, shared by parallel jobs")
    simulation_seed: int = _meta(study.SEEDS["simulation"], "seed of the simulated probe, object, scan and noise")
    grouping_seed: int = _meta(study.SEEDS["grouping"], "seed of the gridsize-2 neighbour groups")
    subsampling_seed: int = _meta(study.SEEDS["subsampling"], "seed of the dense/sparse views' subsampling")


@dataclass
class ModelConfig(_Section):
    PREFIX: ClassVar[str] = "model."
    N: int = _meta(64, "patch (diffraction pattern) size: 64 or 128",
                   _rule(lambda v: v in architecture.SUPPORTED_N,
                         "expected one of " + ", ".join(map(str, architecture.SUPPORTED_N))))
    gridsize: Optional[int] = _meta(None, "patterns per group side; null follows the view (baseline 1, dense and "
                                          "sparse 2); the grouped views also take a larger one (3: the seed and its "
                                          "8 nearest, with trainer.neighbor_count=9), whose groups determine more "
                                          "of the amplitude (docs/results.md)")
    n_filters_scale: int = _meta(2, "network width multiplier (2 = the reference's 2.3M parameters)", positive)
    generator: Generator = _meta(Generator.cnn, "the network from patterns to object patches: cnn (the reference's "
                                                "encoder-decoder), ffno (a factorised Fourier neural operator at "
                                                "N×N) or unet (a U-Net: skip connections at every scale); ffno and "
                                                "unet need pad_object=false; the physics and loss are shared")
    ffno_width: int = _meta(architecture.FFNO_WIDTH, "ffno: channels w of the operator (its MLPs use 2w)", positive_int)
    ffno_modes: Optional[int] = _meta(None, f"ffno: Fourier modes kept per axis, 1 to N/2; null = "
                                            f"min({architecture.FFNO_MAX_MODES}, N/4)",
                                      _rule(lambda v: v is None or (isinstance(v, int) and v >= 1),
                                            "expected a positive number of modes or null"))
    ffno_blocks: int = _meta(architecture.FFNO_BLOCKS, "ffno: blocks sharing the one spectral convolution",
                             positive_int)
    unet_width: int = _meta(architecture.UNET_WIDTH, f"unet: channels at full resolution (doubling at each of its "
                                                     f"{architecture.UNET_LEVELS} levels)", positive_int)
    input_transform: InputTransform = _meta(
        InputTransform.none, "what the generator sees of each pattern: none (the normalised amplitude, the reference) "
                             "or backprop (also the pattern carried back to the object plane by one error-reduction "
                             "step from a flat object with the model's probe; docs/results.md, 'The input transform') or er (the "
                             "same step for the whole group on its canvas: overlapping members' evidence averaged, "
                             "divided by the probe intensity)")
    er_iterations: int = _meta(1, "input_transform=er: error-reduction iterations of the group on its canvas from a "
                                  "flat object (1: the one step; more solve the group's phase problem further, "
                                  "forward only, at the cost of two FFTs per pattern per iteration)", positive_int)
    er_residual: bool = _meta(False, "input_transform=er: the heads correct the group's error-reduction estimate "
                                     "(amplitude 2·sigmoid(head)·|estimate|, phase head + its phase) instead of "
                                     "drawing the object from the decoder alone")
    er_solver: ErSolver = _meta(ErSolver.er, "input_transform=er: how the group's phase problem is iterated: er "
                                             "(error reduction: the members' corrections averaged) or raar (relaxed "
                                             "averaged alternating reflections: does not stall; on the dose-1e5 dense "
                                             "test groups 0.53 / 0.85 per-patch amplitude / phase after 100 iterations, "
                                             "er 0.33 / 0.70; docs/results.md)")
    er_tolerance: float = _meta(0.0, "input_transform=er with er_iterations > 1: the noise band of the group's "
                                     "modulus projection, in standard deviations of the counts' square root (1/2 "
                                     "√count each): the iterations keep each far-field modulus within the measured "
                                     "± that band instead of imposing the noise. 0: the exact projection (best at "
                                     "dose ≥ 1e4); 1 at dose 1e3, where the exact one fits the noise (docs/results.md)",
                                finite_non_negative)
    model_type: ModelType = _meta(ModelType.pinn, "pinn: trained through the physics (Poisson loss on the patterns); "
                                                  "supervised: the same generator trained on the true object patches "
                                                  "(MAE of the amplitude's texture, its per-patch level at weight "
                                                  f"{architecture.SUPERVISED_LEVEL_WEIGHT}, and the mean-free phase; "
                                                  "needs data with the true object)")
    amp_activation: AmpActivation = _meta(AmpActivation.sigmoid, "activation of the amplitude head")
    object_big: bool = _meta(True, "one object patch per group member (false: one per group)")
    probe_big: bool = _meta(True, "with pad_object: a border path writes the patch outside the central N/2")
    probe_mask: bool = _meta(False, "mask the network probe to r < N/4")
    pad_object: bool = _meta(True, "true: the object head writes the central N/2, zero-padded (the reference); "
                                   "false: one more decoder block, the head writes the whole N×N patch")
    probe_trainable: bool = _meta(False, "train the network probe")
    intensity_scale_trainable: bool = _meta(True, "train log_scale (starts at ln of the dose's intensity scale)")
    member_encoding: MemberEncoding = _meta(
        MemberEncoding.shared, "gridsize 2: shared runs every member through one single-pattern network; "
                               "stacked is the reference's network with the patterns as input channels (README)")
    object_amplitude: float = _meta(0.5, "the network probe is scaled so that an object of this uniform amplitude "
                                         "reproduces the data's mean intensity", positive)


@dataclass
class TrainerConfig(_Section):
    PREFIX: ClassVar[str] = "trainer."
    epochs: int = _meta(50, "maximum epochs", positive)
    batch_size: int = _meta(16, "groups per optimiser step", positive_int)
    learning_rate: float = _meta(1e-3, "Adam's initial learning rate", positive)
    nll_weight: float = _meta(1.0, "weight of the Poisson negative log-likelihood in the loss", weight)
    mae_weight: float = _meta(0.0, "weight of the amplitude mean absolute error in the loss", weight)
    validation_fraction: float = _meta(0.05, "share of the groups held out to monitor the learning rate",
                                       _rule(lambda v: 0 <= v < 0.5, "expected a fraction in [0, 0.5)"))
    lr_schedule: LrSchedule = _meta(LrSchedule.plateau, "plateau: halve the rate when the validation loss stalls "
                                                        "(the reference); cosine: warm up over warmup_steps, then a "
                                                        "half cosine from learning_rate to min_lr over the step "
                                                        "budget (max_steps, or epochs × batches)")
    warmup_steps: int = _meta(0, "lr_schedule=cosine: steps of linear warm-up from 0 to learning_rate",
                              _rule(lambda v: isinstance(v, int) and v >= 0, "expected a whole number of steps ≥ 0"))
    lr_plateau_factor: float = _meta(0.5, "learning-rate factor after a plateau",
                                     _rule(lambda v: 0 < v < 1, "expected a factor in (0, 1)"))
    lr_plateau_patience: int = _meta(2, "epochs without validation improvement before the rate drops")
    min_lr: float = _meta(1e-4, "the learning rate's floor")
    early_stopping_patience: int = _meta(3, "epochs without training-loss improvement before stopping")
    n_groups: Optional[int] = _meta(None, "cap on training groups; null = every group the view provides",
                                    optional_count)
    max_steps: Optional[int] = _meta(None, "stop after this many optimiser steps (mid-epoch if need be; with epochs "
                                           "as the other bound); null = epochs alone", optional_count)
    neighbor_count: int = _meta(study.NEIGHBOR_COUNT, "K nearest neighbours a group (gridsize ≥ 2) is drawn from")
    enable_oversampling: bool = _meta(False, "allow more groups than positions (groups drawn with repeats)")
    checkpoint_every_epoch: bool = _meta(True, "checkpoint every epoch; a killed job continues from it")


@dataclass
class EvaluateConfig(_Section):
    PREFIX: ClassVar[str] = "evaluate."
    enabled: bool = _meta(True, "evaluate on the test split after training")
    bundle: Optional[str] = _meta(None, "job=evaluate: the wts.h5.zip to score")
    batch_size: int = _meta(64, "groups per forward pass when evaluating", positive)
    illumination_threshold: float = _meta(
        0.1, "score only pixels whose summed test-scan probe intensity is at least this fraction of its maximum",
        _rule(lambda v: 0 < v < 1, "expected a fraction of the peak illumination in (0, 1)"))
    max_shift_px: float = _meta(2.0, "registration searches shifts of at most this many px; 0 = no registration",
                                _rule(lambda v: v >= 0, "expected a number of pixels ≥ 0"))
    every_epochs: int = _meta(0, "also score the test view after every k-th epoch (and the last); the scores join "
                                 "history.csv as a quality learning curve; 0 = only after training",
                              _rule(lambda v: isinstance(v, int) and v >= 0, "expected a whole number of epochs ≥ 0"))
    every_steps: int = _meta(0, "learning curves: every k optimiser steps (and at 0 and the end) the per-patch amplitude "
                                "and phase correlation on fixed subsets of test and training patterns, the loss and the "
                                "time go to curves.csv and the trackers; 0 = off",
                             _rule(lambda v: isinstance(v, int) and v >= 0, "expected a whole number of steps ≥ 0"))
    curve_patterns: int = _meta(512, "learning curves: patterns of each split scored (the same ones at every point, "
                                     "drawn with dataset.grouping_seed)", positive_int)


@dataclass
class IterativeConfig(_Section):
    """job=iterative: the conventional reconstruction of the view's test split (pty-chi), the study's peer."""
    PREFIX: ClassVar[str] = "iterative."
    engine: IterativeEngine = _meta(IterativeEngine.lsqml, "pty-chi's engine: lsqml, least-squares maximum "
                                                           "likelihood (the original study's iterative peer)")
    epochs: int = _meta(100, "iterations over every pattern of the test split", positive_int)
    batch_size: int = _meta(100, "patterns per update", positive_int)
    noise_model: NoiseModel = _meta(NoiseModel.gaussian, "the likelihood LSQML maximises: gaussian (on "
                                                         "amplitudes) or poisson (on counts)")
    interpolation: Interpolation = _meta(Interpolation.fourier, "how a patch is cut at a sub-pixel position: "
                                                                "fourier (pty-chi's default) or bilinear (as the "
                                                                "study data were simulated; 3x slower, scored the same)")
    refine_probe: bool = _meta(False, "also refine the probe (it starts from the data's probe either way)")
    refine_positions: bool = _meta(False, "also refine the scan positions (they start from the data's)")
    threads: int = _meta(0, "CPU threads; 0 = one per core", non_negative)


@dataclass
class CsvLoggerConfig:
    filename: str = _meta("history.csv", "one row per epoch, in the run directory")


@dataclass
class TensorBoardLoggerConfig:
    log_dir: str = _meta("tensorboard", "event files, inside the run directory")


@dataclass
class MlflowLoggerConfig:
    tracking_uri: str = _meta("sqlite:///outputs/mlflow.db", "any MLflow tracking URI (http://host:5000, ...); "
                                                               "default: a local SQLite store under outputs/")
    artifact_location: str = _meta("outputs/mlartifacts", "where a new experiment keeps its artifacts")
    experiment_name: str = _meta("fly64", "the MLflow experiment", non_empty)
    log_bundle: bool = _meta(True, "the bundle (wts.h5.zip) as an artifact")


@dataclass
class LoggerConfig:
    """The training loggers of a job: the `logger` group, several at once (logger=[csv,mlflow])."""
    csv: Optional[CsvLoggerConfig] = _meta(None, "logger=csv: history.csv (the default)")
    tensorboard: Optional[TensorBoardLoggerConfig] = _meta(None, "logger=tensorboard: event files")
    mlflow: Optional[MlflowLoggerConfig] = _meta(None, "logger=mlflow: one MLflow run per job")

    def selected(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


@dataclass
class TrainingConfig(_Section):
    job: JobConfig = _meta(help="what the job does", factory=JobConfig)
    backend: BackendConfig = _meta(help="the framework", factory=BackendConfig)
    dataset: DatasetConfig = _meta(help="where the data comes from", factory=DatasetConfig)
    model: ModelConfig = _meta(help="the network", factory=ModelConfig)
    trainer: TrainerConfig = _meta(help="the training loop", factory=TrainerConfig)
    evaluate: EvaluateConfig = _meta(help="scoring on the test split", factory=EvaluateConfig)
    iterative: IterativeConfig = _meta(help="job=iterative: pty-chi's reconstruction of the test split",
                                       factory=IterativeConfig)
    logger: LoggerConfig = _meta(help="training loggers (group logger: csv, tensorboard, mlflow)",
                                 factory=LoggerConfig)
    objective: Objective = _meta(Objective.val_loss, "what the job returns to a sweeper (its direction follows)")
    dose: float = _meta(1000.0, "photons per pattern (expected total counts): 1e3, 1e4, 1e5 in the study", positive)
    view: View = _meta(View.dense, "the study view: baseline (gridsize 1, every position), dense (gridsize 2, "
                                   "70 % overlap), sparse (gridsize 2, 20 % overlap)")
    seed: int = _meta(42, "initial weights, validation split and batch order")
    deterministic: bool = _meta(False, "deterministic ops: the same config gives the same bundle bytes")
    dry_run: bool = _meta(False, "plan only: datasets, gridsize, legacy params, output directory")
    force: bool = _meta(False, "redo a job whose verified bundle is already present")

    @property
    def gridsize(self) -> int:
        return study.gridsize_for(self.view) if self.model.gridsize is None else self.model.gridsize


# ---------------------------------------------------------------------------------------------
# Validation

def _fail(name: str, value: Any, rule: str) -> None:
    raise ConfigError(f"{name}={value!r} is not allowed: {rule}")


def _check_fields(section: Any, prefix: str = "") -> None:
    """Every field's own `check` (metadata), depth first."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _check_fields(value, f"{prefix}{f.name}.")
            continue
        check = f.metadata.get("check")
        rule = check(value) if check is not None else None
        if rule is not None:
            _fail(prefix + f.name, value, rule)


def validate(config: TrainingConfig) -> TrainingConfig:
    """Check every field's range rule and the rules that span fields; return the config with
    gridsize resolved."""
    _check_fields(config)
    if objective.needs_evaluation(config.objective) and not config.evaluate.enabled \
            and config.job.kind == JobKind.train:
        _fail("objective", config.objective, "a test metric needs evaluate.enabled=true")
    source = sources.get_source(config.dataset.source)
    for key in source.required:
        if not getattr(config.dataset, key):
            _fail(f"dataset.{key}", None, f"dataset={source.name} needs "
                  + " and ".join(f"dataset.{name}" for name in source.required))
    dataset = config.dataset
    if dataset.extra_train_tiles:
        if dataset.source != DatasetSource.synthetic:
            _fail("dataset.extra_train_tiles", dataset.extra_train_tiles, "extra training tiles are simulated: "
                  "they need dataset.source=synthetic")
        if dataset.object_path:
            _fail("dataset.extra_train_tiles", dataset.extra_train_tiles, "extra tiles sit beside the synthetic "
                  "object: they cannot extend dataset.object_path")
        if dataset.object_kind == ObjectKind.images and dataset.extra_train_tiles > len(study.TILE_PICTURES):
            _fail("dataset.extra_train_tiles", dataset.extra_train_tiles,
                  f"object_kind=images has {len(study.TILE_PICTURES)} picture pairs (random has no limit)")
    gridsize = view_gridsize = study.gridsize_for(config.view)
    model = config.model
    if model.gridsize is not None and model.gridsize != view_gridsize:
        if view_gridsize == 1:
            _fail("model.gridsize", model.gridsize, f"view={config.view} requires gridsize 1")
        if model.gridsize < view_gridsize:
            _fail("model.gridsize", model.gridsize, f"view={config.view} requires gridsize {view_gridsize} or larger "
                                                    f"(a group of its nearest patterns)")
        gridsize = model.gridsize  # a grouped view with larger groups
    if model.member_encoding == MemberEncoding.shared and not model.object_big and gridsize > 1:
        _fail("model.object_big", False, "member_encoding=shared gives every member its own patch: "
                                         "needs object_big=true (or member_encoding=stacked)")
    if model.model_type == ModelType.supervised and not model.object_big and gridsize > 1:
        _fail("model.object_big", False, "model_type=supervised compares every member's patch with its truth: "
                                         "needs object_big=true")
    if model.generator != Generator.cnn:
        if model.pad_object:
            _fail("model.pad_object", True, f"the {model.generator} generator writes the whole N×N patch: "
                                            "set model.pad_object=false (true is the cnn's padded head)")
        if model.ffno_modes is not None and model.ffno_modes > model.N // 2:
            _fail("model.ffno_modes", model.ffno_modes, f"expected 1 to N/2 = {model.N // 2} Fourier modes")
    if model.er_solver != ErSolver.er and model.input_transform != InputTransform.er:
        _fail("model.er_solver", model.er_solver.value, "a solver of the group's phase problem needs "
                                                        "model.input_transform=er")
    if model.er_tolerance and (model.input_transform != InputTransform.er or model.er_iterations < 2):
        _fail("model.er_tolerance", model.er_tolerance, "a noise band widens the modulus projection of the group's "
                                                        "iterations: needs model.input_transform=er and "
                                                        "model.er_iterations > 1")
    if model.er_iterations > 1 and model.input_transform != InputTransform.er:
        _fail("model.er_iterations", model.er_iterations, "iterations of the group's error reduction need "
                                                          "model.input_transform=er")
    if model.er_residual and (model.input_transform != InputTransform.er or model.amp_activation != AmpActivation.sigmoid
                              or not model.object_big):
        _fail("model.er_residual", True, "correcting each member's error-reduction estimate needs "
                                         "model.input_transform=er, model.amp_activation=sigmoid, model.object_big=true")
    trainer = config.trainer
    if trainer.nll_weight == 0 and trainer.mae_weight == 0:
        _fail("trainer.nll_weight", 0.0, "nll_weight and mae_weight cannot both be 0")
    if trainer.warmup_steps and trainer.lr_schedule != LrSchedule.cosine:
        _fail("trainer.warmup_steps", trainer.warmup_steps, "a warm-up belongs to trainer.lr_schedule=cosine")
    if trainer.lr_schedule == LrSchedule.cosine and trainer.min_lr >= trainer.learning_rate:
        _fail("trainer.min_lr", trainer.min_lr, "cosine decays from trainer.learning_rate to min_lr: expected "
                                                "min_lr < learning_rate")
    members = gridsize * gridsize
    if gridsize > 1 and trainer.neighbor_count < members:
        _fail("trainer.neighbor_count", trainer.neighbor_count,
              f"gridsize {gridsize} groups need at least C = gridsize² = {members} neighbours")
    if config.job.kind == JobKind.evaluate and not config.evaluate.bundle:
        _fail("evaluate.bundle", None, "job=evaluate needs evaluate.bundle=<path to wts.h5.zip>")
    if config.backend.compile and not registry.entry(config.backend.name).compiles:
        _fail("backend.compile", True, f"the {config.backend.name} backend runs eagerly; set backend.compile=false")
    return dataclasses.replace(config, model=dataclasses.replace(model, gridsize=gridsize))


# ---------------------------------------------------------------------------------------------
# Plain dicts (manifests, bundles)

def plain(value: Any) -> Any:
    """A config value (or dict of them) with every Choice as its string."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value.value if isinstance(value, enum.Enum) else value


def to_dict(config: TrainingConfig) -> dict:
    """Plain JSON-able dict of the config (what manifests record; choices as their strings)."""
    return plain(dataclasses.asdict(config))


def from_dict(data: dict) -> TrainingConfig:
    """Rebuild a TrainingConfig from `to_dict` output (e.g. a bundle's manifest); unknown keys (from
    other versions) are dropped, missing ones take their defaults."""
    def build(cls: type, values: dict) -> Any:
        hints = field_types(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in values:
                continue
            value = values[f.name]
            nested = section_type(hints.get(f.name))
            kwargs[f.name] = build(nested, value) if nested is not None and isinstance(value, dict) else value
        return cls(**kwargs)

    return build(TrainingConfig, data)
