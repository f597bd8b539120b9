"""The numpydoc Examples of the library's entry points run as written (doctest), like
scikit-image's: ``degrade``, ``restore``, ``load_suite``, ``run_suite`` and the validators."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

MODULES = [
    "benchmark.degradations",  # degrade, Observation
    "benchmark.methods",  # restore
    "benchmark.suites",  # load_suite
    "benchmark.runner",  # run_suite
    "benchmark.options",
    "benchmark.methods.fit.config",
]


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_run_as_written(name: str, mirror: Path) -> None:
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, raise_on_error=False, verbose=False)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed (output above)"
