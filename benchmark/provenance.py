"""The identity of the code that computes a cell: a fingerprint stored in every record.

A cell's key hashes what the cell *is* (image, degradation, level, method, options, seeds);
its number also depends on the *code* that computes it. :func:`code_identity` hashes the
source files that can move a method's number:

- the module that defines the method's function (a user's module too),
- every module of this package that those modules import, directly or not (for DIP and the
  Deep Decoder: the fit, the networks, stacking, the registry, degradations, forward models),
- the modules every cell goes through: image loading (:mod:`benchmark.images`,
  :mod:`benchmark.archives`), degradations, forward models, tasks and metrics,
- the data files those modules name (``presets.toml``, ``registry.csv``).

The report, the runner's bookkeeping, the command line and the docs are not in it: editing
them never invalidates a record. A run compares each record's fingerprint with the current
code's and recomputes the cells whose code changed (:func:`changed_files` says which files).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent
PACKAGE = PACKAGE_ROOT.name

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


def code_identity(method: str) -> dict[str, Any]:
    """``{"fingerprint": str, "files": {name: sha256[:16]}}`` of the code behind ``method``
    (a registry name or ``package.module:function``), as stored in each record."""
    from benchmark.methods.registry import get_method

    function = get_method(method).function
    files = dict(_module_files((function.__module__, *EVERY_CELL)))
    own = inspect.getsourcefile(function)
    if own:
        files[_display_name(Path(own))] = Path(own).resolve()
    hashes = {name: _file_hash(path) for name, path in sorted(files.items())}
    digest = hashlib.sha256(repr(sorted(hashes.items())).encode()).hexdigest()[:16]
    return {"fingerprint": digest, "files": hashes}


def changed_files(stored: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """The files whose change makes a record stale (``["(no fingerprint)"]`` for a record
    written before fingerprints existed); empty when the record is current."""
    if not stored or "fingerprint" not in stored:
        return ["(no code fingerprint: written by dipbench < 0.3)"]
    if stored["fingerprint"] == current["fingerprint"]:
        return []
    before, now = stored.get("files", {}), current["files"]
    return sorted(n for n in set(before) | set(now) if before.get(n) != now.get(n))


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
        for data in _data_files(path):
            files[_display_name(data)] = data
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
    """This package's modules that ``path`` imports (anywhere in it, function bodies too),
    except the package's ``__init__`` (its version is part of every cell key already)."""
    tree = ast.parse(path.read_text(), filename=str(path))
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


def _data_files(path: Path) -> list[Path]:
    """The package's data files that a module names (``presets.toml``, ``registry.csv``)."""
    if not _in_package(path):
        return []
    text = path.read_text()
    return [p for p in sorted((PACKAGE_ROOT / "data").glob("*")) if f'"{p.name}"' in text]


def _file_hash(path: Path) -> str:
    return _hash_of(path, path.stat().st_mtime_ns, path.stat().st_size)


@cache
def _hash_of(path: Path, mtime_ns: int, size: int) -> str:
    """A file's sha256 (cached while its modification time and size stay the same)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
