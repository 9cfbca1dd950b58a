"""pty-chi as the iterative engine: the only module that imports pty-chi (and, through it, torch).

It translates this project's conventions into pty-chi's and back:
- data: the contract stores amplitudes A = sqrt(counts)/s with A² = fftshift(|FFT ψ|²)/N²; pty-chi
  fits intensities |FFT(P·O)|² (unnormalised FFT, DC in the corner; it shifts centred data itself).
  With the photon scale s known, the intensities are the counts (s·A)² and the probe is P·s/N, so
  the known probe already predicts the measured counts (what a Poisson noise model needs).
- positions: a patch here takes pixel N//2 from its position c (physics.py). pty-chi's bilinear
  patches do the same; its Fourier-shifted ones centre a patch at pixel (N−1)/2, so there the
  position is c − 0.5. The position origin is pixel (0, 0) of the object buffer. The buffer is the scan's bounding box (plus half a patch) cut from the ground
  truth's grid; the result is put back on that grid, flat (ones) where no light fell.
"""
from __future__ import annotations

import logging
import time
from importlib import metadata
from typing import Callable, Optional, Sequence

import numpy as np
import ptychi.api as api
import torch
from ptychi.api.task import PtychographyTask

from fly64_train.iterative.settings import EngineSettings, Reconstruction

log = logging.getLogger(__name__)

NOISE_MODELS = {"gaussian": api.NoiseModels.GAUSSIAN, "poisson": api.NoiseModels.POISSON}
INTERPOLATIONS = {"bilinear": api.PatchInterpolationMethods.BILINEAR, "fourier": api.PatchInterpolationMethods.FOURIER}
# this project's patch centre (pixel N//2) minus pty-chi's, in pixels, per interpolation
CENTRE_OFFSET = {"bilinear": 0.0, "fourier": 0.5}


def versions() -> dict[str, str]:
    return {"ptychi": metadata.version("ptychi"), "torch": torch.__version__}


def _buffer(xcoords: np.ndarray, ycoords: np.ndarray, N: int, object_shape: tuple[int, int]) -> tuple[slice, slice]:
    """The rows and columns of the object the scan can reach: its bounding box plus half a patch."""
    reach = N // 2 + 2
    rows = slice(max(0, int(np.floor(ycoords.min())) - reach), min(object_shape[0], int(np.ceil(ycoords.max())) + reach))
    cols = slice(max(0, int(np.floor(xcoords.min())) - reach), min(object_shape[1], int(np.ceil(xcoords.max())) + reach))
    return rows, cols


def _options(settings: EngineSettings, origin: tuple[float, float], known_scale: bool) -> api.LSQMLOptions:
    options = api.LSQMLOptions()
    options.data_options.fft_shift = True  # the contract's patterns have DC at the centre
    options.object_options.optimizable = True
    options.object_options.determine_position_origin_coords_by = api.ObjectPosOriginCoordsMethods.SPECIFIED
    options.object_options.patch_interpolation_method = INTERPOLATIONS[settings.interpolation]
    options.object_options.position_origin_coords = np.asarray(origin, dtype=np.float64)  # (y, x)
    options.probe_options.optimizable = settings.refine_probe
    options.probe_position_options.optimizable = settings.refine_positions
    recon = options.reconstructor_options
    recon.num_epochs = settings.epochs
    recon.batch_size = settings.batch_size
    recon.noise_model = NOISE_MODELS[settings.noise_model]
    recon.default_device = api.Devices.CPU
    recon.random_seed = settings.seed
    # A probe already in counts needs no first-epoch rescaling (which assumes a flat |O| = 1).
    recon.rescale_probe_intensity_in_first_epoch = not known_scale
    return options


def reconstruct(diffraction: np.ndarray, photon_scale: Optional[float], probe: np.ndarray, xcoords: np.ndarray,
                ycoords: np.ndarray, object_shape: tuple[int, int], settings: EngineSettings,
                checkpoints: Sequence[int] = (),
                on_checkpoint: Optional[Callable[[int, np.ndarray, list[float]], None]] = None) -> Reconstruction:
    """Reconstruct the object (object_shape, starting flat: ones) from amplitudes (n, N, N) with the
    known probe and positions. `on_checkpoint(epoch, object, losses)` runs after each epoch in
    `checkpoints` (its time is not counted as reconstruction time)."""
    if settings.engine != "lsqml":
        raise ValueError(f"iterative.engine={settings.engine!r}: this build drives pty-chi's lsqml only")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    N = probe.shape[-1]
    offset = CENTRE_OFFSET[settings.interpolation]
    known_scale = photon_scale is not None
    scale = float(photon_scale) if known_scale else 1.0
    intensities = (np.asarray(diffraction, dtype=np.float64) * scale) ** 2
    probe_data = (np.asarray(probe, dtype=np.complex64) * np.float32(scale / N))[None, None]
    rows, cols = _buffer(np.asarray(xcoords), np.asarray(ycoords), N, object_shape)
    options = _options(settings, (-rows.start, -cols.start), known_scale)
    task = PtychographyTask(
        options,
        diffraction_data=intensities.astype(np.float32),
        object_data=np.ones((1, rows.stop - rows.start, cols.stop - cols.start), dtype=np.complex64),
        probe_data=probe_data,
        probe_position_x_px=np.asarray(xcoords, dtype=np.float64) - offset,
        probe_position_y_px=np.asarray(ycoords, dtype=np.float64) - offset)
    stops = sorted({int(e) for e in checkpoints if 0 < int(e) < settings.epochs} | {settings.epochs})
    seconds, done = 0.0, 0
    for stop in stops:
        started = time.perf_counter()
        task.run(n_epochs=stop - done)
        seconds += time.perf_counter() - started
        done = stop
        losses = [float(v) for v in task.reconstructor.loss_tracker.table["loss"]]
        log.info("epoch %d: loss %.6g (%.1f s of reconstruction)", done, losses[-1] if losses else float("nan"),
                 seconds)
        if on_checkpoint is not None and done != settings.epochs:
            on_checkpoint(done, _object(task, object_shape, rows, cols), losses)
    return Reconstruction(
        obj=_object(task, object_shape, rows, cols),
        probe=(task.get_data_to_cpu("probe", as_numpy=True)[0, 0] * (N / scale)).astype(np.complex64),
        xcoords=task.get_probe_positions_x(as_numpy=True) + offset,
        ycoords=task.get_probe_positions_y(as_numpy=True) + offset,
        losses=[float(v) for v in task.reconstructor.loss_tracker.table["loss"]],
        seconds=seconds, versions=versions())


def _object(task, object_shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    """The reconstructed buffer on the ground truth's grid, ones outside it."""
    image = np.ones(object_shape, dtype=np.complex64)
    image[rows, cols] = task.get_data_to_cpu("object", as_numpy=True)[0]
    return image
