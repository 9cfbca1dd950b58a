"""The data a job reads, from the source `dataset.source` names (data/sources.py): the one entry
point the runner, the benchmarks and the tests use.

The synthetic source builds the study data into a content-addressed cache (data/recipe.py: what
the study's data is; data/cache.py: verified, locked, atomic units), so parallel jobs share it
safely; the npz source hands over the user's own files, validated against the data contract.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from fly64_train import study
from fly64_train.data.sources import get_source


def dataset_paths(config) -> tuple[Path, Path]:
    """(train, test) NPZ paths for this job (a TrainingConfig), building the data if it is not cached.

    source=synthetic: phase C `patched_{train,test}.npz` for the baseline view, phase D
    `{view}_{train,test}.npz` for dense/sparse, at config.dose and config.model.N.
    source=npz: the user's files, validated with `load_dataset` (patterns must be model.N wide)
    and returned unchanged.
    """
    return get_source(config.dataset.source).dataset_paths(config)


def planned_paths(config) -> dict:
    """What `dataset_paths` would return or build, without building anything (dry runs).

    Keys: source, train, test, cache_entry (the unit directory, None for npz), exists (bool: the
    files are there and the marker matches; hashes are not re-checked), key (entry key or None),
    phase_c / phase_d (unit directories). Paths are strings.
    """
    return get_source(config.dataset.source).planned_paths(config)


def prepare_dose(config) -> dict:
    """Build (or find) phase C and both phase D views for config.dose; return every path (strings).

    {"source", "dose", "N", "cache_entry", "phase_c": {"dir", "train", "test"},
     "phase_d": {"dir", "dense": {"train", "test", "train_metrics", "test_metrics"}, "sparse": {...}}}
    source=npz: validates the user's files and returns {"source": "npz", "train", "test"}.
    """
    return get_source(config.dataset.source).prepare(config)


def prepare_study(config, doses: Iterable[float] = study.DOSES) -> dict:
    """Build (or find) phase C and both views for several doses, sharing one far-field pass.

    Returns {format_number(dose): prepare_dose-style summary} ({"npz": ...} for the user's files).
    """
    return get_source(config.dataset.source).prepare(config, doses)


def view_geometry(config, prepared: dict):
    """{view: {split: D, S, counts, overlaps}} of a prepared dose, or None when the source made no views."""
    return get_source(config.dataset.source).view_geometry(prepared)
