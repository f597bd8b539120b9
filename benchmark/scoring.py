"""The metric registry (BasicSR/pyiqa style): what a result is scored with.

A :class:`Metric` is a name, a function of an output and its ground truth (both as the cell's
evaluation protocol prepares them: float64 ``(H, W, C)`` in [0, 1]), whether higher is better,
the digits a table shows and the library that computes it. Results, tables and ``check`` take
their metric columns from here.

PSNR and SSIM are built in: every cell is scored with them when it is computed, by
:meth:`benchmark.metrics.Protocol.score` (their maths is part of every cell's code identity).
Any other metric (LPIPS, a user's) is computed from a finished cell's saved outputs by
``dipbench rescore`` (:mod:`benchmark.rescore`): adding one recomputes no cell, and its values
carry the identity of the code that computed them (:func:`metric_identity`).

A user's metric is named ``package.module:function``; the module may register it with
:func:`register_metric` to declare its direction and digits, else it is a higher-is-better
metric shown with 4 digits.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.arrays import check_image
from benchmark.metrics import Protocol, psnr, ssim
from benchmark.user_modules import import_user_module

MetricFunction = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Metric:
    """A registered metric.

    Attributes
    ----------
    name : str
        Its column in ``results.csv`` and its tables.
    compute : callable
        ``compute(output, reference) -> float`` on arrays the protocol prepared.
    description : str
        One line for ``dipbench metrics`` and the tables.
    higher_is_better : bool
        Whether a larger value is a better restoration (PSNR, SSIM: yes; LPIPS: no).
    digits : int
        Decimals a table shows.
    library : str
        What computes it (the package, or ``user`` for a user's function).
    """

    name: str
    compute: MetricFunction
    description: str = ""
    higher_is_better: bool = True
    digits: int = 4
    library: str = ""


METRICS: dict[str, Metric] = {}
BUILT_IN = ("psnr", "ssim")  # computed with every cell (Protocol.score)


def register_metric(metric: Metric, *, replace: bool = False) -> Metric:
    """Add ``metric`` to the registry (a name taken by another metric is refused unless
    ``replace``; PSNR and SSIM are never replaced)."""
    if not metric.name.isidentifier():
        raise ValueError(f"metric name {metric.name!r} is not a plain name (letters, _, digits)")
    if metric.name in BUILT_IN and metric.name in METRICS:
        raise ValueError(f"{metric.name} is built in; register yours under another name")
    known = METRICS.get(metric.name)
    if known is not None and known.compute is not metric.compute and not replace:
        raise ValueError(f"a metric called {metric.name!r} is registered already")
    METRICS[metric.name] = metric
    return metric


def get_metric(name: str) -> Metric:
    """The metric called ``name``, or a user's function given as ``package.module:function``;
    an unknown name lists the known ones."""
    if ":" in name:
        return _user_metric(name)
    if name not in METRICS:
        _load_optional(name)
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(
            f"unknown metric {name!r}; known: {', '.join(known_metrics())} "
            "(or package.module:function for your own)"
        ) from None


def known_metrics() -> list[str]:
    """Registered metric names, built-ins first, then the optional ones this package has."""
    return list(dict.fromkeys([*BUILT_IN, *METRICS, *OPTIONAL]))


def score(
    protocol: Protocol, output: np.ndarray, reference: np.ndarray, metrics: Sequence[str] = BUILT_IN
) -> dict[str, float]:
    """``{metric: value}`` of ``output`` against ``reference`` under ``protocol``: PSNR and SSIM
    through the protocol's own scoring (the numbers every cell holds), others on the arrays it
    prepares (clipped to [0, 1], float64)."""
    values: dict[str, float] = {}
    if any(name in BUILT_IN for name in metrics):
        built_in = protocol.score(output, reference)
        values.update({name: built_in[name] for name in metrics if name in BUILT_IN})
    others = [name for name in metrics if name not in BUILT_IN]
    if others:
        out, ref = prepared(protocol, output, reference)
        for name in others:
            values[name] = float(get_metric(name).compute(out, ref))
    return values


def prepared(
    protocol: Protocol, output: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The arrays a metric compares under ``protocol``: checked, the output clipped to [0, 1],
    both float64, then cropped or converted as the protocol says."""
    out = check_image(output, "output", unit_range=False)
    ref = check_image(reference, "reference")
    if out.shape != ref.shape:
        raise ValueError(f"output shape {out.shape} differs from reference {ref.shape}")
    return protocol.prepare(np.clip(out, 0, 1).astype(np.float64), ref.astype(np.float64))


def metric_identity(name: str) -> dict[str, str]:
    """``{"metric", "file", "hash"[, "version"]}``: the code that computes ``name``'s values
    (its function's module, hashed as the cell code is: :func:`benchmark.provenance.source_hash`)
    and, for a library's metric, the library's version. Stored with rescored values."""
    from importlib.metadata import PackageNotFoundError, version

    from benchmark.provenance import source_hash

    metric = get_metric(name)
    source = inspect.getsourcefile(metric.compute)
    identity = {"metric": name, "file": Path(source).name if source else "", "hash": ""}
    if source:
        identity["hash"] = source_hash(Path(source))
    if metric.library and metric.library != "user":
        try:
            identity["version"] = version(metric.library)
        except PackageNotFoundError:
            pass
    return identity


def _user_metric(name: str) -> Metric:
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise KeyError(f"metric {name!r} is not package.module:function")
    try:
        function = getattr(import_user_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise KeyError(
            f"cannot import metric {name!r}: {err} (the module must be importable: in the "
            "current folder, installed, or on PYTHONPATH)"
        ) from err
    registered = next((m for m in METRICS.values() if m.compute is function), None)
    if registered is not None:
        return registered
    if not callable(function):
        raise KeyError(f"metric {name!r} is a {type(function).__name__}, not a function")
    return Metric(name, function, f"user metric {name}", library="user")


# Metrics of optional libraries: registered when first asked for, so that importing this
# module never imports them (``pip install 'dipbench[lpips]'``).
OPTIONAL = {"lpips": "benchmark.lpips_metric"}


def _load_optional(name: str) -> None:
    if name in OPTIONAL:
        importlib.import_module(OPTIONAL[name])  # registers it


register_metric(
    Metric(
        "psnr",
        psnr,
        "peak signal-to-noise ratio (dB), data range 1",
        digits=2,
        library="scikit-image",
    )
)
register_metric(
    Metric(
        "ssim",
        ssim,
        "structural similarity, Gaussian window sigma 1.5 (Wang et al.)",
        digits=4,
        library="scikit-image",
    )
)


def describe(metric: Metric) -> dict[str, Any]:
    """One row of ``dipbench metrics``."""
    return {
        "name": metric.name,
        "better": "higher" if metric.higher_is_better else "lower",
        "library": metric.library,
        "description": metric.description,
    }
