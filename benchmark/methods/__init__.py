"""Restoration methods behind one registry: ``name -> method``.

Every method has the same call signature::

    method(observation: Observation, *, seed: int = 0, **options) -> np.ndarray

It receives the :class:`~benchmark.degradations.Observation` (the degraded image, the
forward model that made it, the declared degradation parameters), never the clean image, and
returns the restored float32 ``(H, W, C)`` image in [0, 1]. A suite can also name a user's own
method by import path, ``package.module:function``, with the same signature. A method that
fits a network declares its contract with the runner (:mod:`benchmark.methods.contract`).

Examples
--------
:func:`restore` runs a method by name and returns its default output (:func:`run` returns
all of them, with their curves and facts):

>>> import numpy as np
>>> from benchmark.degradations import degrade
>>> from benchmark.metrics import psnr
>>> ramp = np.linspace(0, 1, 32, dtype=np.float32)
>>> clean = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=2)
>>> noisy = degrade(clean, "salt_pepper", 0.1, np.random.default_rng(0)).observation
>>> out = restore("median", noisy)
>>> out.shape, out.dtype
((32, 32, 3), dtype('float32'))
>>> bool(psnr(out, clean) > psnr(noisy.y, clean) + 10)
True
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
from benchmark.methods import classical, priors, zsn2n  # noqa: E402, F401  isort: skip

__all__ = ["METHODS", "MethodInfo", "Restoration", "get_method", "register", "restore", "run"]
