"""The study's data recipe (dataset.source=synthetic): what shapes the data, and how it is built
into the content-addressed cache (data/cache.py), one unit per phase and dose.

Layout (cache_dir is `DatasetConfig.cache_dir`, relative to the current directory):

    <cache_dir>/<key[:16]>/study.json                       what the entry was made from (readable)
    <cache_dir>/<key[:16]>/builds.jsonl                     one line per build (unit, pid, seconds)
    <cache_dir>/<key[:16]>/phase_c/dose_<d>/patched_{train,test}.npz        + complete.json
    <cache_dir>/<key[:16]>/phase_d/dose_<d>/{view}_{split}.npz              + complete.json
    <cache_dir>/<key[:16]>/phase_d/dose_<d>/{view}_{split}_metrics.json

`key` is the SHA-256 of the recipe: the object kind and size, the scan geometry (step, row
spacing, jitter), the probe/object file paths and the SHA-256 of their contents, the simulation
and subsampling seeds, N and the format version (3 since the probe with coma and trefoil: a cache
written by an earlier version is never read as today's data).
Each `phase_c/dose_<d>` and `phase_d/dose_<d>` directory is one unit with its own key (the entry
key + phase + dose [+ the views' spacings]). Lock order is always phase D before phase C (never
the reverse), so jobs cannot deadlock.

Dataset files are written with fixed archive timestamps: the same config gives the same bytes.
Phase C files hold every scan position of a split, simulated by `simulate.iter_doses` (one
far-field pass for several doses); phase D files hold the positions of a view, kept at least
S = (1 − f)·D apart, D the probe's footprint diameter (the disc holding 90 % of |P|²,
`physics.footprint_diameter`, measured on the probe actually used: synthetic or the user's).
Each view's metrics JSON records D, S, the counts and the measured disc overlap at D, with the
nearest neighbour and with the k = K − 1 nearest.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from fly64_train import files, physics, study
from fly64_train.data import simulate
from fly64_train.data.cache import SETTING, Cache, locked
from fly64_train.data.contract import ContractError, StudyData, load_array, load_dataset, save_dataset
from fly64_train.data.overlap import overlap_metrics, spaced_subset
from fly64_train.files import sha256_bytes, sha256_file, write_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3  # bump whenever the simulation or the file layout changes
SPLITS = ("train", "test")
METRIC_NEIGHBOURS = study.NEIGHBOR_COUNT - 1  # k nearest others per position in the overlap metric


def _sha256_array(array: np.ndarray) -> str:
    return sha256_bytes(np.ascontiguousarray(array).tobytes())


def _user_file(value: Optional[str], field: str) -> Optional[Path]:
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise ContractError(f"{path}: dataset.{field} file not found (expected an NPZ archive)")
    return path


def _dose_dir(dose: float) -> str:
    return f"dose_{study.format_number(dose)}"


class StudyRecipe:
    """What shapes one config's study data and where its cache units are (no data is touched)."""

    def __init__(self, config):  # a TrainingConfig
        dataset = config.dataset
        self.config = config
        self.N = int(config.model.N)
        self.dose = float(config.dose)
        self.view = config.view
        self.probe_path = _user_file(dataset.probe_path, "probe_path")
        self.object_path = _user_file(dataset.object_path, "object_path")
        self.params = {
            "format_version": FORMAT_VERSION,
            "source": "synthetic",
            "object_kind": str(dataset.object_kind),
            "object_size": int(dataset.object_size),
            "scan": {"step_px": float(dataset.scan_step), "row_spacing_px": float(dataset.scan_row_spacing),
                     "jitter_px": float(dataset.scan_jitter)},
            "probe_path": str(self.probe_path) if self.probe_path else None,
            "probe_sha256": sha256_file(self.probe_path) if self.probe_path else None,
            "object_path": str(self.object_path) if self.object_path else None,
            "object_sha256": sha256_file(self.object_path) if self.object_path else None,
            "simulation_seed": int(dataset.simulation_seed),
            "subsampling_seed": int(dataset.subsampling_seed),
            "N": self.N,
        }
        if dataset.extra_train_tiles:  # only when used, so the cache keys of earlier data stay valid
            if self.object_path:
                raise ContractError(f"{self.object_path}: dataset.extra_train_tiles adds synthetic tiles beside the "
                                    "synthetic object; it cannot extend a user's object_path (set it to 0)")
            self.params["extra_train_tiles"] = int(dataset.extra_train_tiles)
        self.key = study.config_fingerprint(self.params)
        self.cache = Cache(Path(dataset.cache_dir), self.key, FORMAT_VERSION, self.params)
        self.cache_dir, self.root = self.cache.cache_dir, self.cache.root
        self._probe: Optional[tuple[np.ndarray, dict]] = None

    def probe(self) -> tuple[np.ndarray, dict]:
        """The probe (N, N) complex64 and how it was made, incl. its footprint diameter D."""
        if self._probe is None:
            self._probe = _make_probe(self)
        return self._probe

    @property
    def probe_diameter(self) -> float:
        return self.probe()[1]["footprint_diameter_px"]

    def phase_c_dir(self, dose: float) -> Path:
        return self.root / "phase_c" / _dose_dir(dose)

    def phase_d_dir(self, dose: float) -> Path:
        return self.root / "phase_d" / _dose_dir(dose)

    def phase_c_key(self, dose: float) -> str:
        return study.config_fingerprint({"entry": self.key, "phase": "C", "dose": float(dose)})

    def spacings(self) -> dict:
        return {name: study.VIEWS[name].spacing(self.probe_diameter) for name in study.SPACED_VIEWS}

    def phase_d_key(self, dose: float) -> str:
        return study.config_fingerprint({"entry": self.key, "phase": "D", "dose": float(dose),
                                         "spacings": self.spacings(),
                                         "probe_diameter_px": self.probe_diameter,
                                         "metric_neighbours": METRIC_NEIGHBOURS})


