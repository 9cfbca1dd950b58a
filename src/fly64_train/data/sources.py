"""Where a job's data comes from: dataset sources behind one small interface, chosen by
`dataset.source` from `SOURCES` (like the backends from their registry). No other module asks
which source it is.

A source knows its recipe (what shapes the data; part of the cache key when it builds), the
files a job reads (`dataset_paths`, built if needed), what a dry run would read
(`planned_paths`), everything `job=prepare` yields (`prepare`) and, optionally, the geometry of
the views it made (`view_geometry`). Whatever it yields must pass data/contract.py's
`load_dataset`. Adding one: a `Source` subclass, one `register(...)` line, the rules of its fields
(`required`), a `conf/dataset/<name>.yaml` preset (docs/architecture.md, "A dataset source").
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterable, Optional

from fly64_train import study
from fly64_train.data.contract import ContractError, load_dataset


class Source(ABC):
    """One kind of dataset. Methods take the job's TrainingConfig."""
    name: str = ""
    required: tuple[str, ...] = ()  # dataset.* fields this source needs (config.validate checks them)

    def recipe(self, config) -> Optional[dict]:
        """What shapes the data (the cache key is its fingerprint); None when the user's files are the data."""
        return None

    def cache_key(self, config) -> Optional[str]:
        recipe = self.recipe(config)
        return None if recipe is None else study.config_fingerprint(recipe)

    @abstractmethod
    def dataset_paths(self, config) -> tuple[Path, Path]:
        """(train, test) files of the job's dose and view, in the data contract (built if needed)."""

    @abstractmethod
    def planned_paths(self, config) -> dict:
        """What `dataset_paths` would return or build, touching nothing: source, train, test, exists, key, ..."""

    @abstractmethod
    def prepare(self, config, doses: Optional[Iterable[float]] = None) -> dict:
        """job=prepare: find or build the data (of config.dose, or of each of `doses`); every file it
        yields, as a nested dict of path strings with "source"."""

    def view_geometry(self, prepared: dict) -> Optional[dict]:
        """{view: {split: D, S, counts, overlaps}} of what `prepare` yielded, when the source made views."""
        return None


class SyntheticSource(Source):
    """The study's data, simulated and cached (data/recipe.py)."""
    name = "synthetic"

    def recipe(self, config) -> dict:
        from fly64_train.data.recipe import StudyRecipe

        return StudyRecipe(config).params

    def dataset_paths(self, config) -> tuple[Path, Path]:
        from fly64_train.data import recipe

        plan = recipe.StudyRecipe(config)
        if study.VIEWS[plan.view].overlap is None:
            recipe.ensure_phase_c(plan, [plan.dose])
        else:
            recipe.ensure_phase_d(plan, plan.dose)
        _, train, test = recipe.view_files(plan)
        return train, test

    def planned_paths(self, config) -> dict:
        from fly64_train.data import recipe

        plan = recipe.StudyRecipe(config)
        unit, train, test = recipe.view_files(plan)
        key = plan.phase_c_key(plan.dose) if unit == plan.phase_c_dir(plan.dose) else plan.phase_d_key(plan.dose)
        exists, _ = plan.cache.check(unit, key, deep=False)
        return {"source": self.name, "train": str(train), "test": str(test), "cache_entry": str(unit),
                "exists": exists, "key": plan.key, "phase_c": str(plan.phase_c_dir(plan.dose)),
                "phase_d": str(plan.phase_d_dir(plan.dose))}

    def prepare(self, config, doses: Optional[Iterable[float]] = None) -> dict:
        from fly64_train.data import recipe

        plan = recipe.StudyRecipe(config)
        if doses is None:
            built = recipe.ensure_phase_c(plan, [plan.dose])[plan.dose]
            recipe.ensure_phase_d(plan, plan.dose, phase_c=built)
            return recipe.dose_summary(plan, plan.dose)
        doses = sorted({float(d) for d in doses})
        recipe.ensure_phase_c(plan, doses, keep=False)  # one dose in memory at a time; phase D reads the files
        result = {}
        for dose in doses:
            recipe.ensure_phase_d(plan, dose)
            result[study.format_number(dose)] = recipe.dose_summary(plan, dose)
        return result

    def view_geometry(self, prepared: dict) -> Optional[dict]:
        from fly64_train.data import recipe

        return recipe.view_geometry(prepared) if "phase_d" in prepared else None


class NpzSource(Source):
    """The user's own files (dataset.train_path, dataset.test_path), validated and used as they are."""
    name = "npz"
    required = ("train_path", "test_path")

    def _paths(self, config) -> tuple[Path, Path]:
        train, test = config.dataset.train_path, config.dataset.test_path
        if not train or not test:
            raise ContractError("dataset=npz needs dataset.train_path and dataset.test_path "
                                f"(got train_path={train!r}, test_path={test!r})")
        return Path(train), Path(test)

    def dataset_paths(self, config) -> tuple[Path, Path]:
        paths = self._paths(config)
        for key, path in zip(self.required, paths):
            if not path.exists():
                raise ContractError(f"{path}: dataset.{key} file not found (expected an NPZ archive in the data "
                                    f"contract; set dataset.{key} to its path)")
        for path in paths:
            data = load_dataset(path)
            if data.N != config.model.N:
                raise ContractError(f"{path}: key 'diffraction': expected {config.model.N}×{config.model.N} "
                                    f"patterns (model.N={config.model.N}); found {data.N}×{data.N}")
        return paths

    def planned_paths(self, config) -> dict:
        train, test = self._paths(config)
        return {"source": self.name, "train": str(train), "test": str(test), "cache_entry": None,
                "exists": train.is_file() and test.is_file(), "key": None, "phase_c": None, "phase_d": None}

    def prepare(self, config, doses: Optional[Iterable[float]] = None) -> dict:
        train, test = self.dataset_paths(config)
        files = {"source": self.name, "train": str(train), "test": str(test)}
        return files if doses is None else {self.name: files}  # the same files serve every dose


SOURCES: dict[str, Source] = {}


def register(source: Source) -> Source:
    """Add a source under its name (the value of dataset.source)."""
    if not source.name:
        raise ValueError(f"{type(source).__name__} has no name")
    SOURCES[source.name] = source
    return source


def get_source(name: str) -> Source:
    name = str(name)
    if name not in SOURCES:
        raise ValueError(f"dataset.source={name!r} is not allowed: expected one of {', '.join(SOURCES)}")
    return SOURCES[name]


register(SyntheticSource())
register(NpzSource())
