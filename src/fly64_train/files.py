"""File utilities every writer in fly64-train shares: atomic writes, storage faults, SHA-256, JSON
conversion and progress bars. Framework-free; nothing here knows what the files mean.

Atomic: a file is written under a temporary name in its own directory and renamed over the
target (`os.replace`), so a reader never sees a half-written file and a killed job leaves at most
a stray `.<name>.*.tmp` beside it.

Storage faults: every file fly64-train writes is opened by `open_output` and every directory made
by `make_dirs` (the one place tests inject a full disk or a read-only directory). A write that
fails for lack of room (ENOSPC, EDQUOT) or permission (EROFS, EACCES, EPERM) becomes a
`StorageError`: one line naming the path, the bytes it needed when known, and the setting that
chooses the directory (`configured_dirs` tells it which setting chose which directory).
"""
from __future__ import annotations

import contextlib
import contextvars
import enum
import errno
import hashlib
import json
import math
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Optional, Union

PathLike = Union[str, os.PathLike]
CHUNK_BYTES = 1 << 20


# ----------------------------------------------------------------------------- storage faults

# errno → what the line says; the first group is "no room", the second "not writable"
NO_ROOM = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
NOT_WRITABLE = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted"}

# (directory, setting that chose it) pairs of the running job, innermost last
_SETTINGS: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar("fly64_dir_settings",
                                                                                        default=())


@contextlib.contextmanager
def configured_dirs(settings: Mapping[PathLike, str]) -> Iterator[None]:
    """Within the block, a StorageError under one of these directories names its setting
    ({cache dir: "dataset.cache_dir", run dir: "hydra.run.dir"})."""
    added = tuple((os.path.abspath(os.fspath(d)), name) for d, name in settings.items())
    token = _SETTINGS.set(_SETTINGS.get() + added)
    try:
        yield
    finally:
        _SETTINGS.reset(token)


def setting_for(path: PathLike) -> Optional[str]:
    """The setting that chose the directory holding `path` (the deepest configured one), or None."""
    path = os.path.abspath(os.fspath(path))
    best = None
    for root, name in _SETTINGS.get():
        if (path == root or path.startswith(root.rstrip(os.sep) + os.sep)) and (best is None or len(root) > len(best[0])):
            best = (root, name)
    return best[1] if best else None


def format_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


class StorageError(OSError):
    """A write failed for lack of room or permission. str() is the one line a user needs: what
    happened, the path, the bytes needed (when known) and the setting to change."""

    def __init__(self, code: int, path: PathLike, needed: Optional[int] = None, setting: Optional[str] = None,
                 free: Optional[int] = None, purpose: Optional[str] = None):
        super().__init__(code, os.strerror(code), os.fspath(path))
        self.path, self.needed, self.free, self.purpose = Path(path), needed, free, purpose
        self.setting = setting or setting_for(path)

    @property
    def no_room(self) -> bool:
        return self.errno in NO_ROOM

    def __str__(self) -> str:
        if self.no_room:
            what = f"{NO_ROOM[self.errno]} writing {self.path}"
            if self.needed is not None:
                what += f" (needs {format_bytes(self.needed)}"
                what += f", {format_bytes(self.free)} free)" if self.free is not None else ")"
            fix = "free space there" + (f" or set {self.setting} to a directory on a filesystem with room"
                                        if self.setting else "")
        else:
            what = (f"cannot write {self.path}" + (f" ({self.purpose})" if self.purpose else "")
                    + f": {NOT_WRITABLE.get(self.errno, os.strerror(self.errno))}")
            fix = (f"set {self.setting} to a writable directory" if self.setting
                   else "make it writable or choose another directory")
        return f"{what}; {fix}"

    def __reduce__(self):  # picklable (joblib/submitit send a job's exception back)
        return (type(self), (self.errno, self.path, self.needed, self.setting, self.free, self.purpose))


def is_storage_fault(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and (exc.errno in NO_ROOM or exc.errno in NOT_WRITABLE)


@contextlib.contextmanager
def storage_errors(path: PathLike, needed: Optional[int] = None) -> Iterator[None]:
    """Turn a no-room / not-writable OSError raised in the block into a StorageError naming `path`."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        if not is_storage_fault(exc):
            raise
        raise StorageError(exc.errno, path, needed) from exc


def open_output(path: PathLike, mode: str = "wb") -> IO:
    """Open a file for writing. Every file fly64-train writes is opened here (tests inject faults here)."""
    return open(path, mode)


def make_dirs(path: PathLike) -> Path:
    """mkdir -p. Every directory fly64-train makes is made here (tests inject faults here)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_writable(directory: PathLike, setting: Optional[str] = None) -> Path:
    """Make `directory` if needed and prove it takes a file (a small one, synced): a read-only or
    unwritable directory, or a full filesystem, is a StorageError before any work starts."""
    directory = Path(directory)
    probe = directory / f".fly64-write-test.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        with storage_errors(directory):
            make_dirs(directory)
            with open_output(probe, "wb") as handle:
                handle.write(b"\0" * 4096)
                handle.flush()
                os.fsync(handle.fileno())
    except StorageError as exc:
        raise StorageError(exc.errno, directory, exc.needed, setting) from exc.__cause__
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return directory


def require_free_space(directory: PathLike, needed: int, setting: Optional[str] = None) -> None:
    """StorageError(ENOSPC) now, rather than half-way, when `directory`'s filesystem has less than
    `needed` bytes free."""
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise StorageError(errno.ENOSPC, directory, needed, setting, free=free)


# ----------------------------------------------------------------------------- atomic writes

def _temp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"


@contextlib.contextmanager
def atomic_output(path: PathLike, needed: Optional[int] = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` (mode 0644), on error it
    is removed and `path` is untouched. No room / no permission → StorageError naming `path`."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        with storage_errors(path, needed):
            make_dirs(path.parent)
            open_output(tmp, "xb").close()
            yield tmp
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_file(path: PathLike, needed: Optional[int] = None) -> Iterator[IO[bytes]]:
    """Yield a binary handle whose bytes replace `path` when the block ends without error (flushed
    and synced first, so a full disk shows here and not later); see atomic_output."""
    with atomic_output(path, needed) as tmp:
        with open_output(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (flushed to disk before the rename)."""
    with atomic_file(path, needed=len(data)) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def append_line(path: PathLike, line: str) -> None:
    """Append one line to a log-like file (not atomic: a torn last line is possible, never a lost one)."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    with storage_errors(path, len(data)):
        with open_output(path, "ab") as handle:
            handle.write(data)


# ----------------------------------------------------------------------------- SHA-256

def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (streaming: memory stays flat)."""
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
