"""dipbench: a reference benchmark for untrained-network image priors.

Stages of the data flow, one module each: ``images`` (registry, download, load) ->
``degradations`` (observations of a ``tasks`` entry, through its ``forward`` model) ->
``methods`` -> ``metrics`` -> ``runner`` (records) -> ``report`` (tables, figures) -> ``check``;
``suites`` and ``grid`` make the cells, ``cli`` is a thin shell (docs/design.md).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dipbench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
