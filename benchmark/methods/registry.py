"""The method registry (BasicSR/pyiqa style): unknown names raise an error listing the known."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from benchmark.arrays import check_image, check_mask
from benchmark.degradations import TASKS, Observation

MethodFunction = Callable[..., np.ndarray]


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: its function, the tasks it solves and a one-line description."""

    name: str
    function: MethodFunction
    tasks: tuple[str, ...]
    description: str


@dataclass
class Restoration:
    """What a method returns when it has more than one output.

    Attributes
    ----------
    outputs : dict of str to ndarray
        Named float32 ``(H, W, C)`` outputs (a classical method has one, ``out``).
    default : str
        The output a table reports when none is chosen.
    info : dict
        Facts about the run (iterations, stop points, seconds, device, ...).
    curves : dict of str to ndarray
        Per-iteration records (network methods), one array per quantity.
    snapshots : dict of int to ndarray
        Outputs at chosen iterations.
    """

    outputs: dict[str, np.ndarray]
    default: str = "out"
    info: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)


METHODS: dict[str, MethodInfo] = {}


def register(
    name: str, *, tasks: tuple[str, ...], description: str
) -> Callable[[MethodFunction], MethodFunction]:
    """Decorator adding a method to :data:`METHODS` under ``name``."""
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown task(s) {sorted(unknown)}; tasks are {', '.join(TASKS)}")

    def add(function: MethodFunction) -> MethodFunction:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        METHODS[name] = MethodInfo(name, function, tasks, description)
        return function

    return add


def get_method(name: str) -> MethodInfo:
    """The method called ``name``, or a user's function given as ``package.module:function``."""
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            function = getattr(_import_user_module(module_name), attribute)
        except (ImportError, AttributeError) as err:
            raise KeyError(
                f"cannot import method {name!r}: {err} (the module must be importable: in the "
                "current folder, installed, or on PYTHONPATH)"
            ) from err
        return MethodInfo(name, function, TASKS, f"user method {name}")
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(
            f"unknown method {name!r}; known: {', '.join(sorted(METHODS))} "
            "(or package.module:function for your own)"
        ) from None


def _import_user_module(module_name: str) -> ModuleType:
    """Import a user's module; like pytest with its rootdir, the current folder is searched
    too (and stays on ``sys.path``, so spawned workers find the module as well)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        here = os.getcwd()
        if err.name != module_name.split(".")[0] or here in sys.path:
            raise
        sys.path.insert(0, here)
        return importlib.import_module(module_name)


def run(name: str, observation: Observation, *, seed: int = 0, **options: Any) -> Restoration:
    """Validate ``observation``, run method ``name`` on it and validate every output.

    Returns
    -------
    Restoration
        All outputs of the method (one, ``out``, for a method that returns an array), each
        clipped to [0, 1].
    """
    info = get_method(name)
    if observation.task not in info.tasks:
        raise ValueError(f"method {name!r} solves {', '.join(info.tasks)}, not {observation.task}")
    check_image(observation.y, "observation")
    if observation.task == "inpainting":
        if observation.mask is None:
            raise ValueError("an inpainting observation needs a mask (1 = known pixel)")
        check_mask(observation.mask, observation.y.shape)
    if observation.task == "super_resolution" and not observation.factor:
        raise ValueError("a super-resolution observation needs its integer factor")
    result = info.function(observation, seed=seed, **options)
    if not isinstance(result, Restoration):
        result = Restoration(outputs={"out": np.asarray(result)})
    for key, output in result.outputs.items():
        output = check_image(output, f"output {key!r} of {name}", unit_range=False)
        if output.shape != observation.output_shape:
            raise ValueError(
                f"method {name!r} returned shape {output.shape} for {key!r}, "
                f"expected {observation.output_shape}"
            )
        result.outputs[key] = np.clip(output, 0, 1)
    return result


def restore(name: str, observation: Observation, *, seed: int = 0, **options: Any) -> np.ndarray:
    """Run method ``name`` and return its default output (see :func:`run`)."""
    result = run(name, observation, seed=seed, **options)
    return result.outputs[result.default]
