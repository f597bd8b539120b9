"""How long a run takes: a few measured steps at each shape the run really fits, summed.

A network cell's time is its iterations times the time of one step of its *unit* (the cells
fitted together, :func:`~benchmark.runner.planning.batches`), and a step's time depends on the
network, the image size, the task's operator and the batch: so the estimate plans the run's
units, measures a few steps of each distinct (method, network, fit settings, task, size,
batch) once, on the run's device, and sums; no step is scaled from another size. A cell of
a method without a network is timed once per (method, options, task, size) on a synthetic
observation of at most 128 pixels a side, scaled by pixels.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from benchmark.degradation_kinds import degrade
from benchmark.grid import Cell
from benchmark.heap import kept_heap
from benchmark.runner.planning import batches, cell_size, network_iterations, registry_sizes

Clock = Callable[[], float]


@dataclass(frozen=True)
class Shape:
    """What one step (or one classical cell) costs depends on: one representative cell, the
    image size and the number of cells fitted together."""

    signature: str
    cell: Cell = field(compare=False)
    height: int
    width: int
    batch: int


@dataclass
class Estimate:
    """A run's estimated seconds of work, with the measurement behind each part and each
    unit's seconds in the order the executor takes them."""

    seconds: float = 0.0
    parts: list[dict[str, Any]] = field(default_factory=list)
    units: list[float] = field(default_factory=list)

    def wall(self, jobs: int = 1) -> float:
        """Seconds until the last unit ends when ``jobs`` workers take the units in order,
        each the next unit as it comes free (what the local pool does)."""
        workers = [0.0] * max(1, jobs)
        for seconds in self.units:
            heapq.heapreplace(workers, workers[0] + seconds)
        return max(workers)

    def table(self) -> str:
        """One line per measured shape: what it is, how often it runs, its share."""
        lines = []
        for part in sorted(self.parts, key=lambda p: -p["seconds"]):
            each = part["seconds_each"]
            lines.append(
                f"  {part['what']:<46} {part['count']:>7} x {each * 1e3:9.2f} ms = "
                f"{part['seconds'] / 60:8.1f} min"
            )
        return "\n".join(lines)


def _signature(cell: Cell, h: int, w: int, batch: int, network: bool) -> str:
    options = cell.method_options
    if network:  # the fit's iterations do not change a step's time
        options = {**options, "fit_options": {**options.get("fit_options", {}), "iterations": 0}}
    return json.dumps(
        [cell.method, options, cell.task, cell.degradation, cell.degradation_options, h, w, batch],
        sort_keys=True,
        default=str,
    )


def units(cells: Sequence[Cell], device: str, batch: int | str = "auto") -> list[tuple[Shape, int]]:
    """The run's units in the executor's order, each as (shape, count): a network unit counts
    its iterations (steps of the whole unit), another cell counts once."""
    sizes = registry_sizes(next((c.registry for c in cells if c.registry), None))
    planned = []
    for unit in batches(cells, device, batch):
        first = unit[0]
        h, w = cell_size(first, sizes)
        steps = network_iterations(first)
        shape = Shape(_signature(first, h, w, len(unit), steps is not None), first, h, w, len(unit))
        planned.append((shape, steps if steps is not None else 1))
    return planned


def plan(cells: Sequence[Cell], device: str, batch: int | str = "auto") -> dict[Shape, int]:
    """The run's work as {shape: count}, the counts of :func:`units` summed per shape."""
    return _summed(units(cells, device, batch))


def _summed(planned: Sequence[tuple[Shape, int]]) -> dict[Shape, int]:
    work: dict[Shape, int] = {}
    for shape, count in planned:
        work[shape] = work.get(shape, 0) + count
    return work


