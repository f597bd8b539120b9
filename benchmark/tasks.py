"""The task registry: what a task is, declared once, and asked by everyone else.

A task names a kind of measurement. Its registration says what the task's *trivial
baseline* is (the answer any method must beat: the noisy input itself, bicubic upsampling,
OpenCV's Telea inpainting) and whether a suite's degradation level is the task's integer
factor. How an observation of a task is measured is its forward model
(:mod:`benchmark.forward`), which the degradation that makes the observation builds and the
observation holds (``Observation.physics``). Degradations make observations of a task,
methods declare the tasks they solve, and the runner and the report ask the task: no module
tests a task by its name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """A registered task.

    Attributes
    ----------
    name : str
    description : str
    trivial_baseline : str
        ``"observation"`` (the degraded input is already an answer) or the name of a registered
        method whose output a fitted network is held against (see ``runner.cell``).
    level_is_factor : bool
        The degradation level of a suite is the task's integer scale factor (super-resolution).
    """

    name: str
    description: str
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


register_task(Task("denoising", "noise on the image itself"))
register_task(Task("inpainting", "missing pixels, given by a mask", "telea"))
register_task(
    Task(
        "super_resolution",
        "a low-resolution image, the level its integer factor",
        "bicubic",
        level_is_factor=True,
    )
)
