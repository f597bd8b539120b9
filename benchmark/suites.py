"""Suites: experiment grids as data (TOML), expanded into independent cells.

A suite file names a dataset, the degradations and their levels, the methods with their
options, the evaluation protocol, and per-profile overrides (``full`` is the paper's protocol;
``quick`` and ``ci`` shrink crops, iterations, networks or the image list). The format is
documented in the README; the packaged suites live in ``benchmark/suites/``.

Loading resolves a profile, checks every entry (unknown keys, wrong types, options a method
would refuse, with the closest valid name suggested) and returns a :class:`~benchmark.grid.Suite`,
whose cells are the grid (:mod:`benchmark.grid`).
"""

from __future__ import annotations

import copy
import difflib
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmark import archives, images
from benchmark import datasets as datasets_
from benchmark.grid import Cell, MethodSpec, Suite, seed_of
from benchmark.metrics import PROTOCOLS
from benchmark.suite_schema import (
    SUITE_KEYS,
    SUITE_TYPES,
    SuiteError,
    check_degradation,
    check_known,
    check_labels,
    check_method_channels,
    check_method_options,
    check_protocol_channels,
    check_suite_name,
    check_types,
    method_spec,
)
from benchmark.tasks import TASKS

__all__ = [
    "PROFILES",
    "Cell",
    "MethodSpec",
    "Suite",
    "SuiteError",
    "load_suite",
    "packaged_suites",
    "read_suite_file",
    "seed_of",
]

SUITES_DIR = Path(__file__).with_name("suites")
PROFILES = ("full", "quick", "ci")


