"""Restoration methods behind one registry: ``name -> method``.

Every method has the same call signature::

    method(observation: Observation, *, seed: int = 0, **options) -> np.ndarray

It receives the :class:`~benchmark.degradations.Observation` (degraded image, task, declared
degradation parameters, mask or factor), never the clean image, and returns the restored
float32 ``(H, W, C)`` image in [0, 1]. A suite can also name a user's own method by import
path, ``package.module:function``, with the same signature.
"""

from __future__ import annotations

from benchmark.methods.registry import (
    METHODS,
    MethodInfo,
    Restoration,
    get_method,
    register,
    restore,
    run,
)

# Importing the implementations fills the registry.
from benchmark.methods import classical, priors  # noqa: E402, F401  isort: skip

__all__ = ["METHODS", "MethodInfo", "Restoration", "get_method", "register", "restore", "run"]
