"""The method registry (BasicSR/pyiqa style): unknown names raise an error listing the known.

A method declares what it is when it registers, and the runner, the report and ``speed`` ask
those capabilities, never the method's name: a user's network method registered with
``fits_network=True`` is run, batched, keyed and reported exactly as DIP is.
"""

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
from benchmark.degradations import Observation
from benchmark.methods.contract import NetworkMethod
from benchmark.tasks import TASKS

MethodFunction = Callable[..., np.ndarray]


@dataclass(frozen=True)
class MethodInfo:
    """A registered method and its capabilities.

    Attributes
    ----------
    name, function, tasks, description
        The registry key, ``function(observation, *, seed, **options)``, the tasks it solves
        and a one-line description.
    label : str
        Its name in tables and figures (default: ``name``).
    outputs : tuple of str
        The outputs it returns (``("out",)`` for a method that returns one array).
    fits_network : bool
        It fits a network to each observation: it takes ``monitor_reference`` (the clean
        image, for curves and the oracle only) and ``progress``, returns curves, and the
        report draws its PSNR curves.
    needs_device : bool
        It takes ``device``; its numbers depend on the device type and, on the CPU, on the
        number of threads, which are then part of its cells' keys (default: ``fits_network``).
    network : NetworkMethod or None
        Its contract with the runner as a network method (:mod:`benchmark.methods.contract`):
        steps per cell, batching, one step's cost, fitting cells together. Implies
        ``fits_network``. None: the runner runs its cells one at a time, timed whole.
    check_options : callable or None
        ``check_options(task, factor, **options)`` raises ``KeyError``/``TypeError``/
        ``ValueError`` on options the method would refuse, when a suite loads; None: the
        named keyword parameters of ``function`` are the accepted options, even when it also
        takes ``**options``.
    any_options : bool
        Accept any option a suite gives (its ``**options`` are its own business): no check
        at load. Default False.
    channels : tuple of int
        The channel counts of the images it takes (``(3,)`` for a color-only method);
        ``()``: any. A suite whose protocol gives other images is refused when it loads.
    """

    name: str
    function: MethodFunction
    tasks: tuple[str, ...]
    description: str
    label: str = ""
    outputs: tuple[str, ...] = ("out",)
    fits_network: bool = False
    needs_device: bool | None = None
    network: NetworkMethod | None = None
    check_options: Callable[..., None] | None = None
    any_options: bool = False
    channels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)
        if self.network is not None:
            object.__setattr__(self, "fits_network", True)
        if self.needs_device is None:
            object.__setattr__(self, "needs_device", self.fits_network)


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
    name: str, *, tasks: tuple[str, ...], description: str, **capabilities: Any
) -> Callable[[MethodFunction], MethodFunction]:
    """Decorator adding a method to :data:`METHODS` under ``name``; ``capabilities`` are the
    other fields of :class:`MethodInfo` (``label``, ``outputs``, ``fits_network``, ...)."""
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown task(s) {sorted(unknown)}; tasks are {', '.join(TASKS)}")
    valid = set(MethodInfo.__dataclass_fields__) - {"name", "function", "tasks", "description"}
    if set(capabilities) - valid:
        bad = sorted(set(capabilities) - valid)
        raise TypeError(f"unknown capabilities {bad}; valid: {', '.join(sorted(valid))}")

    def add(function: MethodFunction) -> MethodFunction:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        METHODS[name] = MethodInfo(name, function, tasks, description, **capabilities)
        return function

    return add


def get_method(name: str) -> MethodInfo:
    """The method called ``name``, or a user's function given as ``package.module:function``
    (with the capabilities of its registration when the module registers it, else those of a
    plain method solving every task)."""
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        if not module_name or not attribute:
            raise KeyError(f"method {name!r} is not package.module:function")
        try:
            function = getattr(_import_user_module(module_name), attribute)
        except (ImportError, AttributeError) as err:
            raise KeyError(
                f"cannot import method {name!r}: {err} (the module must be importable: beside "
                "the suite file, in the current folder, installed, or on PYTHONPATH)"
            ) from err
        if not callable(function):
            raise KeyError(f"method {name!r} is a {type(function).__name__}, not a function")
        registered = next((m for m in METHODS.values() if m.function is function), None)
        if registered is not None:
            return registered
        return MethodInfo(name, function, tuple(TASKS), f"user method {name}")
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
    # unclipped noise (gaussian with clip = false) leaves [0, 1]: finite is what matters
    check_image(observation.y, "observation", unit_range=observation.params.get("clip", True))
    if observation.mask is not None:
        check_mask(observation.mask, observation.y.shape)
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