def packaged_suites() -> list[str]:
    """Names of the suites shipped with the package."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: tables merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_suite_file(name_or_path: str) -> tuple[dict[str, Any], Path]:
    """The raw table of a packaged suite (by name) or of a TOML file (by path)."""
    path = Path(name_or_path)
    if not path.suffix == ".toml":
        path = SUITES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise SuiteError(
                f"unknown suite {name_or_path!r}; packaged suites: {', '.join(packaged_suites())} "
                "(or give the path of a suite .toml file)"
            )
    elif not path.is_file():
        raise SuiteError(f"suite file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), path
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path}: not valid TOML: {err}") from err
    except UnicodeDecodeError as err:
        raise SuiteError(f"{path}: not UTF-8 text (TOML files are): byte {err.start}") from err
    except RecursionError:
        raise SuiteError(f"{path}: nested too deeply to be a suite file") from None
    except OSError as err:
        raise SuiteError(f"{path}: cannot be read: {err.strerror or err}") from err


def _search_beside(path: Path) -> None:
    """A user's suite may name ``module:function`` methods of a module in its own folder (as
    pytest finds a ``conftest.py`` beside its tests): that folder is searched too, after the
    current one and the installed packages, and spawned workers inherit it."""
    folder = path.resolve().parent
    if folder != SUITES_DIR.resolve() and str(folder) not in sys.path:
        sys.path.append(str(folder))


def load_suite(
    name_or_path: str,
    profile: str = "full",
    *,
    images_subset: Sequence[str] | None = None,
    methods_subset: Sequence[str] | None = None,
    levels_subset: Sequence[float | str] | None = None,
    method_seed: int = 0,
    check_methods: bool = True,
) -> Suite:
    """Load a suite for one profile, optionally restricted to some images or methods.

    ``method_seed`` K > 0 draws every method's own randomness from stream K while the degraded
    inputs stay the same: repetitions of a method for measuring its spread over seeds.
    ``check_methods=False`` reads the grid without checking the methods' names, options and
    channels against the registry, so without importing their code (``dipbench list`` of the
    packaged suites, which the tests load with the check).

    Examples
    --------
    >>> suite = load_suite("inpainting-table1", "ci")
    >>> suite.name, suite.profile, suite.task, len(suite.cells())
    ('inpainting-table1', 'ci', 'inpainting', 8)
    >>> sorted({cell.method for cell in suite.cells()})
    ['biharmonic', 'dd', 'dip', 'telea']
    >>> load_suite("inpainting-table1", "quik")
    Traceback (most recent call last):
    ...
    benchmark.suite_schema.SuiteError: unknown profile 'quik'; profiles: full, quick, ci
    """
    if method_seed < 0:
        raise SuiteError(
            f"method seed must be 0 (the suite's) or a positive stream, got {method_seed}"
        )
    raw, path = read_suite_file(name_or_path)
    _search_beside(path)
    check_known(raw, SUITE_KEYS, f"{path}: suite key(s)")
    check_types(raw, SUITE_TYPES, str(path))
    profiles = raw.get("profiles", {})
    if not isinstance(profiles, Mapping):
        raise SuiteError(f"{path}: 'profiles' must be a table of [profiles.<name>] tables")
    check_known(profiles, PROFILES, f"{path}: profile(s)")
    for name_, table in profiles.items():
        if not isinstance(table, Mapping):
            raise SuiteError(f"{path}: [profiles.{name_}] must be a table")
        check_known(table, SUITE_KEYS - {"profiles", "name"}, f"{path}: [profiles.{name_}] key(s)")
        check_types(table, SUITE_TYPES, f"{path}: [profiles.{name_}]")
    if profile not in PROFILES:
        raise SuiteError(f"unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
    merged = _merge({k: v for k, v in raw.items() if k != "profiles"}, profiles.get(profile, {}))
    name = check_suite_name(merged.get("name", path.stem), path)
    for key in ("task", "protocol", "datasets", "degradations", "methods"):
        if key not in merged:
            raise SuiteError(f"{path}: suite {name!r} has no {key!r}")
    if merged["protocol"] not in PROTOCOLS:
        raise SuiteError(
            f"{path}: unknown protocol {merged['protocol']!r}; known: {', '.join(PROTOCOLS)}"
        )
    if merged["task"] not in TASKS:
        close = difflib.get_close_matches(str(merged["task"]), TASKS, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SuiteError(
            f"{path}: unknown task {merged['task']!r}{hint}; tasks: {', '.join(TASKS)}"
        )
    if not isinstance(merged["degradations"], list) or not isinstance(merged["methods"], Mapping):
        raise SuiteError(
            f"{path}: 'degradations' is a list of [[degradations]] tables and 'methods' a table "
            "of [methods.<key>] tables"
        )

    datasets = merged["datasets"]
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    registry = (path.parent / merged["registry"]).resolve() if "registry" in merged else None
    try:
        entries = datasets_.registry_of(registry)
    except datasets_.DatasetError as err:
        raise SuiteError(f"{path}: {err}") from None
    available = _available_images(datasets, int(merged.get("count", 0)), path, entries)
    chosen = _choose_images(available, merged.get("images"), path, what=f"suite {name!r}")
    grid_images = tuple(chosen)
    if images_subset:
        chosen = _choose_images(chosen, images_subset, path, what=f"suite {name!r} ({profile})")
    check_protocol_channels(chosen, merged["protocol"], path, entries)

    degradations = tuple(check_degradation(d, path) for d in merged["degradations"])
    grid_degradations = tuple(dict.fromkeys(d["kind"] for d in degradations))
    if levels_subset:
        degradations = _only_levels(degradations, levels_subset, name, profile)
    kinds = {d["kind"] for d in degradations}
    for key, entry in merged["methods"].items():
        if not isinstance(entry, Mapping):
            raise SuiteError(f"{path}: [methods.{key}] must be a table")
    methods = tuple(
        method_spec(key, entry or {}, path, kinds, check=check_methods)
        for key, entry in merged["methods"].items()
        if not (entry or {}).get("skip", False)
    )
    if check_methods:
        for spec in methods:
            check_method_options(spec, merged["task"], degradations, path)
        check_method_channels(methods, chosen, path, entries)
    check_labels(methods, path)
    grid_methods = tuple(m.key for m in methods)
    if methods_subset:
        keys = [m.key for m in methods]
        missing = sorted(set(methods_subset) - set(keys))
        if missing:
            raise SuiteError(
                f"method(s) {missing} not in suite {name!r} ({profile}); "
                f"its methods: {', '.join(keys)}"
            )
        methods = tuple(m for m in methods if m.key in methods_subset)
    return Suite(
        name=name,
        profile=profile,
        profile_defined=profile == "full" or profile in profiles,
        title=merged.get("title", name),
        task=merged["task"],
        protocol=merged["protocol"],
        datasets=tuple(datasets),
        images=tuple(chosen),
        crop=int(merged.get("crop", 0)),
        seed=int(merged.get("seed", 0)),
        repetitions=int(merged.get("repetitions", 1)),
        degradations=degradations,
        methods=methods,
        paper=dict(merged.get("paper", {})),
        notes=merged.get("notes", ""),
        source=path,
        report=dict(merged.get("report", {})),
        method_seed=int(method_seed),
        registry=registry,
        grid_images=grid_images,
        grid_methods=grid_methods,
        grid_degradations=grid_degradations,
    )


def _only_levels(
    degradations: tuple[dict[str, Any], ...],
    wanted: Sequence[float | str],
    name: str,
    profile: str,
) -> tuple[dict[str, Any], ...]:
    """The degradations with only the ``wanted`` levels (ImageNet-C severities count as
    levels; ``"kind:level"`` names one degradation's level); one left with none is dropped.
    Raises :class:`SuiteError` for a level no degradation has."""
    try:
        wanted_ = [_level_of(w) for w in wanted]
    except ValueError as err:
        raise SuiteError(f"--levels: {err}") from None
    kept, found = [], set()
    for deg in degradations:
        field_ = "imagenet_c" if "imagenet_c" in deg else "levels"
        chosen = [
            (kind, level)
            for kind, level in wanted_
            if kind in (None, deg["kind"]) and level in map(float, deg[field_])
        ]
        found.update(chosen)
        levels = [v for v in deg[field_] if float(v) in {level for _, level in chosen}]
        if levels:
            kept.append({**deg, field_: levels})
    missing = [w for w, parsed in zip(wanted, wanted_, strict=True) if parsed not in found]
    if missing:
        every = "; ".join(
            f"{d['kind']} "
            + ", ".join(f"{float(v):g}" for v in d.get("levels", d.get("imagenet_c", [])))
            for d in degradations
        )
        raise SuiteError(
            f"level(s) {', '.join(map(str, missing))} not in suite {name!r} ({profile}); "
            f"its levels: {every}"
        )
    return tuple(kept)


def _level_of(wanted: float | str) -> tuple[str | None, float]:
    """``30`` or ``"30"`` -> (None, 30.0): every degradation's level 30;
    ``"poisson_counts:50"`` -> ("poisson_counts", 50.0)."""
    kind, sep, level = str(wanted).rpartition(":")
    try:
        return (kind if sep else None), float(level)
    except ValueError:
        raise ValueError(
            f"{wanted!r} is not a level (30) or KIND:LEVEL (poisson_counts:50)"
        ) from None


def _available_images(
    datasets: list[str], count: int, path: Path, registry: list[images.Entry]
) -> list[tuple[str, str]]:
    """Every (dataset, image) of the named sets of ``registry`` (the packaged one and the
    suite's own); an archive set yields ``count`` images."""
    try:
        entries = images.select(registry, datasets)
    except KeyError as err:
        raise SuiteError(f"{path}: {err.args[0]}") from err
    found: list[tuple[str, str]] = []
    for dataset in datasets:
        members = [e for e in entries if e.set == dataset]
        if any(e.kind == "archive" for e in members):
            if count <= 0:
                raise SuiteError(f"{path}: dataset {dataset!r} is an archive; give 'count'")
            found += [(dataset, name) for name in archives.archive_image_names(dataset, count)]
        else:
            found += [(dataset, e.name) for e in members]
    return found


def _choose_images(
    available: Sequence[tuple[str, str]], wanted: Sequence[str] | None, path: Path, *, what: str
) -> list[tuple[str, str]]:
    """Filter by names, ``image`` or ``dataset/image``, keeping the order of ``wanted``."""
    if not wanted:
        return list(available)
    chosen, unknown = [], []
    for name in wanted:
        hits = [(d, i) for d, i in available if name in (i, f"{d}/{i}")]
        if not hits:
            unknown.append(name)
        chosen += [h for h in hits if h not in chosen]
    if unknown:
        names = ", ".join(f"{d}/{i}" for d, i in available)
        raise SuiteError(f"image(s) {unknown} not in {what}; its images: {names}")
    return chosen
