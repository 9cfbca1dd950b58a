"""The NPZ data contract: load, validate and save one study dataset.

A dataset file is an NPZ archive (numpy's zip of .npy members) holding

| key                          | shape   | dtype     | meaning                                            |
|------------------------------|---------|-----------|----------------------------------------------------|
| `diffraction`                | (n,N,N) | float32   | diffraction AMPLITUDE sqrt(counts)/photon_scale     |
| `xcoords`, `ycoords`         | (n,)    | float64   | scan positions, pixels on the object grid (x=col)  |
| `probeGuess`                 | (N,N)   | complex64 | probe                                              |
| `objectGuess`                | (M,M')  | complex64 | ground-truth object (un-illuminated)               |
| `xcoords_start`/`ycoords_start` | (n,) | float64   | written as copies of the coordinates (readers of the original expect them) |
| `scan_index` (optional)      | (n,)    | int64     | index of each pattern in the full simulated scan   |
| `_metadata` (optional)       | ()      | unicode   | JSON object (never a pickle)                       |

The original project's layout also loads: `diff3d` instead of `diffraction`, a legacy (N,N,n)
diffraction stack (transposed to (n,N,N); detected from the probe's size, which is the
original's `shape[0] < shape[2]` rule made safe for n < N), and extra keys (`Y`, ...) which are
ignored. Arrays that need unpickling (object dtype, e.g. the original's `_metadata`) are never
unpickled: they are skipped with a warning naming them.

Every failure is a `ContractError` naming the file, the key, what was expected and what was found.
Files are written to a temporary name in the target directory and renamed, so a reader never sees
a half-written dataset; the archive's member timestamps are fixed, so the same data gives the same
bytes.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from fly64_train.files import atomic_file, json_default

PathLike = Union[str, os.PathLike]

DIFFRACTION_KEYS = ("diffraction", "diff3d")  # canonical first, then the original's name
REQUIRED_KEYS = ("xcoords", "ycoords", "probeGuess", "objectGuess")
METADATA_KEY = "_metadata"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: same arrays → same file bytes


class ContractError(ValueError):
    """A dataset file breaks the data contract. The message names file, key, expected and found."""


def _fail(source: str, key: Optional[str], expected: str, found: str) -> None:
    where = f"{source}: key '{key}'" if key else source
    raise ContractError(f"{where}: expected {expected}; found {found}")


@dataclass
class StudyData:
    """One dataset in memory (see the module docstring for the meaning of each array)."""

    diffraction: np.ndarray  # (n, N, N) float32 amplitude
    xcoords: np.ndarray  # (n,) float64, pixels on the object grid (column)
    ycoords: np.ndarray  # (n,) float64, pixels on the object grid (row)
    probe: np.ndarray  # (N, N) complex64
    obj: np.ndarray  # (M, M') complex64 ground truth (un-illuminated)
    metadata: dict = field(default_factory=dict)
    path: Optional[Path] = None
    scan_index: Optional[np.ndarray] = None  # (n,) int64 index into the full scan, if known

    @property
    def N(self) -> int:
        return int(self.diffraction.shape[-1])

    @property
    def n(self) -> int:
        return int(self.diffraction.shape[0])

    def subset(self, indices: np.ndarray, metadata: Optional[dict] = None) -> "StudyData":
        """A new StudyData holding only the patterns `indices` (same probe and object)."""
        indices = np.asarray(indices, dtype=np.int64)
        return StudyData(
            diffraction=self.diffraction[indices],
            xcoords=self.xcoords[indices],
            ycoords=self.ycoords[indices],
            probe=self.probe,
            obj=self.obj,
            metadata=dict(self.metadata if metadata is None else metadata),
            path=None,
            scan_index=None if self.scan_index is None else self.scan_index[indices],
        )


# ----------------------------------------------------------------------------------------------
# validation

def _describe(array: np.ndarray) -> str:
    return f"dtype {array.dtype}, shape {tuple(array.shape)}"


def _check_finite(source: str, key: str, array: np.ndarray) -> None:
    # min/max propagate NaN and expose ±inf without a full-size boolean temporary.
    if array.size == 0:
        return
    parts = (array.real, array.imag) if np.iscomplexobj(array) else (array,)
    if all(np.isfinite(part.min()) and np.isfinite(part.max()) for part in parts):
        return
    bad = ~np.isfinite(array)
    first = np.unravel_index(int(np.argmax(bad)), array.shape)
    _fail(source, key, "finite values", f"{int(bad.sum())} NaN/inf values (first at index {tuple(int(i) for i in first)})")


def _real_float(source: str, key: str, array: np.ndarray, out_dtype, what: str) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(out_dtype, copy=False)
    if np.issubdtype(array.dtype, np.integer) and key in DIFFRACTION_KEYS:
        _fail(source, key, f"{what} as a real floating array (float32); integers look like raw "
              "photon counts: store np.sqrt(counts).astype(np.float32) instead",
              _describe(array))
    _fail(source, key, f"{what} as a real floating array ({np.dtype(out_dtype).name})", _describe(array))
    raise AssertionError  # unreachable


def _complex(source: str, key: str, array: np.ndarray, what: str) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.complexfloating):
        _fail(source, key, f"{what} as a complex array (complex64)", _describe(array))
    return array.astype(np.complex64, copy=False)


def validate(data: StudyData, source: str = "<in memory>") -> StudyData:
    """Check every rule of the contract; return the data with canonical dtypes (float32/64, complex64).

    Raises ContractError naming `source`, the key, what was expected and what was found.
    """
    diffraction = _real_float(source, "diffraction", np.asarray(data.diffraction), np.float32,
                              "diffraction amplitude")
    probe = _complex(source, "probeGuess", np.asarray(data.probe), "the probe")
    obj = _complex(source, "objectGuess", np.asarray(data.obj), "the object")
    xcoords = _real_float(source, "xcoords", np.asarray(data.xcoords), np.float64, "x positions (pixels)")
    ycoords = _real_float(source, "ycoords", np.asarray(data.ycoords), np.float64, "y positions (pixels)")

    if diffraction.ndim != 3:
        _fail(source, "diffraction", "a 3-D stack (n, N, N) of patterns", _describe(diffraction))
    n, height, width = diffraction.shape
    if height != width:
        _fail(source, "diffraction", "square patterns (n, N, N)", f"patterns of {height}×{width}")
    if n == 0:
        _fail(source, "diffraction", "at least one pattern", "an empty stack (n = 0)")
    if probe.ndim != 2 or probe.shape != (height, width):
        _fail(source, "probeGuess", f"a ({height}, {width}) probe matching the pattern size N={height}",
              _describe(probe))
    if obj.ndim != 2:
        _fail(source, "objectGuess", "a 2-D object (M, M')", _describe(obj))
    for key, coords in (("xcoords", xcoords), ("ycoords", ycoords)):
        if coords.ndim != 1 or coords.shape[0] != n:
            _fail(source, key, f"one coordinate per pattern, shape ({n},)", _describe(coords))

    for key, array in (("diffraction", diffraction), ("probeGuess", probe), ("objectGuess", obj),
                       ("xcoords", xcoords), ("ycoords", ycoords)):
        _check_finite(source, key, array)
    smallest = float(diffraction.min())
    if smallest < 0:
        first = int(np.argmax((diffraction < 0).reshape(n, -1).any(axis=1)))
        _fail(source, "diffraction", "amplitudes ≥ 0 (sqrt of intensity)",
              f"negative values (minimum {smallest:g}, first in pattern {first})")

    obj_h, obj_w = obj.shape
    for key, coords, limit, axis in (("xcoords", xcoords, obj_w, "columns"), ("ycoords", ycoords, obj_h, "rows")):
        outside = (coords < 0) | (coords > limit - 1)
        if outside.any():
            first = int(np.argmax(outside))
            _fail(source, key, f"positions inside the object's {limit} {axis} [0, {limit - 1}]",
                  f"{int(outside.sum())} outside (first: index {first} at {coords[first]:g})")

    scan_index = data.scan_index
    if scan_index is not None:
        scan_index = np.asarray(scan_index)
        if not np.issubdtype(scan_index.dtype, np.integer) or scan_index.shape != (n,):
            _fail(source, "scan_index", f"integers of shape ({n},)", _describe(scan_index))
        scan_index = scan_index.astype(np.int64, copy=False)
    metadata = data.metadata if data.metadata is not None else {}
    if not isinstance(metadata, dict):
        _fail(source, METADATA_KEY, "a dict", type(metadata).__name__)

    return StudyData(diffraction=diffraction, xcoords=xcoords, ycoords=ycoords, probe=probe, obj=obj,
                     metadata=metadata, path=data.path, scan_index=scan_index)


# ----------------------------------------------------------------------------------------------
# loading

def _open_npz(path: Path):
    source = str(path)
    if not path.exists():
        raise ContractError(f"{source}: dataset file not found (expected an NPZ archive at this path)")
    if not path.is_file():
        raise ContractError(f"{source}: expected an NPZ file; found a directory or special file")
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as error:  # not a zip: numpy tried to read a pickle
        raise ContractError(f"{source}: expected an NPZ archive; found a file numpy cannot read "
                            f"without unpickling ({error})") from None
    except Exception as error:  # truncated / corrupt zip, unreadable file, ...
        raise ContractError(f"{source}: expected a readable NPZ archive; found a corrupt or "
                            f"truncated file ({type(error).__name__}: {error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ContractError(f"{source}: expected an NPZ archive (np.savez); found a single .npy array")
    return archive


def _read_members(archive, source: str) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    skipped = []
    for key in archive.files:
        try:
            arrays[key] = archive[key]
        except ValueError as error:
            if "allow_pickle" in str(error) or "Object arrays" in str(error):
                skipped.append(key)
                continue
            raise ContractError(f"{source}: key '{key}': expected a readable array; found a corrupt "
                                f"member ({error})") from None
        except Exception as error:
            raise ContractError(f"{source}: key '{key}': expected a readable array; found a corrupt "
                                f"or truncated member ({type(error).__name__}: {error})") from None
    if skipped:
        warnings.warn(f"{source}: skipped pickled (object-dtype) arrays {skipped}: they are never "
                      "unpickled; rewrite them as plain arrays (metadata as a JSON string) to keep them",
                      stacklevel=3)
    return arrays


def _parse_metadata(value: np.ndarray, source: str) -> dict:
    if value.ndim != 0 or value.dtype.kind not in "US":
        _fail(source, METADATA_KEY, "a JSON string (0-d unicode array)", _describe(value))
    text = value.item()
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        _fail(source, METADATA_KEY, "a JSON object string", f"invalid JSON ({error})")
    if not isinstance(parsed, dict):
        _fail(source, METADATA_KEY, "a JSON object", f"JSON {type(parsed).__name__}")
    return parsed


def load_dataset(path: PathLike) -> StudyData:
    """Read and validate one dataset NPZ (canonical or the original's layout); never unpickles."""
    path = Path(path)
    source = str(path)
    with _open_npz(path) as archive:
        arrays = _read_members(archive, source)

    diffraction_key = next((key for key in DIFFRACTION_KEYS if key in arrays), None)
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if diffraction_key is None:
        missing.insert(0, "diffraction")
    if missing:
        raise ContractError(f"{source}: key {', '.join(repr(m) for m in missing)}: expected the required "
                            f"keys diffraction (or diff3d), {', '.join(REQUIRED_KEYS)}; found only "
                            f"{sorted(arrays)}")

    diffraction = arrays[diffraction_key]
    probe = arrays["probeGuess"]
    if diffraction.ndim == 3 and probe.ndim == 2:
        # Legacy (N, N, n) stacks: the pattern axes are the first two (they match the probe).
        if diffraction.shape[1:] != probe.shape and diffraction.shape[:2] == probe.shape:
            diffraction = np.ascontiguousarray(np.moveaxis(diffraction, -1, 0))
    metadata = _parse_metadata(arrays[METADATA_KEY], source) if METADATA_KEY in arrays else {}

    scan_index = arrays.get("scan_index")
    if scan_index is not None:
        n = diffraction.shape[0] if diffraction.ndim else -1
        if not (np.issubdtype(scan_index.dtype, np.integer) and scan_index.shape == (n,)):
            warnings.warn(f"{source}: key 'scan_index' ignored: expected integers of shape ({n},); "
                          f"found {_describe(scan_index)}", stacklevel=2)
            scan_index = None

    data = StudyData(diffraction=diffraction, xcoords=arrays["xcoords"], ycoords=arrays["ycoords"],
                     probe=probe, obj=arrays["objectGuess"], metadata=metadata, path=path,
                     scan_index=scan_index)
    if diffraction_key != "diffraction":
        data.metadata.setdefault("loaded_from_key", diffraction_key)
    # Rename the key in error messages when the file used the original's name.
    try:
        return validate(data, source)
    except ContractError as error:
        if diffraction_key != "diffraction":
            raise ContractError(str(error).replace("key 'diffraction'", f"key '{diffraction_key}'")) from None
        raise


def load_array(path: PathLike, keys: tuple[str, ...], what: str) -> np.ndarray:
    """One finite complex 2-D array (a probe or an object) from a user's NPZ, as complex64.

    `keys` are tried in order (e.g. ("probeGuess", "probe")). Never unpickles.
    """
    path = Path(path)
    source = str(path)
    with _open_npz(path) as archive:
        key = next((k for k in keys if k in archive.files), None)
        if key is None:
            raise ContractError(f"{source}: key {keys[0]!r}: expected {what} under one of {list(keys)}; "
                                f"found only {sorted(archive.files)}")
        arrays = _read_members(_Only(archive, key), source)
    if key not in arrays:
        raise ContractError(f"{source}: key {key!r}: expected {what} as a complex array; found a pickled "
                            "object array (never unpickled)")
    array = _complex(source, key, arrays[key], what)
    if array.ndim != 2:
        _fail(source, key, f"{what} as a 2-D array", _describe(array))
    _check_finite(source, key, array)
    return array


class _Only:
    """View of an NpzFile exposing one member (so `_read_members` reads just that one)."""

    def __init__(self, archive, key: str):
        self._archive, self.files = archive, [key]

    def __getitem__(self, key: str):
        return self._archive[key]


# ----------------------------------------------------------------------------------------------
# saving



def metadata_json(metadata: dict) -> str:
    """The `_metadata` JSON text (sorted keys; numpy scalars and paths converted)."""
    return json.dumps(metadata, sort_keys=True, default=json_default)


def write_npz(path: PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed NPZ atomically (files.atomic_file).

    Member timestamps are fixed, so identical arrays give identical bytes.
    """
    needed = sum(np.asanyarray(value).nbytes for value in arrays.values())
    with atomic_file(path, needed=needed) as raw:
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for key, value in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                with archive.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def save_dataset(path: PathLike, data: StudyData) -> None:
    """Validate and write `data` in the canonical layout (atomic; never a half-written file)."""
    path = Path(path)
    data = validate(data, f"{path} (being written)")
    arrays = {
        "diffraction": data.diffraction,
        "xcoords": data.xcoords,
        "ycoords": data.ycoords,
        "xcoords_start": data.xcoords,
        "ycoords_start": data.ycoords,
        "probeGuess": data.probe,
        "objectGuess": data.obj,
    }
    if data.scan_index is not None:
        arrays["scan_index"] = data.scan_index
    arrays[METADATA_KEY] = np.array(metadata_json(data.metadata))
    write_npz(path, arrays)
