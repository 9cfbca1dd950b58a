"""run_job: one study job from a resolved TrainingConfig and a run directory. No Hydra here.

Flow: validate the config and bridge it into the legacy params → (dry run: record the plan) →
the job kind's function from `JOBS` (train: training loggers → datasets from the store → groups →
backend build → shared training loop → bundle → evaluation; prepare; evaluate; iterative: pty-chi on
the test split, iterative/job.py) → manifest.
Every job leaves a training_manifest.json whose status says what happened (running, planned,
success, skipped, failed); a failure records the stage and the error, then re-raises.
A finished job's record holds its objective (objective.describe), what the CLI returns to a sweeper.
What a job reports (the plan, the results) goes through `logging`, so it reaches the terminal and
the job's log file alike (the handlers: conf/hydra/job_logging/fly64.yaml).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from fly64_train import architecture, files, legacy, manifest, objective, physics, study
from fly64_train.bundle import BUNDLE_NAME
from fly64_train.config import TrainingConfig, from_dict, to_dict, validate
from fly64_train.logs import FILE_ONLY
from fly64_train.specs import loop_settings, spec_from_bundle, spec_from_config

log = logging.getLogger(__name__)
# Fields that do not change what a job produces (so a resumed sweep may reuse its bundle).
_NON_RESULT_FIELDS = ("dry_run", "force", "logger", "objective")
_LOCATION_KEYS = ("output_prefix", "train_data_file_path", "test_data_file_path")


class JobFailed(RuntimeError):
    """A stage of the job failed; the manifest holds `<Stage> failed: Type: message`."""


# What an iterative job's result depends on (it trains nothing: no backend, model or trainer but N).
_ITERATIVE_RESULT_FIELDS = ("job", "dataset", "evaluate", "iterative", "dose", "view", "seed", "deterministic")


def result_config(config: TrainingConfig) -> dict:
    """The config without the fields that do not change what the job produces."""
    payload = to_dict(config)
    for key in _NON_RESULT_FIELDS:
        payload.pop(key, None)
    payload["evaluate"].pop("bundle", None)
    if config.job.kind == "iterative":
        payload = {key: payload[key] for key in _ITERATIVE_RESULT_FIELDS} | {"model": {"N": config.model.N}}
    else:
        payload.pop("iterative", None)  # a training job's result does not depend on the iterative peer's settings
    return payload


def fingerprint(config: TrainingConfig) -> str:
    return study.config_fingerprint(result_config(config))


@dataclass
class Job:
    """What every job kind works with: the validated config, the legacy params dict (written for the
    record), the run directory and the manifest record it fills in."""
    config: TrainingConfig
    params: dict
    run_dir: Path
    record: dict


class _Stage:
    """Context manager naming the stage that failed in the manifest's error."""

    def __init__(self, record: dict, name: str):
        self.record, self.name = record, name

    def __enter__(self):
        self.record["stage"] = self.name
        log.info("%s ...", self.name)
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and "error" not in self.record:
            self.record["error"] = f"{self.name} failed: {exc_type.__name__}: {exc}"
        return False


