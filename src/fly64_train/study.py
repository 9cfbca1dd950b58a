"""The study design: doses, views (→ gridsize and spacing), seeds and job identity.

Pure constants and arithmetic; everything that names a study job goes through here.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Optional

DOSES = (1e3, 1e4, 1e5)  # photons per pattern = expected total counts
SEEDS = {"simulation": 42, "grouping": 123, "subsampling": 456}
NEIGHBOR_COUNT = 7  # K nearest neighbours a gridsize-2 group is drawn from
OBJECT_KINDS = ("images", "random")  # synthetic objects: two test pictures | seeded random texture
# Picture pairs (amplitude, phase) of dataset.extra_train_tiles, all bundled with scikit-image (no
# download), none of them a test picture: textures (moon, brick, grass, gravel) and scenes, so the
# training split holds edges and texture at many scales, not only half of one picture.
TILE_PICTURES = (("moon", "coffee"), ("brick", "chelsea"), ("grass", "rocket"), ("gravel", "hubble_deep_field"),
                 ("coins", "immunohistochemistry"), ("retina", "cell"), ("page", "clock"),
                 ("text", "shepp_logan_phantom"))


@dataclass(frozen=True)
class View:
    name: str
    gridsize: int
    overlap: Optional[float]  # None: every Phase C position (no spacing filter)

    def spacing(self, probe_diameter: float) -> Optional[float]:
        """Minimum distance between kept positions, S = (1 − f)·D (pixels), D the probe's
        footprint diameter (`physics.footprint_diameter`): overlap is where the illumination overlaps."""
        return None if self.overlap is None else (1.0 - self.overlap) * float(probe_diameter)


VIEWS = {
    "baseline": View("baseline", 1, None),
    "dense": View("dense", 2, 0.7),
    "sparse": View("sparse", 2, 0.2),
}
SPACED_VIEWS = tuple(name for name, view in VIEWS.items() if view.overlap is not None)


def gridsize_for(view: str) -> int:
    return VIEWS[view].gridsize


def format_number(value) -> str:
    """'1000' for 1000.0 or 1e3, '2.5' for 2.5: the form used in directory and job names."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


# The group solve's noise band (model.er_tolerance, in standard deviations of √counts) job=train_raar
# takes at a dose. Measured on the dense test groups (docs/results.md, "A noise band stops the fit
# to the noise"): at doses 1e3 to 5e3 the exact projection fits the Poisson noise and a band (t = 0.5
# or 1) beats it; at 1e4 t = 0.5 is level with the exact one and t = 1 below it; at 1e5 any band
# costs. t = 1 is what the dose-1e3 training row was measured with.
NOISE_BAND_BELOW_DOSE = 1e4
NOISE_BAND = 1.0


def noise_band(dose) -> float:
    """model.er_tolerance for a dose: NOISE_BAND below NOISE_BAND_BELOW_DOSE, else 0 (the exact projection)."""
    return NOISE_BAND if float(dose) < NOISE_BAND_BELOW_DOSE else 0.0


def job_name(dose: float, view: str) -> str:
    return f"dose_{format_number(dose)}/{view}"


PINN = "PtychoPINN"


def method(job_kind: str, model_type: str = "pinn", engine: str = "lsqml") -> str:
    """The method whose reconstruction a job scores: the study table's `method` column.
    PtychoPINN for the network's jobs (model.model_type=pinn), the engine's name (LSQML) for
    job=iterative; another model type is named by its own value."""
    if job_kind == "iterative":
        return engine.upper()
    return PINN if model_type == "pinn" else model_type


def method_suffix(name: str) -> str:
    """'' for PtychoPINN (its directories keep their names), else '_<method>' (dense_lsqml)."""
    return "" if name == PINN else "_" + name.lower()


def config_fingerprint(payload: dict) -> str:
    """Stable SHA-256 of a JSON-able dict (sorted keys): identifies what a job was made from."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
