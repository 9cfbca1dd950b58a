"""Helpers shared by the backend tests: bridged params, a focused probe, a determinism run."""
from __future__ import annotations

import numpy as np

from fly64_train import architecture, config, legacy
from fly64_train.training import LoopSettings, run_training

VIEW_FOR_GRIDSIZE = {1: "baseline", 2: "dense"}


def make_params(gridsize: int = 2, N: int = 64, padded_size: int | None = None, reach: float = 6.0,
                **model) -> dict:
    """Legacy params as the runner bridges them; the canvas fits member offsets up to `reach` px."""
    cfg = config.validate(config.TrainingConfig(view=VIEW_FOR_GRIDSIZE[gridsize],
                                                model=config.ModelConfig(N=N, **model)))
    params = legacy.update_legacy_dict(legacy.new_params(), cfg)
    if padded_size is None:
        offsets = np.full((1, 2), reach) if gridsize > 1 else np.zeros((1, 2))
        padded_size = architecture.padded_size_for(N, offsets)
    return legacy.set_runtime(params, padded_size=padded_size)


def smooth_probe(N: int, seed: int = 0, chirp: float = 0.002) -> np.ndarray:
    """A focused complex probe (Gaussian amplitude, quadratic phase), normalised as the model expects."""
    idx = np.arange(N) - N / 2 + 0.5
    r2 = idx[:, None] ** 2 + idx[None, :] ** 2
    probe = np.exp(-r2 / (2 * (N / 8) ** 2)) * np.exp(1j * chirp * r2 * (1 + seed))
    return architecture.model_probe(probe, N, object_amplitude=0.5, probe_mask=False)


def deterministic_weights(backend, run_dir, x, rel, probe, threads: int) -> dict[str, np.ndarray]:
    """Weights after a short deterministic training run (to compare two runs byte for byte)."""
    backend.configure(threads=threads, deterministic=True, seed=7)
    model = backend.build(make_params(gridsize=2, n_filters_scale=1), probe, seed=11)
    run_dir.mkdir()
    run_training(model, x, rel, LoopSettings(epochs=2, batch_size=4, checkpoint=False), run_dir)
    return model.get_weights()
