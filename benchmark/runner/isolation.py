"""The process state a cell runs under, set before it and put back after it.

Workers are reused across cells, and a method is a user's code: whatever it leaves changed in
its process (the working folder, torch's default dtype or grad mode, a global random state,
``sys.path``, the environment...) would reach the cells computed after it in that worker, so
one cell's numbers would depend on which cells shared its worker. Each cell starts from the
state its unit found, and every executor's unit gets the same torch threads (part of the
cell's key), so no executor can change a number.
"""

from __future__ import annotations

import os
import random
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from benchmark.heap import kept_heap


@contextmanager
def unit_state(threads: int) -> Iterator[None]:
    """A unit of cells runs with ``threads`` torch CPU threads and freed memory kept for the
    next step (:func:`benchmark.heap.kept_heap`), and leaves its process as it found it
    (:func:`kept_process_state`)."""
    import torch

    with kept_process_state(), kept_heap():
        torch.set_num_threads(threads)
        yield


@contextmanager
def kept_process_state() -> Iterator[None]:
    """Put back, on the way out, the process state a method may change: working folder,
    environment, ``sys.path``, umask, warning filters, the global random states (Python,
    NumPy, torch) and torch's threads, default dtype, grad mode, float32 matmul precision,
    deterministic-algorithm and cuDNN/oneDNN switches."""
    saved = _process_state()
    try:
        with warnings.catch_warnings():
            yield
    finally:
        _restore(saved)


def _process_state() -> dict[str, Any]:
    import torch

    umask = os.umask(0)
    os.umask(umask)
    return {
        "cwd": os.getcwd(),
        "environ": dict(os.environ),
        "path": list(sys.path),
        "umask": umask,
        "random": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (a method may use the legacy global)
        "torch_rng": torch.get_rng_state(),
        "threads": torch.get_num_threads(),
        "dtype": torch.get_default_dtype(),
        "grad": torch.is_grad_enabled(),
        "matmul": torch.get_float32_matmul_precision(),
        "deterministic": (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ),
        "backends": (
            torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic,
            torch.backends.mkldnn.enabled,
        ),
    }


def _restore(state: dict[str, Any]) -> None:
    import torch

    os.chdir(state["cwd"])
    if dict(os.environ) != state["environ"]:
        os.environ.clear()
        os.environ.update(state["environ"])
    sys.path[:] = state["path"]
    os.umask(state["umask"])
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch_rng"])
    torch.set_num_threads(state["threads"])
    torch.set_default_dtype(state["dtype"])
    torch.set_grad_enabled(state["grad"])
    torch.set_float32_matmul_precision(state["matmul"])
    enabled, warn_only = state["deterministic"]
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.backends.mkldnn.enabled,
    ) = state["backends"]
