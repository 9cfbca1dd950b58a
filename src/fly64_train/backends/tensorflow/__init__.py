"""TensorFlow backend of fly64-train: PtychoPINN as plain tf.Variables + tf.function steps.

`TensorFlowBackend` is what `registry.get_backend('tensorflow')` returns; `build` gives a
`TensorFlowModel` (adapter.py) around the network and physics layers of model.py.
"""
from __future__ import annotations

import os
import warnings

import tensorflow as tf

from fly64_train.backends import base
from fly64_train.backends.tensorflow.model import PtychoPINN
from fly64_train.backends.tensorflow.adapter import TensorFlowModel

__all__ = ["TensorFlowBackend", "TensorFlowModel", "PtychoPINN"]

# Inter-op pool size (capped by the thread count): independent ops (the two decoders) may run
# concurrently, sharing the intra-op pool. 1 and 2 measure the same on 2 cores.
DEFAULT_INTER_OP_THREADS = 2


def _set_threads(kind: str, wanted: int) -> None:
    getter = getattr(tf.config.threading, f"get_{kind}_op_parallelism_threads")
    setter = getattr(tf.config.threading, f"set_{kind}_op_parallelism_threads")
    current = getter()
    if current == wanted:
        return
    try:
        setter(wanted)
    except RuntimeError:
        # The runtime is initialised (an earlier job in this process); threads are fixed now.
        effective = current or os.cpu_count() or 1
        if effective != wanted:
            warnings.warn(f"TensorFlow {kind}-op threads are already fixed at {effective} in this process "
                          f"(the runtime is initialised); cannot change to {wanted}", RuntimeWarning,
                          stacklevel=3)


class TensorFlowBackend(base.Backend):
    name = "tensorflow"

    def versions(self) -> dict[str, str]:
        import keras
        return {"tensorflow": tf.__version__, "keras": keras.__version__}

    def _configure(self, threads: int, deterministic: bool, seed: int) -> None:
        count = threads or os.cpu_count() or 1
        _set_threads("intra", count)
        _set_threads("inter", min(count, DEFAULT_INTER_OP_THREADS))
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        else:
            from tensorflow.python.framework import config as tf_config
            if getattr(tf_config, "is_op_determinism_enabled", lambda: False)():
                tf_config.disable_op_determinism()
        tf.keras.utils.set_random_seed(int(seed))

    def _build(self, spec: base.ModelSpec) -> TensorFlowModel:
        return TensorFlowModel(spec)