def synthetic_observations(shape: Shape, count: int) -> tuple[list[Any], list[np.ndarray]]:
    """``count`` observations of the shape's degradation on random images of its size (and
    channel count), as the run's cells would see them."""
    channels = _channels(shape.cell)
    observations, targets = [], []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        clean = rng.random((shape.height, shape.width, channels)).astype(np.float32)
        degraded = degrade(
            clean, shape.cell.degradation, shape.cell.level, rng, **shape.cell.degradation_options
        )
        observations.append(degraded.observation)
        targets.append(degraded.target)
    return observations, targets


def _channels(cell: Cell) -> int:
    """The cell's image channels, from the registry (no image is read)."""
    from benchmark import datasets

    registry = datasets.registry_of(cell.registry or None)
    modes: dict[Any, str] = {(e.set, e.name): e.mode for e in registry}
    modes.update({e.set: e.mode for e in registry if e.kind == "archive"})
    mode = modes.get((cell.dataset, cell.image)) or modes.get(cell.dataset, "RGB")
    return 1 if mode == "L" else 3


# NetworkMethod.measure_step's own keywords: a method option of one of these names cannot
# reach it, and the cell is timed whole instead.
MEASURE_STEP_KEYWORDS = frozenset({"device", "steps", "warmup", "min_seconds", "clock"})


def measure_step(
    shape: Shape,
    device: str,
    *,
    steps: int = 5,
    warmup: int = 2,
    min_seconds: float = 0.5,
    clock: Clock = time.perf_counter,
) -> float:
    """Seconds of one step of a unit of this shape, measured by the method's network contract
    (``NetworkMethod.measure_step``) on synthetic observations: ``warmup`` steps, then timed
    steps until ``min_seconds`` have passed or ``steps`` were taken. A contract that cannot
    time one step has a whole cell timed and divided by its steps."""
    from benchmark.methods import get_method

    network = get_method(shape.cell.method).network
    assert network is not None, "measure_step is for network cells"
    observations, targets = synthetic_observations(shape, shape.batch)
    seconds = contract_step(
        network, observations, targets, device, shape.cell.method_options,
        steps=steps, warmup=warmup, min_seconds=min_seconds, clock=clock,
    )  # fmt: skip
    if seconds is not None:
        return seconds
    cell_seconds = measure_cell(replace(shape, batch=1), device, clock=clock)
    return shape.batch * cell_seconds / max(1, network_iterations(shape.cell) or 1)


def contract_step(
    network: Any,
    observations: Sequence[Any],
    targets: Sequence[np.ndarray],
    device: str,
    options: dict[str, Any],
    *,
    steps: int,
    warmup: int,
    min_seconds: float,
    clock: Clock = time.perf_counter,
) -> float | None:
    """Seconds of one step of these cells fitted together by the contract's
    ``measure_step``; None where it cannot time one (it declares none, or an option is
    named like one of its keywords, e.g. a method's own ``steps``, and cannot be passed)."""
    if MEASURE_STEP_KEYWORDS & set(options):
        return None
    try:
        return network.measure_step(
            observations, targets, device, steps=steps, warmup=warmup,
            min_seconds=min_seconds, clock=clock, **options,
        )  # fmt: skip
    except NotImplementedError:
        return None


CELL_SIDE = 128  # classical cells are timed at most this large, then scaled by pixels


def measure_cell(shape: Shape, device: str, *, clock: Clock = time.perf_counter) -> float:
    """Seconds of one cell of a method without a network, on a synthetic observation of at
    most ``CELL_SIDE`` pixels a side, scaled by the pixel count (these methods are about
    linear in it; a full-size BM3D would cost the estimate a minute)."""
    from benchmark.methods import run

    side = max(shape.height, shape.width)
    scale = max(1.0, side / CELL_SIDE)
    small = replace(
        shape,
        height=max(16, round(shape.height / scale)),
        width=max(16, round(shape.width / scale)),
    )
    observations, _ = synthetic_observations(small, 1)
    started = clock()
    try:
        run(shape.cell.method, observations[0], seed=0, **shape.cell.method_options)
    except Exception:  # noqa: BLE001  the cell will fail with its reason; an estimate must not
        pass
    seconds = clock() - started
    return seconds * (shape.height * shape.width) / (small.height * small.width)


