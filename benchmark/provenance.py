"""The identity of what computes a cell: its code and the data it reads, stored in every record.

A cell's key hashes what the cell *is* (image, degradation, level, method, options, seeds);
its number also depends on the *code* that computes it and on the *data* it reads. Both are
stored with the record and checked against the current files, without importing any method
(the report and ``check`` load no torch):

- :func:`code_identity`, per method: the source of the module that defines the method's
  function (a user's module too), of every module of this package that it imports, directly
  or not (for DIP and the Deep Decoder: the fit, the networks, stacking, the registry), and of
  the modules every cell goes through (image loading, degradations, forward models, tasks,
  metrics). A module is hashed as what it computes (:mod:`benchmark.code_hash`): its syntax
  tree without docstrings, comments or formatting, its imports as one set of bindings
  wherever they sit. A docstring fix or a lazy import re-runs nothing; any change of a name,
  a number or a statement does.
- :func:`inputs_identity`, per cell: the parts of the package's data files that the cell
  actually read: its image's row of ``registry.csv`` (the pixel hash, mode and kind, not
  where the file is downloaded from) and its preset's table of ``presets.toml``. Adding an
  image or a preset changes no other cell's identity.

The report, the runner's bookkeeping, the command line, the docs and the memory guard (which
can only refuse a fit: :data:`benchmark.code_hash.GUARDS`) are not in it: editing them never
invalidates a record. :func:`changed_files` re-hashes the stored names and says which
changed. A record written by an earlier scheme (``scheme`` absent: whole files by their
bytes; 2: imports where they were written; 3: the memory guard hashed) is checked by its own
scheme's rule, and the runner (and ``scripts/restamp_reports.py`` for published reports)
re-stamps those whose fingerprint by that scheme is today's code's (:func:`is_legacy`,
:func:`fingerprint_by_scheme`).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import tomllib
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from benchmark.code_hash import SCHEME, computing_tree, source_hash

PACKAGE_ROOT = Path(__file__).resolve().parent
PACKAGE = PACKAGE_ROOT.name

PRESETS = "benchmark/data/presets.toml"
REGISTRY = "benchmark/data/registry.csv"
# Where an image is fetched from does not change its pixels: these columns are left out.
REGISTRY_SOURCE_COLUMNS = frozenset({"repo", "commit", "path_in_repo", "url"})

# Every cell loads an image, degrades it and is scored: these modules move every number.
EVERY_CELL = (
    "benchmark.images",
    "benchmark.archives",
    "benchmark.arrays",
    "benchmark.degradations",
    "benchmark.forward",
    "benchmark.tasks",
    "benchmark.metrics",
    "benchmark.methods.registry",
)


def versions() -> dict[str, str]:
    """Versions of everything that can change a number (read without importing torch)."""
    import platform

    import cv2
    import numpy as np
    import skimage

    from benchmark import __version__

    return {
        "dipbench": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": importlib.metadata.version("torch"),  # torch.__version__'s text
        "scikit-image": skimage.__version__,
        "opencv": cv2.__version__,
        "bm3d": importlib.metadata.version("bm3d"),
    }


# --- identities ------------------------------------------------------------------------------


def code_identity(
    method: str, scheme: int = SCHEME, degradation: str | None = None
) -> dict[str, Any]:
    """``{"scheme", "fingerprint", "files": {name: hash}}`` of the code behind ``method`` (a
    registry name or ``package.module:function``) and, where it is registered in a module of
    its own, the ``degradation`` its cell observes through; hashed by ``scheme``
    (:mod:`benchmark.code_hash`). A file outside this package also has its path under
    ``"paths"``, so that it can be found again."""
    from benchmark.methods import get_method

    makers = [get_method(method).function]
    if degradation is not None:
        from benchmark.degradation_kinds import DEGRADATIONS

        makers += [DEGRADATIONS[degradation]] if degradation in DEGRADATIONS else []
    files = dict(_module_files((*(f.__module__ for f in makers), *EVERY_CELL)))
    for function in makers:
        own = inspect.getsourcefile(function)
        if own:
            files[_display_name(Path(own))] = Path(own).resolve()
    identity: dict[str, Any] = {"scheme": scheme}
    identity["files"] = {name: source_hash(path, scheme) for name, path in sorted(files.items())}
    identity["fingerprint"] = _digest(identity["files"])
    paths = {name: str(path) for name, path in files.items() if not _in_package(path)}
    if paths:
        identity["paths"] = paths
    return identity


def inputs_identity(parts: Iterable[str]) -> dict[str, Any]:
    """``{"fingerprint", "parts": {name: hash}}`` of the data parts a cell read
    (:func:`image_part`, :func:`preset_part`)."""
    hashes = {name: part_hash(name) for name in sorted(set(parts))}
    hashes = {name: value for name, value in hashes.items() if value is not None}
    return {"fingerprint": _digest(hashes), "parts": hashes}


def cell_inputs(
    dataset: str, image: str, method: str, preset: str | None, registry: str = ""
) -> dict[str, Any]:
    """The :func:`inputs_identity` of a cell: its image's registry row (in the package's
    registry, or in the suite's own ``registry`` file) and the preset its method fitted with
    (the one its result names), where the package's data files hold them."""
    parts = [image_part(dataset, image, registry), preset_part(method, preset)]
    return inputs_identity(part for part in parts if part is not None)


