"""The iterative engine's settings and result: plain data, shared by the config, the job and the engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENGINES = ("lsqml",)  # pty-chi's least-squares maximum-likelihood engine (the original study's Phase F)
NOISE_MODELS = ("gaussian", "poisson")
# How the engine cuts a patch at a sub-pixel position: bilinear is how the study data were simulated
# (physics.extract_patches); fourier is pty-chi's default (a Fourier shift).
INTERPOLATIONS = ("bilinear", "fourier")


@dataclass(frozen=True)
class EngineSettings:
    engine: str = "lsqml"
    epochs: int = 100
    batch_size: int = 100
    noise_model: str = "gaussian"
    interpolation: str = "fourier"
    refine_probe: bool = False
    refine_positions: bool = False
    threads: int = 0  # 0: torch's default (one per core)
    seed: int = 42


@dataclass
class Reconstruction:
    """What the engine returns, in this project's conventions (physics.py): the object on the
    ground truth's grid, the probe as the data's probe, positions (x, y) of the patches' pixel N//2."""
    obj: Any  # (H, W) complex64
    probe: Any  # (N, N) complex64
    xcoords: Any  # (n,)
    ycoords: Any  # (n,)
    losses: list = field(default_factory=list)  # the engine's loss after every epoch
    seconds: float = 0.0  # reconstruction time (checkpoint scoring excluded)
    versions: dict = field(default_factory=dict)
