"""Every packaged degradation, registered: those of :mod:`benchmark.degradations` and the
models kept in modules of their own (:mod:`benchmark.photon_noise`), so that adding a model
changes no other cell's code fingerprint. Whatever looks a degradation up by its kind (the
suite schema, the observation of a cell, the estimate, the workers) imports it from here."""

from __future__ import annotations

from benchmark import photon_noise  # noqa: F401  (registers poisson_counts)
from benchmark.degradations import DEGRADATIONS, degrade

__all__ = ["DEGRADATIONS", "degrade"]
