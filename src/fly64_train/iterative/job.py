"""job=iterative: reconstruct one (dose, view)'s test split with pty-chi and score it like a training job.

The test split is the one the training jobs evaluate on (the same cached file); the engine gets
the data's probe and positions and starts from a flat object (ones): the ground truth is used
only to score. The scoring is the evaluation package's (lit region, one global alignment, both SSIM
conventions, FRC50, per-patch correlations), written to the same files (metrics.json,
reconstruction.png, reconstruction.npz). With evaluate.every_epochs = k the object is also scored
after every k-th epoch (the loggers' rows: a quality curve against epochs); that scoring is not
counted in the reconstruction time.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fly64_train import evaluation, files, metric_table, physics, study
from fly64_train.iterative.engine import load
from fly64_train.iterative.settings import EngineSettings

log = logging.getLogger(__name__)
REFINED_NAME = "refined_probe_positions.npz"


def settings_of(config) -> EngineSettings:
    it = config.iterative
    return EngineSettings(engine=str(it.engine), epochs=it.epochs, batch_size=it.batch_size,
                          noise_model=str(it.noise_model), interpolation=str(it.interpolation),
                          refine_probe=it.refine_probe,
                          refine_positions=it.refine_positions, threads=it.threads, seed=config.seed)


def run(config, run_dir: Path, record: dict[str, Any], stage: Callable, loggers=()) -> None:
    """Fill `record` (the job's manifest record) with the reconstruction's times and scores.
    `stage(record, name)` names the stage that failed; `loggers` get one row per epoch."""
    from dataclasses import asdict

    from fly64_train.data import contract, store

    settings = settings_of(config)
    record["iterative"] = asdict(settings)
    with stage(record, "Engine"):  # before the data: a missing extra fails at once
        engine = load()
        record["versions"].update(engine.versions())
    with stage(record, "Data preparation"):
        _, test_path = store.dataset_paths(config)
        data = contract.load_dataset(test_path)
        record.update(test_data_path=str(test_path), test_patterns=data.n,
                      probe_diameter_px=physics.footprint_diameter(data.probe))
    ev = config.evaluate
    positions = np.stack([data.xcoords, data.ycoords], axis=1)

    def score(image: np.ndarray) -> evaluation.Scored:
        return evaluation.score_object(image, positions, data.obj, data.probe,
                                     illumination_threshold=ev.illumination_threshold, max_shift_px=ev.max_shift_px)

    curve: dict[int, dict[str, float]] = {}

    def on_checkpoint(epoch: int, image: np.ndarray, losses: list) -> None:
        curve[epoch] = _scores(score(image))
        log.info("epoch %d test scores: amplitude SSIM %.4f, phase SSIM %.4f (original convention)", epoch,
                 curve[epoch]["test_amplitude_ssim"], curve[epoch]["test_phase_ssim"])

    with stage(record, "Reconstruction"):
        photon_scale = data.metadata.get("photon_scale")
        if photon_scale is None:
            log.warning("the test data records no photon scale: pty-chi fits the amplitudes squared, not counts")
        every = ev.every_epochs
        checkpoints = range(every, settings.epochs, every) if every else ()
        log.info("%s: %s on %d test patterns, %d epochs, batch %d, %s noise model, probe %s, positions %s",
                 study.job_name(config.dose, config.view), settings.engine, data.n, settings.epochs,
                 settings.batch_size, settings.noise_model, "refined" if settings.refine_probe else "fixed",
                 "refined" if settings.refine_positions else "fixed")
        result = engine.reconstruct(data.diffraction, photon_scale, data.probe, data.xcoords, data.ycoords,
                                    data.obj.shape, settings, checkpoints, on_checkpoint)
        record.update(epochs_completed=len(result.losses), final_loss=result.losses[-1] if result.losses else None,
                      reconstruction_time_s=round(result.seconds, 3),
                      reconstruction_patterns_per_s=data.n / result.seconds if result.seconds > 0 else None,
                      reconstruction_includes="every epoch of the engine over the test split (scoring excluded)")
    with stage(record, "Evaluation"):
        scored = score(result.obj)
        if every:
            curve[len(result.losses)] = _scores(scored)
        title = (f"{settings.engine.upper()} (pty-chi), {settings.epochs} epochs: {data.n} test patterns, "
                 f"{int(scored.aligned.mask.sum())} px lit ≥ {ev.illumination_threshold:.0%} of the peak scored")
        record["metrics"] = evaluation.write_evaluation(run_dir, scored, title)
        if settings.refine_probe or settings.refine_positions:  # what the engine refined besides the object
            with files.atomic_output(run_dir / REFINED_NAME) as tmp, open(tmp, "wb") as handle:
                np.savez_compressed(handle, probe=result.probe, xcoords=result.xcoords, ycoords=result.ycoords)
        record["reconstruction_sha256"] = files.sha256_file(run_dir / evaluation.RECONSTRUCTION_NAME)
    history = []
    for epoch, loss in enumerate(result.losses, start=1):
        history.append({"epoch": epoch, "loss": loss, **curve.get(epoch, {})})
        for logger in loggers:
            logger.on_epoch_end(history[-1], history)
    m = record["metrics"]
    log.info("%s: %.1f s (%.1f patterns/s); amplitude SSIM %.4f, phase SSIM %.4f (original convention %.4f); "
             "per-patch correlation amplitude %.3f, phase %.3f", settings.engine, result.seconds,
             record["reconstruction_patterns_per_s"] or 0.0, m["amplitude"]["ssim"], m["phase"]["ssim"],
             m["phase"]["ssim_original"], m["patchwise"]["amplitude_correlation"],
             m["patchwise"]["phase_correlation"])


def _scores(scored: evaluation.Scored) -> dict[str, float]:
    return {key: float(metric_table.lookup(scored.metrics, metric.location))
            for key, metric in metric_table.epoch_scores().items()}
