"""The model bundle `wts.h5.zip`: write, read and verify (framework-free).

Layout (format "fly64-bundle", version 1):

  wts.h5.zip
    manifest.json   sorted keys, indent 2: the caller's content (backend, framework versions,
                    resolved config, model geometry, intensity scale, `diffraction_norm` (the
                    training split's normalisation, which evaluation applies to the test split),
                    the legacy params for the record, ...) plus
                    `format`, `format_version` and `tensors` = [{name, shape, dtype}] sorted by name
    weights.h5      every tensor as an HDF5 dataset at its backend-neutral name
                    ('encoder/block0/conv0/kernel', 'log_scale', 'probe', ...), dtype preserved
                    (the probe natively complex64), contiguous, uncompressed

Identical inputs give identical bytes: the HDF5 file is built in memory with fixed library
format bounds (v110), no object timestamps (file, groups and datasets) and creation-ordered links
written in sorted order; zip members are STORED (no dependence on the zlib build) in a fixed
order with fixed timestamps (1980-01-01 00:00:00), creator system and permissions. The bundle is
written to a temporary name in its directory and renamed, so it is never seen half-written.
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import h5py
import numpy as np

from fly64_train.files import PathLike, atomic_write_bytes, json_default, sha256_file

FORMAT_NAME = "fly64-bundle"
FORMAT_VERSION = 1
BUNDLE_NAME = "wts.h5.zip"
MANIFEST_MEMBER = "manifest.json"
WEIGHTS_MEMBER = "weights.h5"
MEMBERS = (MANIFEST_MEMBER, WEIGHTS_MEMBER)  # written in this order

ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_EXTERNAL_ATTR = (0o100000 | 0o644) << 16  # regular file, rw-r--r--
ZIP_CREATE_SYSTEM = 3  # Unix, whatever the writing platform
_RESERVED_KEYS = ("format", "format_version", "tensors")


class BundleError(ValueError):
    """A bundle is missing, malformed, tampered with or of another format; the message names the file."""


@dataclass(frozen=True)
class BundleInfo:
    path: Path
    sha256: str
    size_bytes: int

    def manifest_fields(self) -> dict[str, Any]:
        """The fields a training_manifest.json records (and `verify_against_manifest` checks)."""
        return {"bundle_sha256": self.sha256, "bundle_size_bytes": self.size_bytes}


# ----------------------------------------------------------------------------- writing

def _check_weights(weights: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not weights:
        raise BundleError("cannot write a bundle without tensors (weights is empty)")
    arrays: dict[str, np.ndarray] = {}
    for name in sorted(weights):
        if not isinstance(name, str) or not name or name.startswith("/") or name.endswith("/") \
                or any(part in ("", ".", "..") for part in name.split("/")):
            raise BundleError(f"tensor name {name!r} is not a valid path like 'encoder/block0/conv0/kernel'")
        array = np.asarray(weights[name])
        if array.dtype.kind not in "biufc":
            raise BundleError(f"tensor {name!r} has dtype {array.dtype}; expected a numeric array")
        arrays[name] = np.array(array, order="C", copy=True)  # (ascontiguousarray would make 0-d 1-d)
    names = set(arrays)
    for name in arrays:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in names:
                raise BundleError(f"tensor {'/'.join(parts[:i])!r} is also a group of tensor {name!r}")
    return arrays


def _tensor_table(arrays: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    return [{"name": name, "shape": list(array.shape), "dtype": array.dtype.name}
            for name, array in arrays.items()]


def _creation_plist(kind):
    plist = h5py.h5p.create(kind)
    plist.set_obj_track_times(False)
    plist.set_link_creation_order(h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED)
    return plist


def weights_to_h5_bytes(weights: Mapping[str, Any]) -> bytes:
    """The deterministic HDF5 image of `weights` (sorted names, no timestamps, libver v110)."""
    return _h5_bytes(_check_weights(weights))


def _h5_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
    fapl.set_fileobj_driver(h5py.h5fd.fileobj_driver, buffer)
    fid = h5py.h5f.create(b"weights.h5", h5py.h5f.ACC_TRUNC,
                          fcpl=_creation_plist(h5py.h5p.FILE_CREATE), fapl=fapl)
    with h5py.File(fid) as handle:
        for name, array in arrays.items():
            *groups, leaf = name.split("/")
            group = handle
            for part in groups:
                if part not in group:
                    h5py.h5g.create(group.id, part.encode(), gcpl=_creation_plist(h5py.h5p.GROUP_CREATE))
                group = group[part]
            group.create_dataset(leaf, data=array, track_times=False, track_order=True)
    return buffer.getvalue()


def _manifest_bytes(manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    if not isinstance(manifest, Mapping):
        raise BundleError(f"manifest must be a dict, got {type(manifest).__name__}")
    content = {k: v for k, v in manifest.items() if k not in _RESERVED_KEYS}
    content.update(format=FORMAT_NAME, format_version=FORMAT_VERSION, tensors=_tensor_table(arrays))
    try:
        text = json.dumps(content, sort_keys=True, indent=2, allow_nan=False, default=json_default)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"manifest content cannot be written as JSON: {exc}") from exc
    return (text + "\n").encode("utf-8")


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = ZIP_EXTERNAL_ATTR
    info.create_system = ZIP_CREATE_SYSTEM
    return info


def bundle_bytes(weights: Mapping[str, Any], manifest: Mapping[str, Any]) -> bytes:
    """The complete, deterministic bytes of a bundle (what `write_bundle` puts on disk)."""
    arrays = _check_weights(weights)
    members = {MANIFEST_MEMBER: _manifest_bytes(manifest, arrays), WEIGHTS_MEMBER: _h5_bytes(arrays)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in MEMBERS:
            archive.writestr(_zip_info(name), members[name])
    return buffer.getvalue()


def write_bundle(path: PathLike, weights: Mapping[str, Any], manifest: Mapping[str, Any]) -> BundleInfo:
    """Write `wts.h5.zip` atomically; returns its path, SHA-256 and size."""
    path = Path(path)
    atomic_write_bytes(path, bundle_bytes(weights, manifest))
    return BundleInfo(path=path, sha256=sha256_file(path), size_bytes=path.stat().st_size)


# ----------------------------------------------------------------------------- reading

def _check_file(path: Path, expected_sha256: Optional[str], expected_size: Optional[int]) -> None:
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist")
    if not path.is_file():
        raise BundleError(f"bundle {path} is not a file")
    if expected_size is not None:
        size = path.stat().st_size
        if size != int(expected_size):
            raise BundleError(f"bundle {path} has {size} bytes; expected {int(expected_size)} "
                              "(recorded size): the file was changed or truncated")
    if expected_sha256 is not None:
        digest = sha256_file(path)
        if digest != str(expected_sha256).strip().lower():
            raise BundleError(f"bundle {path} has SHA-256 {digest}; expected {expected_sha256} "
                              "(recorded checksum): the file was changed")


def _read_members(path: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path, "r") as archive:
            names = set(archive.namelist())
            missing = [m for m in MEMBERS if m not in names]
            if missing:
                raise BundleError(f"bundle {path} lacks member(s) {missing}; a {FORMAT_NAME} holds "
                                  f"{list(MEMBERS)} (found {sorted(names)})")
            return {name: archive.read(name) for name in MEMBERS}
    except BundleError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise BundleError(f"bundle {path} is not a readable zip archive ({exc}); "
                          f"expected a {BUNDLE_NAME} written by fly64-train") from exc


def _parse_manifest(path: Path, data: bytes) -> dict[str, Any]:
    where = f"{path}:{MANIFEST_MEMBER}"
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle {where} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"bundle {where} must hold a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"bundle {where} has format {manifest.get('format')!r}; expected {FORMAT_NAME!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"bundle {where} has format_version {manifest.get('format_version')!r}; "
                          f"this fly64-train reads format_version {FORMAT_VERSION}")
    tensors = manifest.get("tensors")
    valid = isinstance(tensors, list) and all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("dtype"), str)
        and isinstance(t.get("shape"), list) and all(isinstance(s, int) and s >= 0 for s in t["shape"])
        for t in tensors)
    if not valid or not tensors:
        raise BundleError(f"bundle {where}: 'tensors' must be a non-empty list of "
                          "{name: str, shape: [int], dtype: str}")
    return manifest


def _read_weights(path: Path, data: bytes, tensors: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    where = f"{path}:{WEIGHTS_MEMBER}"
    weights: dict[str, np.ndarray] = {}
    try:
        with h5py.File(io.BytesIO(data), "r") as handle:
            stored: list[str] = []
            handle.visititems(lambda name, obj: stored.append(name) if isinstance(obj, h5py.Dataset) else None)
            listed = [t["name"] for t in tensors]
            missing = [name for name in listed if name not in stored]
            if missing:
                raise BundleError(f"bundle {where} lacks tensor(s) {missing} listed in {MANIFEST_MEMBER}")
            extra = sorted(set(stored) - set(listed))
            if extra:
                raise BundleError(f"bundle {where} holds tensor(s) {extra} not listed in {MANIFEST_MEMBER}")
            for tensor in tensors:
                name, shape, dtype = tensor["name"], tuple(tensor["shape"]), tensor["dtype"]
                dataset = handle[name]
                if dataset.shape != shape or dataset.dtype.name != dtype:
                    raise BundleError(f"bundle {where}: tensor {name!r} is {dataset.dtype.name}{list(dataset.shape)}; "
                                      f"{MANIFEST_MEMBER} lists {dtype}{list(shape)}")
                weights[name] = np.asarray(dataset[()], dtype=dataset.dtype).reshape(shape)
    except BundleError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"bundle {where} is not a readable HDF5 file ({exc})") from exc
    return weights


def read_bundle(path: PathLike, expected_sha256: Optional[str] = None,
                expected_size: Optional[int] = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(weights, manifest) of a bundle, after checking the file (and, when given, its size and SHA-256)."""
    path = Path(path)
    _check_file(path, expected_sha256, expected_size)
    members = _read_members(path)
    manifest = _parse_manifest(path, members[MANIFEST_MEMBER])
    weights = _read_weights(path, members[WEIGHTS_MEMBER], manifest["tensors"])
    return weights, manifest


