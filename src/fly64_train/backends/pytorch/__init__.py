"""PyTorch backend of fly64-train (imports torch; chosen through registry.get_backend('pytorch'))."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import torch

from fly64_train.backends.base import Backend, Model, ModelSpec

__all__ = ["PyTorchBackend"]


def machine_threads() -> int:
    """Cores this process may run on (respects CPU affinity; os.cpu_count() otherwise)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# glibc mallopt parameters: serve allocations up to 1 GiB from the heap and never trim it.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_HEAP_LIMIT = 1 << 30


def retain_freed_memory() -> bool:
    """Let glibc keep freed tensor memory for reuse instead of returning it to the OS.

    torch's CPU allocator is plain malloc: activations of a few MB to tens of MB are mmap-ed
    and unmapped on every step, so each step page-faults its whole working set in again
    (~80 MB per training step at N=64, batch 16; ~5 % of a step, ~20 % of inference). With
    these two glibc settings the memory stays in the heap and is reused; the process keeps its
    peak footprint instead. TensorFlow's own allocator does the same. Linux/glibc only; a
    no-op elsewhere. Returns whether the settings were applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_LIMIT)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 2 * _HEAP_LIMIT))
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False


class PyTorchBackend(Backend):
    name = "pytorch"

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def _configure(self, threads: int, deterministic: bool, seed: int) -> None:
        """Thread count (0 = every core this process may use), determinism flags, torch seeds."""
        torch.set_num_threads(threads if threads > 0 else machine_threads())
        torch.use_deterministic_algorithms(bool(deterministic))
        torch.backends.mkldnn.deterministic = bool(deterministic)
        torch.manual_seed(int(seed))
        retain_freed_memory()

    def _build(self, spec: ModelSpec) -> Model:
        from fly64_train.backends.pytorch.adapter import TorchModel

        return TorchModel(spec)
