"""How the iterative engine is loaded: pty-chi (and torch with it) is imported only by
ptychi_engine.py, and only when a job asks for a reconstruction; without the `iterative` extra,
`load()` is one line naming it.
"""
from __future__ import annotations

REQUIREMENT = "pip install -e '.[iterative]' (./setup.sh installs it)"


class IterativeUnavailable(RuntimeError):
    """pty-chi is not installed (or does not import); the message names the extra."""


def load():
    """The pty-chi engine module; IterativeUnavailable (one line) when pty-chi is missing or broken."""
    from fly64_train.backends.registry import _short_openmp_spin

    _short_openmp_spin()  # as for the torch backend: idle OpenMP threads must not spin on a busy machine
    try:
        from fly64_train.iterative import ptychi_engine
    except ImportError as exc:
        raise IterativeUnavailable(f"job=iterative needs pty-chi, which is not installed ({exc}): "
                                   f"{REQUIREMENT}") from exc
    except (RuntimeError, OSError) as exc:  # e.g. a torchvision built for another torch
        raise IterativeUnavailable(f"job=iterative needs pty-chi, which does not import here "
                                   f"({type(exc).__name__}: {exc}): {REQUIREMENT}") from exc
    return ptychi_engine
