"""The one list of backends. Adding a backend = one package under `backends/` whose class
subclasses `base.Backend`, plus one `BackendEntry` line in `BACKENDS` below; the config's
`backend.name` choices, the missing-framework error and the contract tests follow from it.

Framework-free: nothing here imports a framework until `get_backend` is called.
"""
from __future__ import annotations

import importlib
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter (oneDNN, CPU features) is noise in a job log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _short_openmp_spin() -> None:
    # torch's OpenMP (libgomp) reads this once, at import. By default idle threads spin ~300k
    # iterations at every barrier: on a busy machine (parallel sweep jobs) that makes a torch
    # step 2-10x slower; 1000 spins cost nothing measurable on an idle machine. A user's own
    # OMP_WAIT_POLICY wins.
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")


@dataclass(frozen=True)
class BackendEntry:
    name: str  # the value of backend.name
    target: str  # "package:Class" of the base.Backend subclass
    framework: str  # the module the backend imports (checked first, for a one-line error)
    requirement: str  # what to pip install when the framework is missing
    compiles: bool  # backend.compile=true is supported (else the config rejects it)
    before_import: Callable[[], None] = lambda: None  # environment the framework reads at import


BACKENDS: dict[str, BackendEntry] = {entry.name: entry for entry in (
    BackendEntry("tensorflow", "fly64_train.backends.tensorflow:TensorFlowBackend", "tensorflow", "tensorflow-cpu",
                 compiles=True, before_import=_quiet_tensorflow),
    BackendEntry("pytorch", "fly64_train.backends.pytorch:PyTorchBackend", "torch", "torch==2.13.0",
                 compiles=False, before_import=_short_openmp_spin),
)}


class BackendUnavailable(RuntimeError):
    """The chosen backend's framework cannot be imported (never silently replaced by another)."""


def entry(name: str) -> BackendEntry:
    name = str(name)
    if name not in BACKENDS:
        raise ValueError(f"backend.name={name!r} is not a backend; expected one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def available(name: str) -> bool:
    """Whether the backend's framework is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec(entry(name).framework) is not None


def get_backend(name: str):
    """A fresh instance of the named backend (a base.Backend; the contract module imports this registry,
    so this one does not import it back); BackendUnavailable (one line) if its framework is missing."""
    chosen = entry(name)
    chosen.before_import()
    try:
        _import_quietly(chosen.framework)
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend={chosen.name} needs {chosen.framework}, which cannot be imported ({exc}); "
            f"install it with: pip install '{chosen.requirement}'") from exc
    module_name, class_name = chosen.target.split(":")
    return getattr(importlib.import_module(module_name), class_name)()


# C++ start-up notes TensorFlow prints before absl logging is initialised (so TF_CPP_MIN_LOG_LEVEL
# cannot silence them): filtered out of the framework import's stderr; anything else passes.
_STARTUP_NOISE = ("All log messages before absl::InitializeLog()", "oneDNN custom operations are on")


def _import_quietly(module_name: str) -> None:
    if sys.modules.get(module_name) is not None:  # already imported (None marks a blocked import)
        return
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no file-backed stderr: a plain import
        importlib.import_module(module_name)
        return
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), stderr_fd)
        try:
            importlib.import_module(module_name)
        finally:
            os.dup2(saved, stderr_fd)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip() and not any(noise in line for noise in _STARTUP_NOISE):
                    print(line, file=sys.stderr)