def _label(phase: str, dose: float) -> str:
    return f"phase {phase} dose={study.format_number(dose)}"


# ----------------------------------------------------------------------------------------------
# phase C

def _make_probe(plan: StudyRecipe) -> tuple[np.ndarray, dict]:
    N = plan.N
    if plan.probe_path:
        probe = load_array(plan.probe_path, ("probeGuess", "probe"), "the probe")
        if probe.shape != (N, N):
            raise ContractError(f"{plan.probe_path}: key 'probeGuess': expected a ({N}, {N}) probe for "
                                f"model.N={N}; found shape {probe.shape}")
        info = {"source": str(plan.probe_path), "file_sha256": plan.params["probe_sha256"]}
    else:
        probe = simulate.make_probe(N)
        info = {"source": f"synthetic make_probe(N={N})", "pupil_radius_px": simulate.PUPIL_RADIUS,
                "defocus_rad": simulate.DEFOCUS, "astigmatism_rad": simulate.ASTIGMATISM}
    try:
        diameter = physics.footprint_diameter(probe)
    except ValueError as error:
        raise ContractError(f"{plan.probe_path or 'synthetic probe'}: key 'probeGuess': {error}") from None
    info.update(sha256=_sha256_array(probe), footprint_diameter_px=diameter,
                footprint_rule=f"diameter of the disc about the intensity centroid holding "
                               f"{physics.FOOTPRINT_ENERGY_FRACTION:.0%} of |P|^2")
    return probe, info


