"""From a validated dataset to the arrays a model consumes: groups, normalised diffraction,
member offsets. Shared by training, evaluation and benchmarks so they cannot disagree."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from fly64_train import architecture
from fly64_train.data.contract import StudyData
from fly64_train.data.grouping import GroupIndex, grouped, make_groups


@dataclass
class ModelInputs:
    x: np.ndarray  # (B, N, N, C) float32 diffraction amplitude normalised to mean Σ x² = (N/2)²
    rel: np.ndarray  # (B, C, 2) float32 member position − group centre, (x, y) pixels
    positions: np.ndarray  # (B, C, 2) float64 member positions on the object grid
    groups: GroupIndex
    norm: float  # the normalisation factor applied to the dataset's diffraction

    @property
    def n_groups(self) -> int:
        return len(self.x)


def model_inputs(data: StudyData, gridsize: int, neighbor_count: int, seed: int,
                 n_groups: Optional[int] = None, enable_oversampling: bool = False,
                 norm: Optional[float] = None) -> ModelInputs:
    """Groups and normalised inputs of a dataset. `norm` (the training split's factor) maps the same
    counts to the same network input on every split; None derives it from this data (training)."""
    groups = make_groups(data.xcoords, data.ycoords, gridsize, neighbor_count, n_groups, seed,
                         enable_oversampling=enable_oversampling)
    if norm is None:
        norm = architecture.normalisation_factor(data.diffraction, data.N)
    elif not (np.isfinite(norm) and norm > 0):
        raise ValueError(f"the diffraction normalisation must be a positive number, got {norm}")
    x = grouped(data.diffraction, groups.indices).astype(np.float32) * np.float32(norm)
    positions = np.stack([data.xcoords[groups.indices], data.ycoords[groups.indices]], axis=-1)
    return ModelInputs(x=x, rel=groups.relative.astype(np.float32), positions=positions,
                       groups=groups, norm=norm)
