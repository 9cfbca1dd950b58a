"""A toy dataset source, registered the way docs/architecture.md's recipe says (a `Source`
subclass and one `register` call, before the config schema is imported): a small simulated scan
built once into the content-addressed cache. tests/test_sources.py runs `job=prepare` through it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from fly64_train.data import sources
from fly64_train.data.cache import Cache, locked
from fly64_train.data.contract import StudyData, save_dataset

FILES = ("toy_train.npz", "toy_test.npz")


class ToySource(sources.Source):
    name = "toy"

    def recipe(self, config) -> dict:
        return {"toy": 1, "N": int(config.model.N), "dose": float(config.dose),
                "seed": int(config.dataset.simulation_seed)}

    def _unit(self, config) -> tuple[Cache, Path]:
        cache = Cache(Path(config.dataset.cache_dir), self.cache_key(config), format_version=1,
                      recipe=self.recipe(config))
        return cache, cache.root / "toy"

    def dataset_paths(self, config) -> tuple[Path, Path]:
        from fly64_train.data import simulate

        cache, unit = self._unit(config)
        key = self.cache_key(config)
        if not cache.found(unit, key, "toy data"):
            cache.require_writable([(unit, key)])
            with locked(unit):
                N, seed = int(config.model.N), int(config.dataset.simulation_seed)
                probe = simulate.make_probe(N)
                obj = simulate.make_object(2 * N, seed, "random")
                grid = np.arange(N // 2, N + N // 2 + 1, 8, dtype=np.float64)
                x, y = (a.ravel() for a in np.meshgrid(grid, grid))
                diffraction, _ = simulate.simulate_phase_c(obj, probe, x, y, float(config.dose), seed)
                half = len(x) // 2

                def write(tmp: Path) -> None:
                    for name, part in zip(FILES, (slice(0, half), slice(half, None))):
                        save_dataset(tmp / name, StudyData(diffraction=diffraction[part], xcoords=x[part],
                                                           ycoords=y[part], probe=probe, obj=obj))
                cache.build(unit, key, write)
        return unit / FILES[0], unit / FILES[1]

    def planned_paths(self, config) -> dict:
        cache, unit = self._unit(config)
        return {"source": self.name, "train": str(unit / FILES[0]), "test": str(unit / FILES[1]),
                "cache_entry": str(unit), "exists": cache.check(unit, self.cache_key(config), deep=False)[0],
                "key": self.cache_key(config), "phase_c": None, "phase_d": None}

    def prepare(self, config, doses: Optional[Iterable[float]] = None) -> dict:
        train, test = self.dataset_paths(config)
        return {"source": self.name, "train": str(train), "test": str(test)}


sources.register(ToySource())