def _base_arrays(plan: StudyRecipe) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Object, probe and how they were made."""
    probe, probe_info = plan.probe()
    if plan.object_path:
        obj = load_array(plan.object_path, ("objectGuess", "object"), "the object")
        obj_info = {"source": str(plan.object_path), "file_sha256": plan.params["object_sha256"]}
    else:
        kind, size, seed = plan.params["object_kind"], plan.params["object_size"], plan.params["simulation_seed"]
        obj = simulate.make_object(size, seed, kind)
        obj_info = {"source": f"synthetic make_object(size={size}, seed={seed}, kind={kind!r})"}
        if kind == "images":
            obj_info.update(amplitude_image=f"skimage.data.{simulate.AMPLITUDE_IMAGE}",
                            phase_image=f"skimage.data.{simulate.PHASE_IMAGE}")
    obj_info["sha256"] = _sha256_array(obj)
    obj_info["shape"] = list(obj.shape)
    return obj, probe, obj_info, probe_info


def _positions(plan: StudyRecipe, obj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scan = plan.params["scan"]
    try:
        return simulate.fly_scan_positions(obj.shape, plan.N, scan["step_px"], scan["row_spacing_px"],
                                           scan["jitter_px"], plan.params["simulation_seed"])
    except ValueError as error:
        if plan.object_path:
            raise ContractError(f"{plan.object_path}: key 'objectGuess': {error}") from None
        raise


class _ExtraTiles:
    """dataset.extra_train_tiles: objects beside the study object, scanned for the training split only.

    The tiles sit side by side to the right of the object (columns size·(j+1) .. size·(j+2)), each
    scanned like the object with positions of its own seed; every position keeps N/2 inside its
    tile, so no pattern mixes two tiles and the tiles' positions are ≥ N + 1 px from any other
    tile's (the dense/sparse views' spacing and the K-nearest-neighbour groups never join them).
    The test split, its positions and its noise are the same as without tiles.
    """

    def __init__(self, plan: StudyRecipe, obj: np.ndarray):
        count, seed = plan.params["extra_train_tiles"], plan.params["simulation_seed"]
        made = simulate.make_training_tiles(obj.shape[0], seed, plan.params["object_kind"], count)
        scan = plan.params["scan"]
        xs, ys, self.info = [], [], []
        for index, (tile, info) in enumerate(made):
            x, y = simulate.fly_scan_positions(tile.shape, plan.N, scan["step_px"], scan["row_spacing_px"],
                                               scan["jitter_px"], simulate.tile_seed(seed, index, 1))
            left = obj.shape[1] + index * tile.shape[1]
            xs.append(x + left)
            ys.append(y)
            self.info.append({**info, "columns": [left, left + tile.shape[1]], "n_positions": int(x.size)})
        self.canvas = np.concatenate([obj] + [tile for tile, _ in made], axis=1)
        self.canvas_sha256 = _sha256_array(self.canvas)  # once, not once per dose
        self.xcoords, self.ycoords = np.concatenate(xs), np.concatenate(ys)
        self.noise_seed = simulate.tile_seed(seed)

    @property
    def n(self) -> int:
        return int(self.xcoords.size)

    def far_field(self, probe: np.ndarray) -> np.ndarray:
        return simulate.far_field(self.canvas, probe, self.xcoords, self.ycoords)[0]

    def metadata(self, mean_counts: float) -> dict:
        return {"count": len(self.info), "tiles": self.info, "n_positions": self.n,
                "canvas_shape": list(self.canvas.shape), "canvas_sha256": self.canvas_sha256,
                "mean_counts_per_pattern": mean_counts,
                "noise_seed": f"simulate.tile_seed({{simulation seed}}) = {self.noise_seed}",
                "rule": "extra objects to the right of the study object, scanned for the training split "
                        "only, at the study scan's photon scale (the same beam: a tile's mean counts "
                        "follow its transmission)"}


def _simulate_phase_c(plan: StudyRecipe, doses: list[float]) -> Iterator[tuple[float, dict[str, StudyData]]]:
    """Phase C data of several doses from one far-field pass, one dose at a time: (dose, {split: data}).

    The scan is simulated in split order (train positions, then test positions, each in scan
    order), so each split is a view of the simulated stack, not a copy; `scan_index` gives each
    pattern's index in the scan. Extra training tiles (`_ExtraTiles`) are appended to the
    training split (which is then a copy), with scan indices after the study scan's.
    """
    obj, probe, obj_info, probe_info = _base_arrays(plan)
    xcoords, ycoords = _positions(plan, obj)
    extra = _ExtraTiles(plan, obj) if plan.params.get("extra_train_tiles") else None
    n_extra = extra.n if extra else 0
    # every dose's phase C files must fit: say so now, not after the simulation, half-way through
    needed = len(doses) * ((xcoords.size + n_extra) * plan.N * plan.N * 4 + 2 * (obj.nbytes + probe.nbytes)
                           + (extra.canvas.nbytes if extra else 0))
    files.require_free_space(plan.cache_dir, needed, SETTING)
    masks = dict(zip(SPLITS, simulate.split_y(ycoords)))
    members = {name: np.flatnonzero(mask) for name, mask in masks.items()}
    order = np.concatenate([members[name] for name in SPLITS])
    bounds, start = {}, 0
    for name in SPLITS:
        bounds[name] = (start, start + members[name].size)
        start += members[name].size
    split = simulate.split_point(ycoords)
    seed = plan.params["simulation_seed"]
    logger.info("simulating %d patterns at N=%d for dose(s) %s", xcoords.size, plan.N,
                ", ".join(study.format_number(d) for d in doses))
    started = time.perf_counter()
    if extra:
        logger.info("simulating %d patterns of %d extra training tile(s)", n_extra, len(extra.info))
        extra_amplitude = extra.far_field(probe)
    stream = simulate.iter_doses(obj, probe, xcoords[order], ycoords[order], doses, seed)
    for number, (dose, diffraction, scale) in enumerate(stream, start=1):
        extra_part = simulate.add_noise(extra_amplitude, scale, extra.noise_seed, dose) if extra else None
        seconds = time.perf_counter() - started
        total = xcoords.size + n_extra
        logger.info("simulated dose=%s: %d patterns, %.1f s since the start (%.0f patterns/s)",
                    study.format_number(dose), total, seconds, total * number / max(seconds, 1e-9))
        splits = {}
        for name in SPLITS:
            lo, hi = bounds[name]
            part = diffraction[lo:hi]
            index, split_obj, split_obj_info = members[name], obj, obj_info
            x, y = xcoords[index], ycoords[index]
            with_tiles = bool(extra) and name == "train"
            if with_tiles:
                part = np.concatenate([part, extra_part])
                index = np.concatenate([index, xcoords.size + np.arange(n_extra)])
                x, y = np.concatenate([x, extra.xcoords]), np.concatenate([y, extra.ycoords])
                split_obj = extra.canvas
                split_obj_info = {**obj_info, "sha256": extra.canvas_sha256, "shape": list(extra.canvas.shape),
                                  "study_object_sha256": obj_info["sha256"],
                                  "note": "the study object with the extra training tiles to its right"}
            flat = part.reshape(part.shape[0], -1)
            counts = np.einsum("ij,ij->i", flat, flat).astype(np.float64) * scale**2
            metadata = {
                "format": "fly64-train study dataset", "format_version": FORMAT_VERSION,
                "phase": "C", "view": "baseline", "split": name, "dose": dose, "N": plan.N,
                "photon_scale": scale, "counts_rule": "counts = (diffraction * photon_scale)**2",
                "mean_counts_per_pattern": float(counts.mean()),
                "seeds": {"simulation": seed, "subsampling": plan.params["subsampling_seed"],
                          "noise": f"SeedSequence([{seed}, {simulate.NOISE_TAG}, float64 bits of dose]), "
                                   "one child per chunk of the split-ordered scan"},
                "object": split_obj_info, "probe": probe_info,
                "probe_diameter_px": probe_info["footprint_diameter_px"],
                "scan": {"kind": "fly scan: rows along x, serpentine, Gaussian positioning jitter",
                         **plan.params["scan"]},
                "n_positions": int(xcoords.size), "n_patterns": int(part.shape[0]),
                "split_rule": {"axis": "y", "split_point": split, "train": "y < split_point",
                               "test": "y >= split_point"},
                "entry_key": plan.key,
            }
            if with_tiles:
                metadata["extra_train_tiles"] = extra.metadata(float(counts[-n_extra:].mean()))
            splits[name] = StudyData(diffraction=part, xcoords=x, ycoords=y,
                                     probe=probe, obj=split_obj, metadata=metadata, scan_index=index)
        yield dose, splits
        del diffraction, splits, extra_part


def _file_bytes(data: StudyData) -> int:
    """About what `save_dataset` writes for `data` (its arrays, coordinates twice)."""
    arrays = (data.diffraction, data.xcoords, data.ycoords, data.xcoords, data.ycoords, data.probe, data.obj,
              data.scan_index if data.scan_index is not None else np.empty(0))
    return sum(np.asarray(a).nbytes for a in arrays)


def _phase_c_found(plan: StudyRecipe, dose: float) -> bool:
    return plan.cache.found(plan.phase_c_dir(dose), plan.phase_c_key(dose), _label("C", dose))


def ensure_phase_c(plan: StudyRecipe, doses: Iterable[float],
                   keep: bool = True) -> dict[float, Optional[dict[str, StudyData]]]:
    """Find or build the phase C units of `doses` (one simulation pass for all missing ones).

    Returns {dose: in-memory data if it was just built and `keep`, else None}. With keep=False
    only one dose's diffraction is in memory at a time.
    """
    doses = sorted({float(d) for d in doses})
    built: dict[float, Optional[dict[str, StudyData]]] = {dose: None for dose in doses}
    # A complete unit is used without taking its lock (so a read-only cache works); the others
    # are re-checked under their locks, since another process may have built them meanwhile.
    pending = [dose for dose in doses if not _phase_c_found(plan, dose)]
    if not pending:
        return built
    plan.cache.require_writable([(plan.phase_c_dir(dose), plan.phase_c_key(dose)) for dose in pending])
    with contextlib.ExitStack() as stack:
        for dose in pending:  # sorted order: no deadlock between processes asking for several
            stack.enter_context(locked(plan.phase_c_dir(dose)))
        missing = [dose for dose in pending if not _phase_c_found(plan, dose)]
        for dose, splits in (_simulate_phase_c(plan, missing) if missing else ()):
            def write(tmp: Path, splits=splits) -> None:
                for name, part in splits.items():
                    save_dataset(tmp / f"patched_{name}.npz", part)
            plan.cache.build(plan.phase_c_dir(dose), plan.phase_c_key(dose), write,
                             needed=sum(_file_bytes(part) for part in splits.values()))
            built[dose] = splits if keep else None
    return built


# ----------------------------------------------------------------------------------------------
# phase D

def _view_data(plan: StudyRecipe, source: StudyData, view: str, split: str, dose: float) -> tuple[StudyData, dict]:
    diameter = plan.probe_diameter
    spacing = study.VIEWS[view].spacing(diameter)
    keep = spaced_subset(source.xcoords, source.ycoords, spacing, plan.params["subsampling_seed"])
    x, y = source.xcoords[keep], source.ycoords[keep]
    nearest = overlap_metrics(x, y, diameter, 1)
    neighbours = overlap_metrics(x, y, diameter, METRIC_NEIGHBOURS)
    n_candidates = int(source.n)
    summary = {
        "view": view, "split": split, "dose": float(dose), "N": plan.N,
        "overlap_fraction": study.VIEWS[view].overlap,
        "probe_diameter_px": diameter,
        "probe_diameter_rule": plan.probe()[1]["footprint_rule"],
        "spacing_threshold_px": spacing,
        "spacing_rule": "S = (1 - overlap_fraction) * probe_diameter_px",
        "n_candidates": n_candidates, "n_accepted": int(keep.size),
        "acceptance_rate": keep.size / n_candidates if n_candidates else 0.0,
        "selection": "seeded minimum-degree greedy packing (data.overlap.spaced_subset)",
        "nearest_overlap_fraction": nearest["mean_overlap_fraction"],
        "measured_overlap_fraction": neighbours["mean_overlap_fraction"],
    }
    metrics = {**summary, "nearest": nearest, "measured": neighbours,
               "note": "disc overlap of equal discs of diameter D: nearest = with the nearest other "
                       f"position; measured = mean over the k = {METRIC_NEIGHBOURS} nearest"}
    metadata = {**source.metadata, **summary, "phase": "D"}
    return source.subset(keep, metadata=metadata), metrics


def ensure_phase_d(plan: StudyRecipe, dose: float,
                    phase_c: Optional[dict[str, StudyData]] = None) -> Path:
    unit, key = plan.phase_d_dir(dose), plan.phase_d_key(dose)
    if plan.cache.found(unit, key, _label("D", dose)):
        return unit
    plan.cache.require_writable([(unit, key)])
    with locked(unit):  # phase D lock first, phase C lock (if needed) inside it
        if plan.cache.found(unit, key, _label("D", dose)):
            return unit
        if phase_c is None:
            phase_c = ensure_phase_c(plan, [dose])[float(dose)]
        if phase_c is None:
            source_dir = plan.phase_c_dir(dose)
            phase_c = {split: load_dataset(source_dir / f"patched_{split}.npz") for split in SPLITS}

        def write(tmp: Path) -> None:
            for view in study.SPACED_VIEWS:
                for split in SPLITS:
                    data, metrics = _view_data(plan, phase_c[split], view, split, dose)
                    save_dataset(tmp / f"{view}_{split}.npz", data)
                    write_json(tmp / f"{view}_{split}_metrics.json", metrics)
                    logger.info("phase D dose=%s %s/%s: %d of %d positions ≥ %.1f px apart (D = %.1f px), "
                                "nearest-neighbour overlap %.3f", study.format_number(dose), view, split,
                                metrics["n_accepted"], metrics["n_candidates"], metrics["spacing_threshold_px"],
                                metrics["probe_diameter_px"], metrics["nearest_overlap_fraction"] or 0.0)

        plan.cache.build(unit, key, write)
    return unit


# ----------------------------------------------------------------------------------------------
# public API

def view_files(plan: StudyRecipe) -> tuple[Path, Path, Path]:
    """(unit dir, train, test) a job of this config reads."""
    if study.VIEWS[plan.view].overlap is None:
        unit = plan.phase_c_dir(plan.dose)
        return unit, unit / "patched_train.npz", unit / "patched_test.npz"
    unit = plan.phase_d_dir(plan.dose)
    return unit, unit / f"{plan.view}_train.npz", unit / f"{plan.view}_test.npz"


def dose_summary(plan: StudyRecipe, dose: float) -> dict:
    c_dir, d_dir = plan.phase_c_dir(dose), plan.phase_d_dir(dose)
    views = {view: {split: str(d_dir / f"{view}_{split}.npz") for split in SPLITS}
             | {f"{split}_metrics": str(d_dir / f"{view}_{split}_metrics.json") for split in SPLITS}
             for view in study.SPACED_VIEWS}
    return {"source": "synthetic", "dose": dose, "N": plan.N, "cache_entry": str(plan.root),
            "phase_c": {"dir": str(c_dir), **{split: str(c_dir / f"patched_{split}.npz") for split in SPLITS}},
            "phase_d": {"dir": str(d_dir), **views}}


GEOMETRY_KEYS = ("probe_diameter_px", "spacing_threshold_px", "n_candidates", "n_accepted",
                 "nearest_overlap_fraction", "measured_overlap_fraction")


def view_geometry(summary: dict) -> dict:
    """{view: {split: D, S, counts and measured overlaps}} read from a prepared dose's metrics files."""
    geometry = {}
    for view in study.SPACED_VIEWS:
        entry = summary["phase_d"][view]
        geometry[view] = {}
        for split in SPLITS:
            with open(entry[f"{split}_metrics"]) as handle:
                metrics = json.load(handle)
            geometry[view][split] = {key: metrics[key] for key in GEOMETRY_KEYS}
    return geometry