def image_part(dataset: str, image: str, registry: str = "") -> str | None:
    """The registry row an image is read from (``registry.csv[set/name]``; a set that comes
    as one archive: its archive's row; a suite's own registry file: ``<its path>[set/name]``),
    or None when no registry has it."""
    if registry and (dataset, image) in _user_rows(registry):
        return f"{Path(registry).resolve()}[{dataset}/{image}]"
    rows = _registry_rows()
    if (dataset, image) in rows:
        return f"{REGISTRY}[{dataset}/{image}]"
    archives = sorted(
        name
        for (set_, name), row in rows.items()
        if set_ == dataset and row.get("kind") == "archive"
    )
    return f"{REGISTRY}[{dataset}/{archives[0]}]" if len(archives) == 1 else None


def preset_part(method: str, preset: str | None) -> str | None:
    """The table of ``presets.toml`` a cell's preset is (``presets.toml[dip.sr_x4]``), or None
    when the method has no such preset."""
    if not preset or not isinstance(_presets().get(method), dict):
        return None
    return f"{PRESETS}[{method}.{preset}]" if preset in _presets()[method] else None


# --- staleness -------------------------------------------------------------------------------


def changed_files(stored: Mapping[str, Any] | None) -> list[str]:
    """The stored files (and data parts) whose current hash differs from the stored one, or
    that are gone (empty: current). A record written before fingerprints existed is stale."""
    if not stored or "files" not in stored:
        return ["(no code fingerprint: written by dipbench < 0.3)"]
    hashes = stored["files"]
    if stored.get("scheme") is None:
        return sorted(name for name, value in hashes.items() if _legacy_hash(name) != value)
    paths, scheme = stored.get("paths", {}), stored["scheme"]
    return sorted(
        name for name, value in hashes.items() if _current_hash(name, paths, scheme) != value
    )


def changed_parts(stored: Mapping[str, Any] | None) -> list[str]:
    """The data parts of an :func:`inputs_identity` whose current hash differs (empty: none
    changed, or nothing was stored: records before the scheme hashed whole data files)."""
    if not stored:
        return []
    return sorted(
        name for name, value in stored.get("parts", {}).items() if part_hash(name) != value
    )


def is_legacy(stored: Mapping[str, Any] | None) -> bool:
    """Whether a code identity was written by an earlier scheme than today's."""
    return bool(stored) and "files" in stored and stored.get("scheme") != SCHEME


def fingerprint_by_scheme(method: str, scheme: int | None, degradation: str | None = None) -> str:
    """The fingerprint ``scheme`` (None: the first, whole files by their bytes) gives
    ``method``'s current code (and ``degradation``'s, :func:`code_identity`): a record of that
    scheme whose fingerprint is this one was computed by today's code, and is re-stamped with
    today's scheme (not recomputed)."""
    if scheme is None:
        return legacy_fingerprint(method)
    return code_identity(method, scheme, degradation)["fingerprint"]


def computed_by_todays_code(
    fingerprint: str, scheme: int | None, method: str, degradation: str | None = None
) -> bool:
    """Whether a record of an earlier ``scheme`` with ``fingerprint`` was computed by today's
    code (:func:`fingerprint_by_scheme`): the rule by which it is re-stamped, not recomputed.
    False where the method or its module can no longer be found."""
    try:
        return fingerprint == fingerprint_by_scheme(method, scheme, degradation)
    except (KeyError, ImportError, OSError):
        return False


def _current_hash(name: str, paths: Mapping[str, str], scheme: int) -> str | None:
    path = Path(paths[name]) if name in paths else PACKAGE_ROOT.parent / name
    try:
        return source_hash(path.resolve(), scheme)
    except (OSError, SyntaxError, ValueError):
        return None


def _legacy_hash(name: str) -> str | None:
    """A file's hash by the first scheme: its bytes (package files only; a user's file was
    stored by its bare name, which no longer says where it is)."""
    path = PACKAGE_ROOT.parent / name
    try:
        return _bytes_hash(path, path.stat().st_mtime_ns, path.stat().st_size)
    except OSError:
        return None


