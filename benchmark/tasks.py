"""The task registry: what a task is, declared once, and asked by everyone else.

A task names a kind of measurement. Its registration says how an observation of it is
measured (the forward model, :mod:`benchmark.forward`), what an observation must carry (a
mask, a factor), whether a suite's degradation level is the task's integer factor, and the
task's *trivial baseline*: the answer any method must beat (the noisy input itself, bicubic
upsampling, OpenCV's Telea inpainting). Degradations make observations of a task, methods
declare the tasks they solve, and the fitting loop, the runner and the report ask the task:
no module tests a task by its name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmark.forward import SR_KERNELS, ForwardModel, Identity, Masking

if TYPE_CHECKING:
    from benchmark.degradations import Observation


@dataclass(frozen=True)
class Task:
    """A registered task.

    Attributes
    ----------
    name : str
    description : str
    forward : callable
        ``forward(observation) -> ForwardModel``: the operator that made the observation, the
        one a network's output passes through in the loss. It raises ``ValueError`` when the
        observation lacks what the operator needs (a mask, a factor).
    trivial_baseline : str
        ``"observation"`` (the degraded input is already an answer) or the name of a registered
        method whose output a fitted network is held against (see ``runner.cell``).
    level_is_factor : bool
        The degradation level of a suite is the task's integer scale factor (super-resolution).
    """

    name: str
    description: str
    forward: Callable[[Observation], ForwardModel]
    trivial_baseline: str = "observation"
    level_is_factor: bool = False

    def factor(self, level: float) -> int | None:
        """The integer factor a level stands for (None for tasks without one)."""
        return int(level) if self.level_is_factor else None


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` to :data:`TASKS`; a second task of the same name is an error."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is registered twice")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The task called ``name``; unknown names list the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def _inpainting(observation: Observation) -> ForwardModel:
    if observation.mask is None:
        raise ValueError("an inpainting observation needs a mask (1 = known pixel)")
    return Masking(observation.mask)


def _super_resolution(observation: Observation) -> ForwardModel:
    return sr_model(observation.factor, str(observation.params.get("kernel", "lanczos")))


def sr_model(factor: Any, kernel: str = "lanczos") -> ForwardModel:
    """A super-resolution operator: ``kernel`` is ``"lanczos"`` (DIP's) or ``"bicubic"``
    (MATLAB's imresize)."""
    if not factor:
        raise ValueError("a super-resolution observation needs its integer factor")
    if kernel not in SR_KERNELS:
        raise KeyError(f"unknown downsampling kernel {kernel!r}; known: {', '.join(SR_KERNELS)}")
    return SR_KERNELS[kernel](int(factor))


def forward_model(
    task: str,
    *,
    mask: Any = None,
    factor: int | None = None,
    kernel: str = "lanczos",
) -> ForwardModel:
    """The forward model of ``task`` from its parts: ``mask`` for inpainting, ``factor`` and
    ``kernel`` for super-resolution (what :attr:`Observation.physics` builds)."""
    from benchmark.degradations import Observation  # degradations imports this module

    probe = Observation(np.zeros((1, 1, 1), np.float32), task, {"kernel": kernel}, mask, factor)
    return get_task(task).forward(probe)


register_task(Task("denoising", "noise on the image itself", lambda observation: Identity()))
register_task(Task("inpainting", "missing pixels, given by a mask", _inpainting, "telea"))
register_task(
    Task(
        "super_resolution",
        "a low-resolution image, the level its integer factor",
        _super_resolution,
        "bicubic",
        level_is_factor=True,
    )
)
