"""One sweep directory, one writer: the lock a sweep holds on its directory while it runs.

`<sweep dir>/.fly64_sweep.lock` carries an exclusive `flock` taken by the process that starts the
sweep (the sweep callback's `on_multirun_start`) and, as JSON, who holds it (pid, host, start
time). The kernel drops a flock when its process ends, however it ends (kill -9 too), so:

- a second sweep into the directory finds the flock held and stops at once, naming the directory
  and the holder;
- a lock file whose flock is free but which still names a holder was left by a sweep that died:
  the next sweep says so and takes it over;
- the jobs of a sweep never take the lock (under joblib or submitit they are other processes of
  the same sweep), only the process that starts it.

On release the file is emptied, not deleted: deleting a locked file would let a waiting process
lock the deleted file while a third locks a new one.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Optional

from fly64_train import files, manifest

LOCK_NAME = ".fly64_sweep.lock"


class SweepDirBusy(RuntimeError):
    """Another live sweep holds the sweep directory."""


def describe_holder(holder: Optional[dict]) -> str:
    if not holder:
        return "a process that has not yet recorded itself"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started_at')}"


class SweepLock:
    """`acquire()` or SweepDirBusy; `release()` when the sweep ends (also safe to call twice)."""

    def __init__(self, sweep_dir: files.PathLike):
        self.sweep_dir = Path(sweep_dir)
        self.path = self.sweep_dir / LOCK_NAME
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> Optional[dict]:
        """Take the lock; returns the dead holder it took over (None when the lock was free)."""
        if self._fd is not None:
            return None
        with files.storage_errors(self.path):
            files.make_dirs(self.sweep_dir)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise SweepDirBusy(f"sweep directory {self.sweep_dir} is in use by another sweep "
                               f"({describe_holder(holder)}); wait for it to end or set hydra.sweep.dir "
                               "to another directory") from None
        stale = _read(fd)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": manifest.utc_now()}
        try:
            with files.storage_errors(self.path):
                _write(fd, json.dumps(me, sort_keys=True).encode() + b"\n")
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return stale

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # free: the next sweep has no holder to report
        except OSError:
            pass
        finally:
            os.close(fd)  # drops the flock


def _read(fd: int) -> Optional[dict]:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _write(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
