"""Content-addressed cache of the study datasets, shared safely by parallel jobs.

Layout (cache_dir is `DatasetConfig.cache_dir`, relative to the current directory):

    <cache_dir>/<key[:16]>/study.json                       what the entry was made from (readable)
    <cache_dir>/<key[:16]>/builds.jsonl                     one line per build (unit, pid, seconds)
    <cache_dir>/<key[:16]>/phase_c/dose_<d>/patched_{train,test}.npz        + complete.json
    <cache_dir>/<key[:16]>/phase_d/dose_<d>/{view}_{split}.npz              + complete.json
    <cache_dir>/<key[:16]>/phase_d/dose_<d>/{view}_{split}_metrics.json

`key` is the SHA-256 of everything that shapes the data — source, the object kind and size, the
scan geometry (step, row spacing, jitter), the probe/object file paths and the SHA-256 of their
contents, the simulation and subsampling seeds, N and the format version (2 since the fly-scan
geometry: a cache written by an earlier version is never read as today's data). Each `phase_c/dose_<d>` and `phase_d/dose_<d>` directory is one *unit*
with its own key (the entry key + phase + dose [+ the views' spacings]) recorded in its
`complete.json`, which lists every file with its size and SHA-256 and is written last. Every read
checks the unit against its marker (sizes, and SHA-256 streamed once per process per file
version: a file whose size, mtime, ctime or inode changed is hashed again). A unit without a
valid marker, with another key, or with a file whose size or hash does not match is damaged: it is
reported once, moved aside to `<unit>.damaged-<time>` (never deleted) and rebuilt; a job is only
ever handed files that just verified.

Storage faults: before anything is built the cache directory must take a file
(`files.check_writable`), and before a simulation its filesystem must have room for the phase C
files (`files.require_free_space`); a fault during a build is one `files.StorageError` line naming
the unit, the bytes it needed and `dataset.cache_dir`, and leaves nothing that reads as complete
(`study.json` is written only once a unit is). A read-only cache whose units verify is read as it is.

A unit is built under a `filelock.FileLock` (`<unit>.lock`), into a temporary directory next to
it that is renamed into place once complete, so two processes asking at once build it once and
both get the complete copy, and a killed build leaves nothing that looks complete. Lock order is
always phase D before phase C (never the reverse), so jobs cannot deadlock.

Dataset files are written with fixed archive timestamps: the same config gives the same bytes.
Phase C files hold every scan position of a split; phase D files hold the positions of a view,
kept at least S = (1 − f)·D apart, D the probe's footprint diameter (the disc holding 90 % of
|P|², `physics.footprint_diameter`, measured on the probe actually used: synthetic or the user's).
Each view's metrics JSON records D, S, the counts and the measured disc overlap at D, with the
nearest neighbour and with the k = K − 1 nearest.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
from filelock import FileLock, Timeout

from fly64_train import physics, study
from fly64_train.config import TrainingConfig
from fly64_train.data import simulate
from fly64_train.data.contract import ContractError, StudyData, load_array, load_dataset, save_dataset
from fly64_train.data.overlap import overlap_metrics, spaced_subset
from fly64_train import files
from fly64_train.files import sha256_bytes, sha256_file, write_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3  # bump whenever the simulation or the file layout changes
MARKER = "complete.json"
SPLITS = ("train", "test")
METRIC_NEIGHBOURS = study.NEIGHBOR_COUNT - 1  # k nearest others per position in the overlap metric
SETTING = "dataset.cache_dir"


# ----------------------------------------------------------------------------------------------
# keys and paths

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


class _Plan:
    """Everything the cache needs to know about one config (no data is touched)."""

    def __init__(self, config: TrainingConfig):
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
        self.key = study.config_fingerprint(self.params)
        self.cache_dir = Path(dataset.cache_dir).expanduser().resolve()
        self.root = self.cache_dir / self.key[:16]
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


def _phase_c_files() -> list[str]:
    return [f"patched_{split}.npz" for split in SPLITS]


def _phase_d_files() -> list[str]:
    return [f"{view}_{split}{suffix}" for view in study.SPACED_VIEWS for split in SPLITS
            for suffix in (".npz", "_metrics.json")]


# ----------------------------------------------------------------------------------------------
# units: verify, lock, build atomically

def _read_marker(unit: Path) -> Optional[dict]:
    try:
        marker = json.loads((unit / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


# (path, size, mtime_ns, ctime_ns, inode) → SHA-256: each version of a file is hashed once per process
_VERIFIED: dict[tuple, str] = {}


def _file_sha256(path: Path, stat: os.stat_result) -> str:
    identity = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    if identity not in _VERIFIED:
        _VERIFIED[identity] = sha256_file(path)
    return _VERIFIED[identity]


def _check_unit(unit: Path, key: str, deep: bool = True) -> tuple[bool, str]:
    """(complete?, why not). deep=False checks sizes only (no hashing) — for dry runs."""
    if not unit.is_dir():
        return False, "missing"
    marker = _read_marker(unit)
    if marker is None:
        return False, f"partial (no valid {MARKER})"
    if marker.get("key") != key or marker.get("format_version") != FORMAT_VERSION:
        return False, "stale (built from other parameters)"
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return False, f"corrupt ({MARKER} lists no files)"
    for name, record in files.items():
        path = unit / name
        try:
            stat = path.stat()
        except OSError:
            return False, f"partial ({name} is missing)"
        if stat.st_size != record.get("bytes"):
            return False, f"corrupt ({name} has {stat.st_size} bytes, expected {record.get('bytes')})"
        if deep and _file_sha256(path, stat) != record.get("sha256"):
            return False, f"corrupt ({name} does not match its SHA-256)"
    return True, "complete"


def _found(unit: Path, key: str, phase: str, dose: float) -> bool:
    """Is the unit complete? (logs what was found)."""
    complete, _ = _check_unit(unit, key)
    if complete:
        logger.info("found phase %s dose=%s: %s", phase, study.format_number(dose), unit)
    return complete


def _require_writable(plan: "_Plan", units: Iterable[tuple[Path, str]]) -> None:
    """Before building `units` ((dir, key) pairs not found complete): the cache must take files.
    A read-only cache holding a damaged unit says which unit it could not rebuild."""
    try:
        files.check_writable(plan.cache_dir, SETTING)
    except files.StorageError as error:
        damaged = [(unit, why) for unit, why in ((u, _check_unit(u, k)[1]) for u, k in units) if why != "missing"]
        if damaged:
            error.purpose = f"to rebuild cache unit {damaged[0][0]}, which is {damaged[0][1]}"
        raise


def _move_aside(unit: Path, why: str) -> None:
    """A damaged unit is kept for inspection under a name no reader looks for, never deleted."""
    aside = unit.with_name(f"{unit.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}")
    with files.storage_errors(aside):
        os.rename(unit, aside)
    logger.warning("cache unit %s is %s: moved aside to %s, rebuilding it", unit, why, aside.name)


@contextlib.contextmanager
def _locked(unit: Path):
    with files.storage_errors(unit.parent):
        files.make_dirs(unit.parent)
    lock = FileLock(str(unit) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for another process building %s", unit)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _build_unit(unit: Path, key: str, plan: _Plan, write: Callable[[Path], None], needed: Optional[int] = None) -> None:
    """Under the unit's lock: build into a temp dir, write the marker last, rename into place.
    A damaged unit in the way is moved aside; a build that fails leaves only what it found."""
    name = f"{unit.parent.name}/{unit.name}"
    complete, why = _check_unit(unit, key)
    if why != "missing":
        _move_aside(unit, why)
    for stale in unit.parent.glob(f".tmp-{unit.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed build (we hold the lock)
    tmp = unit.parent / f".tmp-{unit.name}-{os.getpid()}-{time.time_ns()}"
    started = time.perf_counter()
    try:
        with files.storage_errors(unit, needed):
            files.make_dirs(tmp)
            write(tmp)
            records = {}
            for path in sorted(tmp.iterdir()):
                records[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
            seconds = time.perf_counter() - started
            write_json(tmp / MARKER, {"format_version": FORMAT_VERSION, "unit": name, "key": key,
                                      "entry_key": plan.key, "files": records,
                                      "built": {"pid": os.getpid(), "host": socket.gethostname(),
                                                "seconds": round(seconds, 3),
                                                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}})
            os.rename(tmp, unit)
    except files.StorageError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        # name the unit, not a file in its temporary directory
        raise files.StorageError(error.errno, unit, needed or error.needed, SETTING) from error.__cause__
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        _describe_entry(plan)
        files.append_line(plan.root / "builds.jsonl", json.dumps(
            {"unit": name, "key": key, "pid": os.getpid(), "seconds": round(seconds, 3),
             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
    except OSError as error:  # the unit is complete and verifies; these records are for people
        logger.warning("cache entry %s: build record not written: %s", plan.root, error)
    logger.info("built %s in %.1f s: %s", name, seconds, unit)


def _file_bytes(data: StudyData) -> int:
    """About what `save_dataset` writes for `data` (its arrays, coordinates twice)."""
    arrays = (data.diffraction, data.xcoords, data.ycoords, data.xcoords, data.ycoords, data.probe, data.obj,
              data.scan_index if data.scan_index is not None else np.empty(0))
    return sum(np.asarray(a).nbytes for a in arrays)


def _describe_entry(plan: _Plan) -> None:
    """study.json (what the entry was made from), written once its first unit is complete."""
    info = plan.root / "study.json"
    if not info.exists():
        write_json(info, {"key": plan.key, **plan.params})


# ----------------------------------------------------------------------------------------------
# phase C

def _make_probe(plan: _Plan) -> tuple[np.ndarray, dict]:
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


def _base_arrays(plan: _Plan) -> tuple[np.ndarray, np.ndarray, dict, dict]:
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


def _positions(plan: _Plan, obj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scan = plan.params["scan"]
    try:
        return simulate.fly_scan_positions(obj.shape, plan.N, scan["step_px"], scan["row_spacing_px"],
                                           scan["jitter_px"], plan.params["simulation_seed"])
    except ValueError as error:
        if plan.object_path:
            raise ContractError(f"{plan.object_path}: key 'objectGuess': {error}") from None
        raise


def _simulate_phase_c(plan: _Plan, doses: list[float]) -> Iterator[tuple[float, dict[str, StudyData]]]:
    """Phase C data of several doses from one far-field pass, one dose at a time: (dose, {split: data}).

    The scan is simulated in split order (train positions, then test positions, each in scan
    order), so each split is a view of the simulated stack, not a copy; `scan_index` gives each
    pattern's index in the scan.
    """
    obj, probe, obj_info, probe_info = _base_arrays(plan)
    xcoords, ycoords = _positions(plan, obj)
    # every dose's phase C files must fit: say so now, not after the simulation, half-way through
    needed = len(doses) * (xcoords.size * plan.N * plan.N * 4 + 2 * (obj.nbytes + probe.nbytes))
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
    amplitude, energy = simulate.far_field(obj, probe, xcoords[order], ycoords[order])
    mean_energy = float(energy.mean())
    for dose in doses:
        scale = physics.dose_scale(mean_energy, dose)
        diffraction = simulate.add_noise(amplitude, scale, seed, dose)
        seconds = time.perf_counter() - started
        logger.info("simulated dose=%s: %d patterns, %.1f s since the start (%.0f patterns/s)",
                    study.format_number(dose), xcoords.size, seconds,
                    xcoords.size * (doses.index(dose) + 1) / max(seconds, 1e-9))
        splits = {}
        for name in SPLITS:
            lo, hi = bounds[name]
            part = diffraction[lo:hi]
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
                "object": obj_info, "probe": probe_info,
                "probe_diameter_px": probe_info["footprint_diameter_px"],
                "scan": {"kind": "fly scan: rows along x, serpentine, Gaussian positioning jitter",
                         **plan.params["scan"]},
                "n_positions": int(xcoords.size), "n_patterns": int(hi - lo),
                "split_rule": {"axis": "y", "split_point": split, "train": "y < split_point",
                               "test": "y >= split_point"},
                "entry_key": plan.key,
            }
            index = members[name]
            splits[name] = StudyData(diffraction=part, xcoords=xcoords[index], ycoords=ycoords[index],
                                     probe=probe, obj=obj, metadata=metadata, scan_index=index)
        yield dose, splits
        del diffraction, splits


def _ensure_phase_c(plan: _Plan, doses: Iterable[float], keep: bool = True) -> dict[float, Optional[dict[str, StudyData]]]:
    """Find or build the phase C units of `doses` (one simulation pass for all missing ones).

    Returns {dose: in-memory data if it was just built and `keep`, else None}. With keep=False
    only one dose's diffraction is in memory at a time.
    """
    doses = sorted({float(d) for d in doses})
    built: dict[float, Optional[dict[str, StudyData]]] = {dose: None for dose in doses}
    # A complete unit is used without taking its lock (so a read-only cache works); the others
    # are re-checked under their locks, since another process may have built them meanwhile.
    pending = [dose for dose in doses if not _found(plan.phase_c_dir(dose), plan.phase_c_key(dose), "C", dose)]
    if not pending:
        return built
    _require_writable(plan, [(plan.phase_c_dir(dose), plan.phase_c_key(dose)) for dose in pending])
    with contextlib.ExitStack() as stack:
        for dose in pending:  # sorted order: no deadlock between processes asking for several
            stack.enter_context(_locked(plan.phase_c_dir(dose)))
        missing = [dose for dose in pending
                   if not _found(plan.phase_c_dir(dose), plan.phase_c_key(dose), "C", dose)]
        for dose, splits in (_simulate_phase_c(plan, missing) if missing else ()):
            def write(tmp: Path, splits=splits) -> None:
                for name, part in splits.items():
                    save_dataset(tmp / f"patched_{name}.npz", part)
            _build_unit(plan.phase_c_dir(dose), plan.phase_c_key(dose), plan, write,
                        needed=sum(_file_bytes(part) for part in splits.values()))
            built[dose] = splits if keep else None
    return built


# ----------------------------------------------------------------------------------------------
# phase D

def _view_data(plan: _Plan, source: StudyData, view: str, split: str, dose: float) -> tuple[StudyData, dict]:
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


def _ensure_phase_d(plan: _Plan, dose: float,
                    phase_c: Optional[dict[str, StudyData]] = None) -> Path:
    unit, key = plan.phase_d_dir(dose), plan.phase_d_key(dose)
    if _found(unit, key, "D", dose):
        return unit
    _require_writable(plan, [(unit, key)])
    with _locked(unit):  # phase D lock first, phase C lock (if needed) inside it
        if _found(unit, key, "D", dose):
            return unit
        if phase_c is None:
            phase_c = _ensure_phase_c(plan, [dose])[float(dose)]
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

        _build_unit(unit, key, plan, write)
    return unit


# ----------------------------------------------------------------------------------------------
# public API

def _npz_paths(config: TrainingConfig) -> tuple[Path, Path]:
    train, test = config.dataset.train_path, config.dataset.test_path
    if not train or not test:
        raise ContractError("dataset=npz needs dataset.train_path and dataset.test_path "
                            f"(got train_path={train!r}, test_path={test!r})")
    return Path(train), Path(test)


def _view_files(plan: _Plan) -> tuple[Path, Path, Path]:
    """(unit dir, train, test) a job of this config reads."""
    if study.VIEWS[plan.view].overlap is None:
        unit = plan.phase_c_dir(plan.dose)
        return unit, unit / "patched_train.npz", unit / "patched_test.npz"
    unit = plan.phase_d_dir(plan.dose)
    return unit, unit / f"{plan.view}_train.npz", unit / f"{plan.view}_test.npz"


def dataset_paths(config: TrainingConfig) -> tuple[Path, Path]:
    """(train, test) NPZ paths for this job, building the synthetic data if it is not cached.

    source=synthetic: phase C `patched_{train,test}.npz` for the baseline view, phase D
    `{view}_{train,test}.npz` for dense/sparse, at config.dose and config.model.N.
    source=npz: the user's files, validated with `load_dataset` (patterns must be model.N wide)
    and returned unchanged.
    """
    if config.dataset.source == "npz":
        paths = _npz_paths(config)
        for path in paths:
            data = load_dataset(path)
            if data.N != config.model.N:
                raise ContractError(f"{path}: key 'diffraction': expected {config.model.N}×{config.model.N} "
                                    f"patterns (model.N={config.model.N}); found {data.N}×{data.N}")
        return paths
    if config.dataset.source != "synthetic":
        raise ValueError(f"dataset.source={config.dataset.source!r} is not allowed: expected synthetic or npz")
    plan = _Plan(config)
    if study.VIEWS[plan.view].overlap is None:
        _ensure_phase_c(plan, [plan.dose])
    else:
        _ensure_phase_d(plan, plan.dose)
    _, train, test = _view_files(plan)
    return train, test


def planned_paths(config: TrainingConfig) -> dict:
    """What `dataset_paths` would return or build, without building anything (dry runs).

    Keys: source, train, test, cache_entry (the unit directory, None for npz), exists (bool: the
    files are there and the marker matches; hashes are not re-checked), key (entry key or None),
    phase_c / phase_d (unit directories). Paths are strings.
    """
    if config.dataset.source == "npz":
        train, test = _npz_paths(config)
        return {"source": "npz", "train": str(train), "test": str(test), "cache_entry": None,
                "exists": train.is_file() and test.is_file(), "key": None, "phase_c": None, "phase_d": None}
    plan = _Plan(config)
    unit, train, test = _view_files(plan)
    key = plan.phase_c_key(plan.dose) if unit == plan.phase_c_dir(plan.dose) else plan.phase_d_key(plan.dose)
    exists, _ = _check_unit(unit, key, deep=False)
    return {"source": "synthetic", "train": str(train), "test": str(test), "cache_entry": str(unit),
            "exists": exists, "key": plan.key, "phase_c": str(plan.phase_c_dir(plan.dose)),
            "phase_d": str(plan.phase_d_dir(plan.dose))}


def _dose_summary(plan: _Plan, dose: float) -> dict:
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


def prepare_dose(config: TrainingConfig) -> dict:
    """Build (or find) phase C and both phase D views for config.dose; return every path (strings).

    {"source", "dose", "N", "cache_entry", "phase_c": {"dir", "train", "test"},
     "phase_d": {"dir", "dense": {"train", "test", "train_metrics", "test_metrics"}, "sparse": {...}}}
    source=npz: validates the user's files and returns {"source": "npz", "train", "test"}.
    """
    if config.dataset.source == "npz":
        train, test = dataset_paths(config)
        return {"source": "npz", "train": str(train), "test": str(test)}
    plan = _Plan(config)
    built = _ensure_phase_c(plan, [plan.dose])[plan.dose]
    _ensure_phase_d(plan, plan.dose, phase_c=built)
    return _dose_summary(plan, plan.dose)


def prepare_study(config: TrainingConfig, doses: Iterable[float] = study.DOSES) -> dict:
    """Build (or find) phase C and both views for several doses, sharing one far-field pass.

    Returns {format_number(dose): prepare_dose-style summary}.
    """
    if config.dataset.source == "npz":
        return {"npz": prepare_dose(config)}
    plan = _Plan(config)
    doses = sorted({float(d) for d in doses})
    _ensure_phase_c(plan, doses, keep=False)  # one dose in memory at a time; phase D reads the files
    result = {}
    for dose in doses:
        _ensure_phase_d(plan, dose)
        result[study.format_number(dose)] = _dose_summary(plan, dose)
    return result
