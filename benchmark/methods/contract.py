"""What a method that fits a network declares, so that the runner can plan, batch and time its
cells without knowing how it fits (benchopt's ``BaseSolver``, for untrained-network priors).

A method registers it with ``register(name, ..., network=MyNetwork())``. The runner asks it
how many steps a cell takes (the estimate), whether cells of one shape can be fitted together
and how many at once (``--batch auto``), what one step costs (the estimate's measurement), and
then to fit them (:meth:`NetworkMethod.fit_together`). A method that fits a network without
declaring one (``fits_network=True`` alone) still runs, one cell at a time, timed whole.

DIP and the Deep Decoder declare :class:`benchmark.methods.priors.PriorNetwork`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmark.degradations import Observation


class NetworkMethod(ABC):
    """The contract of a network method with the runner.

    Every method receives the cell's ``task``, its integer ``factor`` (super-resolution, else
    None) and the method options the suite gives (``**options``, as the method function takes
    them). An option named like one of a call's own keywords (``steps``, ``warmup``,
    ``device``, ``seeds``...) cannot be passed with them: the estimate then times a whole
    cell instead of calling :meth:`measure_step`.
    """

    @abstractmethod
    def iterations(self, task: str, factor: int | None, **options: Any) -> int:
        """The optimisation steps one cell of these options takes."""

    def setting(self, task: str, factor: int | None, **options: Any) -> tuple[dict, Any]:
        """``(network table, fit settings)`` a cell of these options fits (shown by
        ``dipbench restore`` and ``methods``).

        Raises
        ------
        NotImplementedError
            The method declares no such tables (the default).
        """
        raise NotImplementedError(f"{type(self).__name__} declares no setting")

    def can_batch(self, task: str, factor: int | None, **options: Any) -> bool:
        """Whether cells of one shape with these options may be fitted together by
        :meth:`fit_together` (default: no, each cell alone)."""
        return False

    def cpu_batch(
        self, task: str, factor: int | None, height: int, width: int, **options: Any
    ) -> int:
        """How many cells of ``height`` x ``width`` ``--batch auto`` fits together on a CPU
        (default 1; on a GPU the runner fills about a million pixels)."""
        return 1

    def fit_together(
        self,
        observations: Sequence[Observation],
        *,
        seeds: Sequence[int],
        device: Any,
        monitor_references: Sequence[np.ndarray] | None,
        progress: Callable[[int, int], None] | None,
        **options: Any,
    ) -> list[Any]:
        """Fit cells of one task and shape together; one ``Restoration`` (or the exception
        of a cell that failed) per observation, each equal to that cell fitted alone."""
        raise NotImplementedError(f"{type(self).__name__} fits one cell at a time")

    def measure_step(
        self,
        observations: Sequence[Observation],
        targets: Sequence[np.ndarray],
        device: str,
        *,
        steps: int,
        warmup: int,
        min_seconds: float,
        clock: Callable[[], float],
        **options: Any,
    ) -> float:
        """Seconds of one step of these cells fitted together: ``warmup`` steps, then timed
        steps until ``min_seconds`` have passed or ``steps`` were taken (0.0: the fit was
        refused before any work, e.g. for memory)."""
        raise NotImplementedError(f"{type(self).__name__} cannot time one step")