def legacy_fingerprint(method: str) -> str:
    """The fingerprint the first scheme gives ``method``'s current code (whole files by their
    bytes, with the data files its modules name): what a record of that scheme computed by
    the current files holds, for re-stamping."""
    from benchmark.methods import get_method

    function = get_method(method).function
    files = dict(_module_files((function.__module__, *EVERY_CELL)))
    for path in list(files.values()):
        if _in_package(path):
            text = path.read_text(encoding="utf-8")
            for data in sorted((PACKAGE_ROOT / "data").glob("*")):
                if f'"{data.name}"' in text:
                    files[_display_name(data)] = data
    own = inspect.getsourcefile(function)
    if own:
        files[_display_name(Path(own))] = Path(own).resolve()
    hashes = {
        name: _bytes_hash(path, path.stat().st_mtime_ns, path.stat().st_size)
        for name, path in sorted(files.items())
    }
    return hashlib.sha256(repr(sorted(hashes.items())).encode()).hexdigest()[:16]


def part_hash(name: str) -> str | None:
    """The current hash of a data part (``<file>[<part>]``), or None where it is gone."""
    file, _, part = name.partition("[")
    part = part.removesuffix("]")
    if file == PRESETS:
        method, _, preset = part.partition(".")
        table = _presets().get(method, {}).get(preset)
        content = table
    elif file == REGISTRY:
        row = _registry_rows().get(tuple(part.split("/", 1)))
        content = (
            None
            if row is None
            else {k: v for k, v in row.items() if k not in REGISTRY_SOURCE_COLUMNS}
        )
    elif file.endswith(".csv") and Path(file).is_absolute():  # a suite's own registry file
        row = _user_rows(file).get(tuple(part.split("/", 1)))
        content = (
            None
            if row is None
            else {k: v for k, v in row.items() if k not in REGISTRY_SOURCE_COLUMNS}
        )
    else:
        return None
    if content is None:
        return None
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def _presets() -> dict[str, Any]:
    path = PACKAGE_ROOT.parent / PRESETS
    return _read_toml(path, path.stat().st_mtime_ns)


@cache
def _read_toml(path: Path, mtime_ns: int) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _registry_rows() -> dict[tuple[str, str], dict[str, str]]:
    path = PACKAGE_ROOT.parent / REGISTRY
    return _read_registry(path, path.stat().st_mtime_ns)


def _user_rows(path: str) -> dict[tuple[str, str], dict[str, str]]:
    try:
        return _read_registry(Path(path), Path(path).stat().st_mtime_ns)
    except (OSError, KeyError, UnicodeDecodeError):  # gone, or not a registry
        return {}


@cache
def _read_registry(path: Path, mtime_ns: int) -> dict[tuple[str, str], dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {(row["set"], row["name"]): row for row in csv.DictReader(handle)}


def _digest(hashes: Mapping[str, str]) -> str:
    return hashlib.sha256(repr(sorted(hashes.items())).encode()).hexdigest()[:16]


@cache
def _bytes_hash(path: Path, mtime_ns: int, size: int) -> str:
    """A file's sha256 (cached while its modification time and size stay the same)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# --- the import closure ----------------------------------------------------------------------


@cache
def _module_files(modules: tuple[str, ...]) -> tuple[tuple[str, Path], ...]:
    """The source files of ``modules`` and of every module of this package they import
    (found once per process; the files' contents are hashed at every call)."""
    files: dict[str, Path] = {}
    queue, seen = list(modules), set()
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _source_of(name)
        if path is None:
            continue
        files[_display_name(path)] = path
        if _in_package(path):
            queue += _package_imports(path, name)
    return tuple(files.items())


@cache
def _source_of(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin).resolve()


def _in_package(path: Path) -> bool:
    return path.is_relative_to(PACKAGE_ROOT)


def _display_name(path: Path) -> str:
    """``benchmark/methods/priors.py`` for the package's files; a user's file by its name."""
    path = path.resolve()
    if _in_package(path):
        return str(path.relative_to(PACKAGE_ROOT.parent))
    return path.name


def _package_imports(path: Path, module: str) -> list[str]:
    """This package's modules that ``path`` imports (anywhere in it, function bodies too, but
    not in its guards: :func:`benchmark.code_hash.computing_tree`), except the package's
    ``__init__`` (its version is part of every cell key already)."""
    tree = computing_tree(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.append(base)
            found += [f"{base}.{alias.name}" for alias in node.names]  # submodules
    return [
        name for name in found if name.startswith(PACKAGE + ".") and _source_of(name) is not None
    ]
