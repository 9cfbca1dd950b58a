"""The TensorFlow generators: one module per name of architecture.GENERATORS, each defining
`Generator(geometry, variables)`, a callable (x (b, N, N, in), input scale) → amplitude, phase
(b, N, N, out) that reads its parameters from `variables` (architecture name → tf.Variable)."""
from __future__ import annotations

import importlib

from fly64_train.architecture import GENERATORS, Geometry


def build(geometry: Geometry, variables: dict):
    """The generator `geometry.generator`, on the model's variables."""
    if geometry.generator not in GENERATORS:
        raise ValueError(f"generator={geometry.generator!r}; expected one of {', '.join(GENERATORS)}")
    return importlib.import_module(f"{__name__}.{geometry.generator}").Generator(geometry, variables)
