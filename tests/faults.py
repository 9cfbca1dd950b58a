"""Storage faults for tests, injected where fly64-train opens files and makes directories
(`files.open_output`, `files.make_dirs`), so no test needs root, a small filesystem or a mount.

- `FullDisk(room, only)`: a filesystem with `room` bytes left; the write that overflows it raises
  OSError(ENOSPC) after writing what still fitted, as a real full disk does. With `only`, just the
  files whose name contains it draw on the room (a disk that fills up exactly at the bundle).
- `ReadOnly(directory)`: creating a file or directory under `directory` raises OSError(EROFS).
- `read_only_dir(directory)`: the real thing (chmod 0555) when not root; root ignores permission
  bits, so as root it injects `ReadOnly` instead.

A subprocess (the console script) gets them with `cli_with_faults(env)`: this module's `main`
installs what FLY64_TEST_FULL_DISK (bytes; FLY64_TEST_FULL_DISK_FOR: `only`) / FLY64_TEST_READ_ONLY
(a directory) ask for, then runs the CLI.
"""
from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path

from fly64_train import files

_REAL_OPEN = files.open_output
_REAL_MAKE_DIRS = files.make_dirs


class _LimitedFile:
    """A real file whose writes draw on a shared byte budget."""

    def __init__(self, handle, disk: "FullDisk"):
        self._handle, self._disk = handle, disk

    def write(self, data) -> int:
        data = bytes(data)
        fits = max(0, min(len(data), self._disk.room - self._disk.used))
        if fits:
            self._handle.write(data[:fits])
            self._disk.used += fits
        if fits < len(data):
            self._disk.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return len(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()
        return False

    def __getattr__(self, name):
        return getattr(self._handle, name)


class FullDisk:
    def __init__(self, room: int, only: str | None = None):
        self.room, self.only, self.used, self.refused = int(room), only, 0, 0

    def open(self, path, mode="wb"):
        if self.only and self.only not in Path(path).name:
            return _REAL_OPEN(path, mode)
        return _LimitedFile(_REAL_OPEN(path, mode), self)

    def install(self, monkeypatch=None) -> "FullDisk":
        _set(monkeypatch, "open_output", self.open)
        return self


class ReadOnly:
    def __init__(self, directory):
        self.directory = os.path.abspath(directory)

    def _inside(self, path) -> bool:
        path = os.path.abspath(os.fspath(path))
        return path == self.directory or path.startswith(self.directory + os.sep)

    def open(self, path, mode="wb"):
        if self._inside(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return _REAL_OPEN(path, mode)

    def make_dirs(self, path):
        if self._inside(path) and not Path(path).is_dir():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return _REAL_MAKE_DIRS(path)

    def install(self, monkeypatch=None) -> "ReadOnly":
        _set(monkeypatch, "open_output", self.open)
        _set(monkeypatch, "make_dirs", self.make_dirs)
        return self


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def read_only_dir(directory: Path, monkeypatch) -> str:
    """Make `directory` unwritable for this process: chmod when that binds (not root), else
    the injected ReadOnly. Returns which one was used."""
    directory.mkdir(parents=True, exist_ok=True)
    if not running_as_root():
        for path in [directory, *directory.rglob("*")]:
            if path.is_dir():
                path.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        return "chmod"
    ReadOnly(directory).install(monkeypatch)
    return "injected"


def restore_writable(directory: Path) -> None:
    for path in [directory, *directory.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)


def _set(monkeypatch, name, value) -> None:
    if monkeypatch is not None:
        monkeypatch.setattr(files, name, value)
    else:
        setattr(files, name, value)


def cli_with_faults() -> list[str]:
    """argv prefix that runs the console script with the faults FLY64_TEST_* ask for."""
    return [sys.executable, "-c", "import sys; sys.path.insert(0, %r); import faults; faults.main()"
            % str(Path(__file__).parent)]


def main() -> None:
    if os.environ.get("FLY64_TEST_FULL_DISK"):
        FullDisk(int(os.environ["FLY64_TEST_FULL_DISK"]), os.environ.get("FLY64_TEST_FULL_DISK_FOR")).install()
    if os.environ.get("FLY64_TEST_READ_ONLY"):
        ReadOnly(os.environ["FLY64_TEST_READ_ONLY"]).install()
    from fly64_train.cli import main as cli_main

    sys.argv[0] = "fly64-train"
    cli_main()
