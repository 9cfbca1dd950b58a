"""PyTorch backend of fly64-train (imports torch; chosen through base.get_backend('pytorch'))."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from fly64_train.backends.base import Backend, Model

__all__ = ["PyTorchBackend"]


def machine_threads() -> int:
    """Cores this process may run on (respects CPU affinity; os.cpu_count() otherwise)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class PyTorchBackend(Backend):
    name = "pytorch"

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def configure(self, threads: int, deterministic: bool, seed: int) -> None:
        """Thread count (0 = every core this process may use), determinism flags, torch seeds.

        Safe to call repeatedly: every call sets all three to the values given.
        """
        if threads < 0:
            raise ValueError(f"threads must be 0 (all cores) or a positive count, got {threads}")
        torch.set_num_threads(threads if threads > 0 else machine_threads())
        torch.use_deterministic_algorithms(bool(deterministic))
        torch.backends.mkldnn.deterministic = bool(deterministic)
        torch.manual_seed(int(seed))

    def build(self, params: dict[str, Any], probe: np.ndarray, seed: int) -> Model:
        from fly64_train.backends.pytorch.train import TorchModel

        return TorchModel(params, probe, seed)
