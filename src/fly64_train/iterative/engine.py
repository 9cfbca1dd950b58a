"""The iterative engine's framework-free face: its settings, its result and how it is loaded.

pty-chi (and torch with it) is imported only by ptychi_engine.py, and only when a job asks for a
reconstruction: without the `iterative` extra, `load()` is one line naming it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENGINES = ("lsqml",)  # pty-chi's least-squares maximum-likelihood engine (the original study's Phase F)
NOISE_MODELS = ("gaussian", "poisson")
# How the engine cuts a patch at a sub-pixel position: bilinear is how the study data were simulated
# (physics.extract_patches); fourier is pty-chi's default (a Fourier shift).
INTERPOLATIONS = ("bilinear", "fourier")
REQUIREMENT = "pip install -e '.[iterative]' (./setup.sh installs it)"


class IterativeUnavailable(RuntimeError):
    """pty-chi is not installed (or does not import); the message names the extra."""


@dataclass(frozen=True)
class EngineSettings:
    engine: str = "lsqml"
    epochs: int = 100
    batch_size: int = 100
    noise_model: str = "gaussian"
    interpolation: str = "bilinear"
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


def load():
    """The pty-chi engine module; IterativeUnavailable (one line) when pty-chi is missing or broken."""
    from fly64_train.backends.registry import _short_openmp_spin

    _short_openmp_spin()  # as for the torch backend: idle OpenMP threads must not spin on a busy machine
    try:
        from fly64_train.iterative import ptychi_engine
    except ImportError as exc:
        raise IterativeUnavailable(f"job=iterative needs pty-chi, which is not installed ({exc}): "
                                   f"{REQUIREMENT}") from exc
    except (RuntimeError, OSError) as exc:  # e.g. a torchvision built for another torch
        raise IterativeUnavailable(f"job=iterative needs pty-chi, which does not import here "
                                   f"({type(exc).__name__}: {exc}): {REQUIREMENT}") from exc
    return ptychi_engine