def run_job(config: TrainingConfig, run_dir: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Run one job into `run_dir`; return its manifest record (also written to disk)."""
    run_dir = Path(run_dir)
    with files.storage_errors(run_dir):
        files.make_dirs(run_dir)
    started = time.time()
    record: dict[str, Any] = {
        "job": config.job.name, "kind": config.job.kind, "dose": config.dose, "view": config.view,
        "method": study.method(config.job.kind, config.model.model_type, config.iterative.engine),
        "gridsize": None, "backend": None if config.job.kind == "iterative" else config.backend.name,
        "model_type": config.model.model_type,
        "generator": None if config.job.kind == "iterative" else config.model.generator,
        "dry_run": config.dry_run,
        "status": "running", "started_at": manifest.utc_now(), "overrides": list(overrides),
        "run_dir": str(run_dir), "versions": manifest.runtime_versions(),
    }
    manifest_path = run_dir / manifest.TRAINING_MANIFEST
    previous = _read_previous(manifest_path)
    try:
        with _Stage(record, "Configuration"):
            config = validate(config)
            record["gridsize"] = None if config.job.kind == "iterative" else config.gridsize  # the view's test split
            record["config_fingerprint"] = fingerprint(config)
            params = legacy.update_legacy_dict(legacy.new_params(), config, output_dir=str(run_dir))
            files.write_json(run_dir / "resolved_config.json", to_dict(config))
        reused = _reusable(previous, record, run_dir, config)
        if reused is not None:
            return reused
        files.write_json(manifest_path, record)
        job = Job(config, params, run_dir, record)
        (_dry_run if config.dry_run else JOBS[str(config.job.kind)])(job)
    except BaseException as exc:
        record.setdefault("error", f"{record.get('stage', 'Job')} failed: {type(exc).__name__}: {exc}")
        record["status"] = "failed"
        _record_failure(record, started, manifest_path)
        raise
    _finish(record, started, manifest_path)
    return record


def _succeed(record: dict, config: TrainingConfig) -> None:
    record.pop("stage", None)
    record["status"] = "success"
    _set_objective(record, config.objective)


def _set_objective(record: dict, name: str) -> None:
    record["objective"] = objective.describe(record, name)
    if record["objective"]["value"] is None:
        log.warning("objective %s is not available for this job (a sweeper gets None)", name)


def _finish(record: dict, started: float, path: Path) -> None:
    record["finished_at"] = manifest.utc_now()
    record["wall_time_s"] = round(time.time() - started, 3)
    files.write_json(path, record)


def _record_failure(record: dict, started: float, path: Path) -> None:
    """Write the failed manifest. When that fails too (the disk that failed the job is full), the
    job's own error is what the user sees; the manifest left says `running`, never `success`."""
    try:
        _finish(record, started, path)
    except OSError as exc:
        log.warning("%s not updated: %s", path, exc, extra=FILE_ONLY)


def _read_previous(path: Path) -> Optional[dict]:
    try:
        return files.read_json(path)
    except (FileNotFoundError, ValueError):
        return None


def _reusable(previous: Optional[dict], record: dict, run_dir: Path, config: TrainingConfig) -> Optional[dict]:
    """A finished job with the same fingerprint whose bundle verifies is reused, not redone."""
    if (config.force or config.dry_run or config.job.kind not in ("train", "iterative") or previous is None
            or previous.get("status") not in ("success", "skipped")
            or previous.get("config_fingerprint") != record["config_fingerprint"]):
        return None
    from fly64_train import bundle, evaluation

    if config.job.kind == "iterative":  # the reconstruction is its result
        path, reason = run_dir / evaluation.RECONSTRUCTION_NAME, "reconstruction present, verified and made from the same config"
        try:
            same = files.sha256_file(path) == previous.get("reconstruction_sha256")
        except OSError:
            same = False
        if not same:
            log.warning("redoing the job: its previous %s is missing or differs from its record", path.name)
            return None
    else:
        reason = "bundle present, verified and made from the same config"
        try:
            bundle.verify_against_manifest(run_dir / BUNDLE_NAME, previous)
        except (ValueError, OSError) as exc:
            log.warning("redoing the job: its previous bundle does not verify (%s)", exc)
            return None
    reused = dict(previous)
    reused.update(status="skipped", skip_reason=reason, reused_at=manifest.utc_now(), overrides=record["overrides"])
    _set_objective(reused, config.objective)
    files.write_json(run_dir / manifest.TRAINING_MANIFEST, reused)
    log.info("skipping: %s", reused["skip_reason"])
    return reused


def _dry_run(job: Job) -> None:
    """dry_run=true (any job kind): record the plan, build and train nothing."""
    from fly64_train.data import store

    config, params, run_dir, record = job.config, job.params, job.run_dir, job.record
    with _Stage(record, "Planning"):
        plan = {"datasets": store.planned_paths(config), "gridsize": config.gridsize,
                "run_dir": str(run_dir), "bundle": str(run_dir / BUNDLE_NAME), "backend": config.backend.name,
                "kind": config.job.kind}
        files.write_json(run_dir / "legacy_params.json", params)
        files.write_json(run_dir / "plan.json", plan)
    record.update(status="planned", plan=plan)
    log.info("[dry run] %s  gridsize=%s  backend=%s  kind=%s", study.job_name(config.dose, config.view),
             config.gridsize, config.backend.name, config.job.kind)
    for key, value in plan["datasets"].items():
        log.info("  dataset %s: %s", key, value)
    log.info("  legacy params: %s", run_dir / "legacy_params.json")
    log.info("  output: %s", run_dir)


def _prepare(job: Job) -> None:
    """job=prepare: build (or find) the dose's data and report the views' geometry."""
    from fly64_train.data import store

    config, record = job.config, job.record
    with _Stage(record, "Data preparation"):
        paths = store.prepare_dose(config)
        geometry = store.view_geometry(config, paths)
    record.update(status="success", datasets=paths)
    if geometry:
        record["view_geometry"] = geometry
        log.info("dose %s, N = %s: views on the probe footprint", study.format_number(config.dose), paths["N"])
        for view, splits in geometry.items():
            for split, g in splits.items():
                log.info("  %-6s %-5s  D = %.1f px  S = %.1f px  %5d of %d positions  nearest-neighbour overlap %.3f",
                         view, split, g["probe_diameter_px"], g["spacing_threshold_px"], g["n_accepted"],
                         g["n_candidates"], g["nearest_overlap_fraction"])
    for key, value in _flatten(paths):
        log.info("%s: %s", key, value)


def _flatten(tree: dict, prefix: str = ""):
    """('phase_d.dense.train', path) pairs of a nested dict, one printable line each."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def _load_splits(config: TrainingConfig, record: dict):
    from fly64_train.data import contract, store

    with _Stage(record, "Data preparation"):
        train_path, test_path = store.dataset_paths(config)
        record.update(train_data_path=str(train_path), test_data_path=str(test_path))
        train, test = contract.load_dataset(train_path), contract.load_dataset(test_path)
        # The probe's footprint D (disc holding 90 % of |P|²): what the views' spacing is tied to.
        record["probe_diameter_px"] = physics.footprint_diameter(train.probe)
        return train, test


def _inputs(config: TrainingConfig, data, n_groups: Optional[int], norm: Optional[float] = None):
    from fly64_train.inputs import model_inputs

    if n_groups is not None and n_groups > data.n and not config.trainer.enable_oversampling:
        # trainer.n_groups is a cap: a view with fewer positions trains on all it provides.
        log.info("trainer.n_groups=%d caps the groups; this view provides %d", n_groups, data.n)
        n_groups = data.n
    return model_inputs(data, config.gridsize, config.trainer.neighbor_count, config.dataset.grouping_seed,
                        n_groups=n_groups, enable_oversampling=config.trainer.enable_oversampling, norm=norm)


def _backend(config: TrainingConfig, record: dict):
    from fly64_train.backends.registry import get_backend

    backend = get_backend(config.backend.name)
    backend.configure(config.backend.threads, config.deterministic, config.seed)
    record["versions"].update(backend.versions())
    return backend


def _train(job: Job) -> None:
    """job=train (also smoke, study): the training loggers around the training stages."""
    from fly64_train import tracking

    config, run_dir, record = job.config, job.run_dir, job.record
    with _Stage(record, "Loggers"):
        loggers = tracking.create_loggers(config.logger, run_dir)
        tags = {"job": study.job_name(config.dose, config.view), "dose": study.format_number(config.dose),
                "view": str(config.view), "gridsize": str(config.gridsize), "backend": str(config.backend.name),
                "job_kind": str(config.job.kind), "run_dir": str(run_dir)}
        tracking.start(loggers, to_dict(config), tags, record["config_fingerprint"])
    try:
        _train_stages(job, loggers)
    except BaseException as exc:
        record.setdefault("error", f"{record.get('stage', 'Job')} failed: {type(exc).__name__}: {exc}")
        tracking.finish(loggers, dict(record, status="failed"), run_dir)
        raise
    tracking.finish(loggers, record, run_dir)


def _train_stages(job: Job, loggers) -> None:
    """Data → groups → model → training → bundle → evaluation, each stage named in the record."""
    from fly64_train import training

    config = job.config
    train_data, test_data = _load_splits(config, job.record)
    train_inputs, test_inputs, padded = _group(job, train_data, test_data)
    model, spec = _build_model(job, train_data.probe, padded)
    result, epoch_scores = _fit(job, model, train_data, train_inputs, test_inputs, test_data, loggers)
    _write_model_bundle(job, model, spec, train_inputs.norm)
    if test_inputs is not None:
        with _Stage(job.record, "Evaluation"):
            last = epoch_scores.last if epoch_scores is not None else None
            # the last epoch's scoring is of these very weights: write it instead of redoing it
            done = last[1] if last is not None and last[0] == result.epochs_completed else None
            seconds = epoch_scores.last_predict_seconds if done is not None else None
            job.record["metrics"] = _score(model, test_inputs, test_data, config, job.run_dir, job.record, done,
                                           seconds)
    (job.run_dir / training.CHECKPOINT_NAME).unlink(missing_ok=True)
    _succeed(job.record, config)
    log.info("%s (%s, gridsize %d): %d epochs, loss %.5g → %s", study.job_name(config.dose, config.view),
             config.backend.name, config.gridsize, result.epochs_completed, result.final_loss,
             job.run_dir / BUNDLE_NAME)


def _group(job: Job, train_data, test_data):
    """(train inputs, test inputs or None without evaluation, canvas size); the legacy params get both."""
    config, record = job.config, job.record
    with _Stage(record, "Grouping"):
        train_inputs = _inputs(config, train_data, config.trainer.n_groups)
        # the test split is normalised with the training split's factor: same counts, same input
        test_inputs = _inputs(config, test_data, None, train_inputs.norm) if config.evaluate.enabled else None
        offsets = [train_inputs.rel] + ([test_inputs.rel] if test_inputs is not None else [])
        padded = architecture.padded_size_for(config.model.N, np.concatenate([o.reshape(-1, 2) for o in offsets]))
        legacy.set_runtime(job.params, padded_size=padded, diffraction_norm=train_inputs.norm)
        files.write_json(job.run_dir / "legacy_params.json", job.params)
        record["train_groups"] = train_inputs.n_groups
        record["train_positions"] = int(np.unique(train_inputs.groups.indices).size)  # distinct patterns seen
    return train_inputs, test_inputs, padded


def _build_model(job: Job, data_probe: np.ndarray, padded: int):
    config = job.config
    with _Stage(job.record, "Model build"):
        probe = architecture.model_probe(data_probe, config.model.N, config.model.object_amplitude,
                                         config.model.probe_mask)
        spec = spec_from_config(config, padded, probe)
        return _backend(config, job.record).build(spec), spec


def _fit(job: Job, model, train_data, train_inputs, test_inputs, test_data, loggers):
    """(training.TrainResult, the EpochScores callback or None); the loggers see every epoch."""
    from fly64_train import training

    config, record = job.config, job.record
    with _Stage(record, "Training"):
        callbacks, epoch_scores = list(loggers), None
        if test_inputs is not None and config.evaluate.every_epochs:
            # first, so the loggers see the epoch's test scores in its row
            epoch_scores = _epoch_scores(config, model, test_inputs, test_data)
            callbacks.insert(0, epoch_scores)
        if config.evaluate.every_steps:
            callbacks.append(_step_curves(config, model, job.run_dir, loggers, train_inputs, train_data,
                                          test_inputs, test_data))
            record["curves"] = "curves.csv"
        targets = true_patches(train_data, train_inputs) if config.model.model_type == "supervised" else None
        result = training.run_training(model, train_inputs.x, train_inputs.rel, loop_settings(config), job.run_dir,
                                       fingerprint=record["config_fingerprint"], callbacks=callbacks,
                                       targets=targets)
        last = result.history[-1] if result.history else {}
        record.update(final_loss=result.final_loss, val_loss=last.get("val_loss"),
                      epochs_completed=result.epochs_completed,
                      optimiser_steps=result.steps,
                      stopped_early=result.stopped_early, resumed_from_epoch=result.resumed_from_epoch,
                      validation_groups=result.validation_groups, training_time_s=round(result.seconds, 3))
    return result, epoch_scores


def _write_model_bundle(job: Job, model, spec, diffraction_norm: float) -> None:
    from fly64_train import bundle

    config, record = job.config, job.record
    with _Stage(record, "Bundle"):
        # Where the run happened is not part of the model: same config → same bundle bytes.
        portable = {k: v for k, v in job.params.items() if k not in _LOCATION_KEYS}
        content = {"backend": config.backend.name, "model_type": config.model.model_type,
                   "generator": config.model.generator, "versions": record["versions"], "legacy_params": portable,
                   "config": result_config(config), "geometry": spec.geometry.to_dict(),
                   "intensity_scale": spec.intensity_scale, "diffraction_norm": float(diffraction_norm),
                   "config_fingerprint": record["config_fingerprint"]}
        info = bundle.write_bundle(job.run_dir / BUNDLE_NAME, model.get_weights(), content)
        record.update(bundle_path=BUNDLE_NAME, bundle_sha256=info.sha256, bundle_size_bytes=info.size_bytes)


def _iterative(job: Job) -> None:
    """job=iterative: pty-chi reconstructs the view's test split (iterative/job.py); the loggers get its
    epochs."""
    from fly64_train import tracking
    from fly64_train.iterative import job as iterative_job

    config, run_dir, record = job.config, job.run_dir, job.record
    with _Stage(record, "Loggers"):
        loggers = tracking.create_loggers(config.logger, run_dir)
        tags = {"job": study.job_name(config.dose, config.view), "dose": study.format_number(config.dose),
                "view": str(config.view), "method": record["method"], "job_kind": str(config.job.kind),
                "run_dir": str(run_dir)}
        tracking.start(loggers, to_dict(config), tags, record["config_fingerprint"])
    try:
        iterative_job.run(config, run_dir, record, _Stage, loggers)
    except BaseException as exc:
        record.setdefault("error", f"{record.get('stage', 'Job')} failed: {type(exc).__name__}: {exc}")
        tracking.finish(loggers, dict(record, status="failed"), run_dir)
        raise
    _succeed(record, config)
    tracking.finish(loggers, record, run_dir)


def true_patches(data, inputs):
    """model_type=supervised: group indices → the members' true object patches (B, C, N, N) complex64,
    cut from the dataset's object (objectGuess) at the members' positions when a batch asks for them."""
    obj = np.asarray(data.obj)
    if obj.size == 0 or np.ptp(np.abs(obj)) == 0 and np.ptp(np.angle(obj)) == 0:
        raise ValueError(f"model_type=supervised trains on the true object, but objectGuess of {data.path or 'the data'} "
                         "is constant (a placeholder, not a truth); use data that carries the object or model_type=pinn")
    N = inputs.x.shape[1]

    def targets(batch: np.ndarray) -> np.ndarray:
        xy = inputs.positions[batch].reshape(-1, 2)
        patches = physics.extract_patches(obj, xy[:, 0], xy[:, 1], N)
        return patches.reshape(len(batch), -1, N, N).astype(np.complex64)

    return targets


def _step_curves(config: TrainingConfig, model, run_dir: Path, loggers, train_inputs, train_data,
                 test_inputs, test_data):
    """evaluate.every_steps: the learning-curve callback on fixed subsets of both splits (test: when evaluated),
    and, with extra training tiles, of the training groups on the study object."""
    from fly64_train.step_curves import StepCurves, curve_subset

    ev, seed = config.evaluate, config.dataset.grouping_seed
    subsets = {"train": curve_subset(train_inputs, train_data.obj, ev.curve_patterns, seed)}
    tiles = train_data.metadata.get("extra_train_tiles")
    if tiles:  # the training groups on the study object: left of the first tile (no group spans two)
        on_study = np.all(train_inputs.positions[..., 0] < tiles["tiles"][0]["columns"][0], axis=1)
        subsets["train_study"] = curve_subset(train_inputs, train_data.obj, ev.curve_patterns, seed,
                                              groups=np.flatnonzero(on_study))
    if test_inputs is not None:
        subsets["test"] = curve_subset(test_inputs, test_data.obj, ev.curve_patterns, seed)
    return StepCurves(model, subsets, ev.every_steps, run_dir, trackers=loggers, batch_size=ev.batch_size)


def _epoch_scores(config: TrainingConfig, model, inputs, data):
    from fly64_train.epoch_scores import EpochScores

    ev = config.evaluate
    return EpochScores(model, inputs, data, ev.every_epochs, config.trainer.epochs, batch_size=ev.batch_size,
                       illumination_threshold=ev.illumination_threshold, max_shift_px=ev.max_shift_px)


def _score(model, inputs, data, config: TrainingConfig, run_dir: Path, record: dict, scored=None,
           seconds: Optional[float] = None) -> dict:
    """Score the test view and write its files; `scored` (evaluation.Scored of the same weights, predicted
    in `seconds`) is written as is. The record gets the network's inference time on the split."""
    from fly64_train import evaluation

    if scored is None:
        patches, seconds = evaluation.timed_predict(model, inputs.x, inputs.rel, config.evaluate.batch_size)
        scored = evaluation.score_predictions(
            patches, inputs.positions, data.obj, probe=data.probe,
            illumination_threshold=config.evaluate.illumination_threshold, max_shift_px=config.evaluate.max_shift_px)
    metrics = evaluation.write_evaluation(run_dir, scored)
    # The same columns as an iterative job's: the time to reconstruct the split from its patterns
    # (here the network's inference over every test group; stitching and scoring excluded).
    record.update(test_patterns=data.n, reconstruction_time_s=round(seconds, 3),
                  reconstruction_patterns_per_s=data.n / seconds if seconds > 0 else None,
                  reconstruction_includes="the trained network's inference over the test groups (stitching excluded)")
    log.info("test metrics (lit region, %d px): amplitude SSIM %.4f, phase SSIM %.4f (original convention "
             "%.4f); per-patch correlation amplitude %.3f, phase %.3f", metrics["region"]["scored_pixels"],
             metrics["amplitude"]["ssim"], metrics["phase"]["ssim"], metrics["phase"]["ssim_original"],
             metrics["patchwise"]["amplitude_correlation"], metrics["patchwise"]["phase_correlation"])
    collapsed = evaluation.collapse_warning(metrics["patchwise"])
    if collapsed:
        log.warning(collapsed)
    return metrics


def _evaluate_bundle(job: Job) -> None:
    """job=evaluate: load a bundle (from either backend) into config.backend and score it."""
    from fly64_train import bundle

    config, run_dir, record = job.config, job.run_dir, job.record
    bundle_path = Path(config.evaluate.bundle)
    with _Stage(record, "Bundle loading"):
        expected = _read_previous(bundle_path.parent / manifest.TRAINING_MANIFEST) or {}
        weights, content = bundle.read_bundle(bundle_path, expected.get("bundle_sha256"),
                                              expected.get("bundle_size_bytes"))
        trained = from_dict(content["config"])
        norm = bundle.diffraction_norm(content, bundle_path)
        spec = spec_from_bundle(content, config.seed, config.backend.compile)
        record.update(bundle_path=str(bundle_path), trained_backend=content["backend"],
                      bundle_sha256=files.sha256_file(bundle_path), dose=trained.dose, view=trained.view,
                      gridsize=spec.geometry.gridsize)
    _, test_data = _load_splits(trained, record)
    with _Stage(record, "Grouping"):
        test_inputs = _inputs(trained, test_data, None, norm)
    with _Stage(record, "Model build"):
        model = _backend(config, record).build(spec)
        model.set_weights(weights)
    with _Stage(record, "Evaluation"):
        record["metrics"] = _score(model, test_inputs, test_data, config, run_dir, record)
    _succeed(record, config)
    m = record["metrics"]
    log.info("evaluated %s with %s: amplitude SSIM %.4f, phase SSIM %.4f → %s", bundle_path, config.backend.name,
             m["amplitude"]["ssim"], m["phase"]["ssim"], run_dir / "metrics.json")


# job.kind → the function that runs a job of that kind once its configuration is validated and
# recorded (dry_run=true runs _dry_run instead, for every kind). A new kind: a JobKind value in
# config.py and one entry here.
JOBS: dict[str, Callable[[Job], None]] = {
    "train": _train,
    "prepare": _prepare,
    "evaluate": _evaluate_bundle,
    "iterative": _iterative,
}