def diffraction_norm(manifest: Mapping[str, Any], path: PathLike) -> float:
    """The training split's diffraction normalisation a bundle records (its manifest's `diffraction_norm`):
    evaluation scales the test split with it, so the same counts reach the network as the same input."""
    value = manifest.get("diffraction_norm")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise BundleError(f"bundle {path}: {MANIFEST_MEMBER} has no valid diffraction_norm (got {value!r}), the "
                          "training split's normalisation evaluation needs; the bundle predates it: retrain the job "
                          "to evaluate it")
    return float(value)


def verify_against_manifest(bundle_path: PathLike, training_manifest: Mapping[str, Any]) -> BundleInfo:
    """Check a bundle's size and SHA-256 against `bundle_size_bytes`/`bundle_sha256` of a training manifest."""
    path = Path(bundle_path)
    missing = [k for k in ("bundle_sha256", "bundle_size_bytes") if training_manifest.get(k) is None]
    if missing:
        raise BundleError(f"training manifest records no {missing} for bundle {path}: cannot verify it")
    expected_sha, expected_size = str(training_manifest["bundle_sha256"]), training_manifest["bundle_size_bytes"]
    try:
        expected_size = int(expected_size)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"training manifest bundle_size_bytes={expected_size!r} for bundle {path} "
                          "is not an integer") from exc
    _check_file(path, expected_sha, expected_size)
    return BundleInfo(path=path, sha256=expected_sha.strip().lower(), size_bytes=expected_size)
