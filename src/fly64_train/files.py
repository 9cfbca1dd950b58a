"""File utilities every writer in fly64-train shares: atomic writes, SHA-256, JSON conversion and
progress bars. Framework-free; nothing here knows what the files mean.

Atomic: a file is written under a temporary name in its own directory and renamed over the
target (`os.replace`), so a reader never sees a half-written file and a killed job leaves at most
a stray `.<name>.*.tmp` beside it.
"""
from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Union

PathLike = Union[str, os.PathLike]
CHUNK_BYTES = 1 << 20


# ----------------------------------------------------------------------------- atomic writes

@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` (mode 0644), on error it
    is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (flushed to disk before the rename)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------- SHA-256

def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- JSON

class _Unconvertible(Exception):
    pass


def _plain(value: Any) -> Any:
    """One non-JSON leaf as a JSON value: NumPy scalars and arrays → Python, paths → str, sets →
    sorted lists, enums → their value. Raises _Unconvertible for anything else."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    module = type(value).__module__
    if module == "numpy" or module.startswith("numpy."):
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    raise _Unconvertible(value)


def json_default(value: Any) -> Any:
    """`json.dumps(default=...)` hook: `_plain` conversions; anything else is a TypeError."""
    try:
        return _plain(value)
    except _Unconvertible:
        raise TypeError(f"value {value!r} of type {type(value).__name__} is not JSON-serialisable") from None


def jsonable(value: Any) -> Any:
    """A JSON-ready copy of a tree for records (manifests, metrics): `_plain` conversions, tuples →
    lists, non-finite floats → None (strict JSON), anything else → its str()."""
    if isinstance(value, dict):
        return {str(_key(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)) and not isinstance(value, enum.Enum):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        converted = _plain(value)
    except _Unconvertible:
        return str(value)
    return jsonable(converted)


def _key(key: Any) -> Any:
    try:
        return _plain(key)
    except _Unconvertible:
        return key


def write_json(path: PathLike, payload: Any) -> Path:
    """`jsonable(payload)` as sorted, indented JSON, written atomically."""
    return atomic_write_text(path, json.dumps(jsonable(payload), indent=2, sort_keys=True) + "\n")


def read_json(path: PathLike) -> Any:
    """Parsed JSON; FileNotFoundError as it is, anything unreadable as a ValueError naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({exc})") from exc


# ----------------------------------------------------------------------------- progress

def progress(total: int, description: str, unit: str = "it", unit_scale: bool = False,
             enabled: Optional[bool] = None):
    """A tqdm bar on stderr. enabled=None: only when stderr is a terminal (tqdm's disable=None);
    a disabled bar accepts update/set_postfix/close and draws nothing."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit=unit, unit_scale=unit_scale, file=sys.stderr, leave=False,
                disable=None if enabled is None else not enabled)
