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

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmark.degradations import Observation
from benchmark.methods import registry
from benchmark.methods.registry import MethodFunction, MethodInfo, Restoration

# The module that registers each built-in method. Looking a method up imports only its own
# module, so a command that runs a classical method or only reads suites starts without torch
# (tests/test_registry.py holds this table to the registrations).
BUILT_IN: dict[str, str] = {
    **dict.fromkeys(
        (
            "bicubic",
            "bicubic_opencv",
            "biharmonic",
            "bilateral",
            "bm3d",
            "cbm3d",
            "gaussian_filter",
            "lanczos",
            "median",
            "navier_stokes",
            "nlm",
            "nlm_blind",
            "telea",
            "tv",
            "wavelet",
        ),
        "classical",
    ),
    "dip": "priors",
    "dd": "priors",
    "zsn2n": "zsn2n",
}


def _implement(module: str) -> None:
    importlib.import_module(f"benchmark.methods.{module}")


def all_methods() -> dict[str, MethodInfo]:
    """Every registered method by name: the built-in ones (all imported) and any a user's
    module has registered."""
    for module in sorted(set(BUILT_IN.values())):
        _implement(module)
    return registry.METHODS


def get_method(name: str) -> MethodInfo:
    """The method called ``name`` (see :func:`benchmark.methods.registry.get_method`),
    importing only the module that implements it."""
    if name in BUILT_IN:
        _implement(BUILT_IN[name])
    elif ":" not in name and name not in registry.METHODS:
        all_methods()  # an unknown name: its error lists every method
    return registry.get_method(name)


def register(
    name: str, *, tasks: tuple[str, ...], description: str, **capabilities: Any
) -> Callable[[MethodFunction], MethodFunction]:
    """Add a method under ``name`` (:func:`benchmark.methods.registry.register`); a built-in
    method's name is refused at once, whether or not its module is imported yet."""
    if name in BUILT_IN:
        raise ValueError(f"method {name!r} is registered twice (it is a built-in method)")
    return registry.register(name, tasks=tasks, description=description, **capabilities)


def run(name: str, observation: Observation, *, seed: int = 0, **options: Any) -> Restoration:
    """Run method ``name`` on ``observation``: all its outputs (:func:`registry.run
    <benchmark.methods.registry.run>`)."""
    get_method(name)
    return registry.run(name, observation, seed=seed, **options)


def restore(name: str, observation: Observation, *, seed: int = 0, **options: Any) -> np.ndarray:
    """Run method ``name`` and return its default output."""
    get_method(name)
    return registry.restore(name, observation, seed=seed, **options)


def __getattr__(attribute: str) -> Any:
    if attribute == "METHODS":  # every method: the built-in ones imported first
        return all_methods()
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


__all__ = [
    "BUILT_IN",
    "METHODS",
    "MethodFunction",
    "MethodInfo",
    "Restoration",
    "all_methods",
    "get_method",
    "register",
    "restore",
    "run",
]