def warmup_steps(device: str) -> int:
    """Steps run before a step is timed: one on the CPU, where steps are slow and steady; more
    on a GPU, whose first steps autotune its kernels."""
    return 1 if _device_type(device) == "cpu" else 5


def _device_type(device: str) -> str:
    from benchmark.device import resolve_device

    return resolve_device(device).type


def estimate(
    cells: Sequence[Cell],
    device: str,
    batch: int | str = "auto",
    *,
    step: Callable[[Shape], float] | None = None,
    cell: Callable[[Shape], float] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Estimate:
    """The run's estimated seconds of work (``seconds``; :meth:`Estimate.wall` for several
    workers): each shape measured once (``step`` and ``cell`` replace the measurements: a
    fake clock in tests, :func:`scaled_from_one_size` for a quick rough figure), times its
    count."""
    warmup = warmup_steps(device)
    step = step or (lambda shape: measure_step(shape, device, warmup=warmup))
    cell = cell or (lambda shape: measure_cell(shape, device))
    result = Estimate()
    planned = units(cells, device, batch)
    each_of: dict[Shape, float] = {}
    for shape, count in planned:
        if shape not in each_of:
            if progress is not None:
                progress(f"{shape.cell.method_key} {shape.height}x{shape.width} x{shape.batch}")
            with kept_heap():  # as the run's units will fit
                each_of[shape] = step(shape) if _is_network(shape) else cell(shape)
        result.units.append(count * each_of[shape])
    for shape, count in _summed(planned).items():
        what = f"{shape.cell.method_key} {shape.cell.degradation} {shape.height}x{shape.width}"
        what += f" batch {shape.batch} (step)" if _is_network(shape) else " (cell)"
        each = each_of[shape]
        result.parts.append(
            {"what": what, "count": count, "seconds_each": each, "seconds": count * each}
        )
        result.seconds += count * each
    return result


def _is_network(shape: Shape) -> bool:
    from benchmark.methods import get_method

    return get_method(shape.cell.method).network is not None


ROUGH_SIDE = 128
ROUGH_CELL_SECONDS = 2.0


def scaled_from_one_size(
    device: str,
) -> tuple[Callable[[Shape], float], Callable[[Shape], float]]:
    """A rough cost model for :func:`estimate` that takes seconds, not minutes, on a CPU: one
    step per network setting measured at 128x128, scaled by pixels and batch; other cells
    2 s each. (``dipbench reproduce`` says with it how long the full profile would take.)"""
    measured: dict[str, float] = {}

    def step(shape: Shape) -> float:
        side = ROUGH_SIDE
        small = replace(shape, height=side, width=side, batch=1)
        key = _signature(shape.cell, side, side, 1, True)
        if key not in measured:
            measured[key] = measure_step(replace(small, signature=key), device, warmup=1)
        return measured[key] * shape.batch * shape.height * shape.width / (side * side)

    return step, lambda shape: ROUGH_CELL_SECONDS


# One NVIDIA H100 80GB (docs/speed.md, "On one H100"): DIP's whole loop, one cell, measured
# 19.3 ms a step at 128x128, where the step is launch-bound, and 19.8 ms at 512x512.
H100_SMALLEST_STEP = 0.0193
H100_STEP_AT_512 = 0.0198


def h100_model() -> tuple[Callable[[Shape], float], Callable[[Shape], float]]:
    """A cost model of one H100 for :func:`estimate`, from the steps measured there: a step
    never under the launch-bound 19.3 ms, else 19.8 ms per 512x512 of pixels (times the
    batch); other cells 2 s each. For "how long on a GPU" before one is at hand; a run on
    the GPU measures its own."""

    def step(shape: Shape) -> float:
        pixels = shape.batch * shape.height * shape.width
        return max(H100_SMALLEST_STEP, H100_STEP_AT_512 * pixels / 512**2)

    return step, lambda shape: ROUGH_CELL_SECONDS
