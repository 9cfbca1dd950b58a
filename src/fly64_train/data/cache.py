"""A generic content-addressed cache of built files, shared safely by parallel processes.

An *entry* is a directory named by the first 16 hex digits of a key (the SHA-256 of everything
that shapes its data); it holds one or more *units*, directories of files built together, each
with its own key. A unit is complete only when its `complete.json` marker, written last, names
its key and the cache format version and lists every file with its size and SHA-256; a unit
without a valid marker, with another key, or with a file whose size or hash does not match is
damaged: it is reported once, moved aside to `<unit>.damaged-<time>` (never deleted) and rebuilt.
Every read checks the unit against its marker (sizes, and SHA-256 streamed once per process per
file version: a file whose size, mtime, ctime or inode changed is hashed again), so a caller is only
ever handed files that just verified.

A unit is built under a `filelock.FileLock` (`<unit>.lock`), into a temporary directory next to
it that is renamed into place once complete, so two processes asking at once build it once and
both get the complete copy, and a killed build leaves nothing that looks complete.

Storage faults: before anything is built the cache directory must take a file
(`files.check_writable`); a fault during a build is one `files.StorageError` line naming the unit,
the bytes it needed and the setting (`dataset.cache_dir`), and leaves nothing that reads as
complete (the entry's `study.json` is written only once a unit is). A read-only cache whose units
verify is read as it is. What the data is and how it is made is the caller's business
(data/recipe.py for the study's data).
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
from typing import Callable, Iterable, Optional

from filelock import FileLock, Timeout

from fly64_train import files
from fly64_train.files import sha256_file, write_json

logger = logging.getLogger(__name__)

MARKER = "complete.json"
BUILDS_LOG = "builds.jsonl"  # one line per build (unit, key, pid, seconds), in the entry directory
ENTRY_INFO = "study.json"  # what the entry was made from (readable)
SETTING = "dataset.cache_dir"  # the setting a storage fault names

# (path, size, mtime_ns, ctime_ns, inode) → SHA-256: each version of a file is hashed once per process
_VERIFIED: dict[tuple, str] = {}


class Cache:
    """One entry of the cache: its directory (`root`), key, what it is made from (`recipe`, recorded
    in study.json) and the format version of its files."""

    def __init__(self, cache_dir: Path, key: str, format_version: int, recipe: dict, setting: str = SETTING):
        self.key, self.format_version, self.recipe, self.setting = key, int(format_version), recipe, setting
        self.cache_dir = Path(cache_dir).expanduser().resolve()
        self.root = self.cache_dir / key[:16]

    def check(self, unit: Path, key: str, deep: bool = True) -> tuple[bool, str]:
        """(complete?, why not). deep=False checks sizes only (no hashing) — for dry runs."""
        if not unit.is_dir():
            return False, "missing"
        marker = read_marker(unit)
        if marker is None:
            return False, f"partial (no valid {MARKER})"
        if marker.get("key") != key or marker.get("format_version") != self.format_version:
            return False, "stale (built from other parameters)"
        listed = marker.get("files")
        if not isinstance(listed, dict) or not listed:
            return False, f"corrupt ({MARKER} lists no files)"
        for name, record in listed.items():
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

    def found(self, unit: Path, key: str, label: str) -> bool:
        """Is the unit complete? (logs what was found)."""
        complete, _ = self.check(unit, key)
        if complete:
            logger.info("found %s: %s", label, unit)
        return complete

    def require_writable(self, units: Iterable[tuple[Path, str]]) -> None:
        """Before building `units` ((dir, key) pairs not found complete): the cache must take files.
        A read-only cache holding a damaged unit says which unit it could not rebuild."""
        try:
            files.check_writable(self.cache_dir, self.setting)
        except files.StorageError as error:
            damaged = [(unit, why) for unit, why in ((u, self.check(u, k)[1]) for u, k in units) if why != "missing"]
            if damaged:
                error.purpose = f"to rebuild cache unit {damaged[0][0]}, which is {damaged[0][1]}"
            raise

    def build(self, unit: Path, key: str, write: Callable[[Path], None], needed: Optional[int] = None) -> None:
        """Under the unit's lock: build into a temp dir, write the marker last, rename into place.
        A damaged unit in the way is moved aside; a build that fails leaves only what it found."""
        name = f"{unit.parent.name}/{unit.name}"
        _, why = self.check(unit, key)
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
                write_json(tmp / MARKER, {"format_version": self.format_version, "unit": name, "key": key,
                                          "entry_key": self.key, "files": records,
                                          "built": {"pid": os.getpid(), "host": socket.gethostname(),
                                                    "seconds": round(seconds, 3),
                                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}})
                os.rename(tmp, unit)
        except files.StorageError as error:
            shutil.rmtree(tmp, ignore_errors=True)
            # name the unit, not a file in its temporary directory
            raise files.StorageError(error.errno, unit, needed or error.needed, self.setting) from error.__cause__
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            self._describe()
            files.append_line(self.root / BUILDS_LOG, json.dumps(
                {"unit": name, "key": key, "pid": os.getpid(), "seconds": round(seconds, 3),
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
        except OSError as error:  # the unit is complete and verifies; these records are for people
            logger.warning("cache entry %s: build record not written: %s", self.root, error)
        logger.info("built %s in %.1f s: %s", name, seconds, unit)

    def _describe(self) -> None:
        """study.json (what the entry was made from), written once its first unit is complete."""
        info = self.root / ENTRY_INFO
        if not info.exists():
            write_json(info, {"key": self.key, **self.recipe})


def read_marker(unit: Path) -> Optional[dict]:
    try:
        marker = json.loads((unit / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _file_sha256(path: Path, stat: os.stat_result) -> str:
    identity = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    if identity not in _VERIFIED:
        _VERIFIED[identity] = sha256_file(path)
    return _VERIFIED[identity]


def _move_aside(unit: Path, why: str) -> None:
    """A damaged unit is kept for inspection under a name no reader looks for, never deleted."""
    aside = unit.with_name(f"{unit.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}")
    with files.storage_errors(aside):
        os.rename(unit, aside)
    logger.warning("cache unit %s is %s: moved aside to %s, rebuilding it", unit, why, aside.name)


@contextlib.contextmanager
def locked(unit: Path):
    """Hold the unit's file lock (waiting, with a note, when another process builds it)."""
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
