"""Suites: experiment grids as data (TOML), expanded into independent cells.

A suite file names a dataset, the degradations and their levels, the methods with their
options, the evaluation protocol, and per-profile overrides (``full`` is the paper's protocol;
``quick`` and ``ci`` shrink crops, iterations, networks or the image list). The format is
documented in the README; the packaged suites live in ``benchmark/suites/``.

A cell is one (image, degradation, level, method, repetition). Its seeds depend only on what
it is, never on the order of execution: the degradation seed hashes (base seed, dataset,
image, degradation, level, repetition), so every method sees the very same degraded input,
and the method seed hashes the degradation seed with the method's name.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import inspect
import json
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmark import __version__, images
from benchmark.degradations import DEGRADATIONS, TASKS, imagenet_c_level
from benchmark.methods import get_method
from benchmark.metrics import PROTOCOLS

SUITES_DIR = Path(__file__).with_name("suites")
PROFILES = ("full", "quick", "ci")
_SUITE_KEYS = {
    "name",
    "title",
    "task",
    "protocol",
    "paper",
    "datasets",
    "images",
    "count",
    "crop",
    "seed",
    "repetitions",
    "degradations",
    "methods",
    "profiles",
    "notes",
    "report",
}
_METHOD_KEYS = {
    "method",
    "label",
    "preset",
    "network",
    "fit",
    "options",
    "outputs",
    "skip",
    "degradations",
}


_DEGRADATION_KEYS = {"kind", "levels", "imagenet_c", "datasets", "options"}


class SuiteError(ValueError):
    """A suite file or a selection that does not make sense; the message lists valid names."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# What each key of a suite may hold: (test, how to say it).
_TEXT = (lambda v: isinstance(v, str), "a string")
_TABLE = (lambda v: isinstance(v, Mapping), "a table")
_NAMES = (lambda v: isinstance(v, str) or _is_str_list(v), "a name or a list of names")
_SUITE_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": _TEXT,
    "title": _TEXT,
    "task": _TEXT,
    "protocol": _TEXT,
    "notes": _TEXT,
    "paper": _TABLE,
    "report": _TABLE,
    "methods": _TABLE,
    "profiles": _TABLE,
    "datasets": _NAMES,
    "images": (_is_str_list, "a list of image names"),
    "count": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "crop": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0 (0: whole images)"),
    "seed": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "repetitions": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "degradations": (
        lambda v: isinstance(v, list) and all(isinstance(d, Mapping) for d in v),
        "a list of [[degradations]] tables",
    ),
}
_METHOD_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "method": _TEXT,
    "label": _TEXT,
    "preset": (
        lambda v: (
            isinstance(v, str)
            or (isinstance(v, Mapping) and all(isinstance(x, str) for x in v.values()))
        ),
        "a preset name, or a table of preset names by degradation kind",
    ),
    "network": _TABLE,
    "fit": _TABLE,
    "options": _TABLE,
    "outputs": (_is_str_list, "a list of output names"),
    "skip": (lambda v: isinstance(v, bool), "true or false"),
    "degradations": _NAMES,
}
_DEGRADATION_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "kind": _TEXT,
    "datasets": (_is_str_list, "a list of dataset names"),
    "options": _TABLE,
}


def _check_types(
    table: Mapping[str, Any], types: Mapping[str, tuple[Callable[[Any], bool], str]], where: str
) -> None:
    for key, value in table.items():
        if key in types and not types[key][0](value):
            raise SuiteError(f"{where}: {key!r} must be {types[key][1]}, got {value!r}")


def _unknown(found: Iterable[str], valid: Iterable[str], where: str) -> None:
    """Raise a SuiteError naming each unknown key with the closest valid one."""
    valid = sorted(valid)
    unknown = sorted(set(found) - set(valid))
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    raise SuiteError(f"{where}: unknown {', '.join(hints)}; valid: {', '.join(valid)}")


@dataclass(frozen=True)
class MethodSpec:
    """One method entry of a suite, after profile overrides."""

    key: str  # the name in the suite and in the tables
    method: str  # registry name or package.module:function
    label: str
    options: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()  # () = every output the method produces
    presets: dict[str, str] = field(default_factory=dict)  # degradation kind -> preset
    degradations: tuple[str, ...] = ()  # the kinds it runs on; () = every kind of the suite

    def runs_on(self, degradation: str) -> bool:
        """Whether this method has a cell for degradation kind ``degradation``."""
        return not self.degradations or degradation in self.degradations

    def options_for(self, degradation: str) -> dict[str, Any]:
        """The call options for one degradation kind (a preset may depend on it)."""
        if degradation in self.presets:
            return {**self.options, "preset": self.presets[degradation]}
        return dict(self.options)


@dataclass(frozen=True)
class Cell:
    """One unit of work: everything that determines its result."""

    suite: str
    profile: str
    dataset: str
    image: str
    crop: int
    task: str
    protocol: str
    degradation: str
    level: float
    severity: int | None
    degradation_options: dict[str, Any]
    repetition: int
    method_key: str
    method: str
    method_options: dict[str, Any]
    outputs: tuple[str, ...]
    degradation_seed: int
    method_seed: int

    def key(self, device_type: str) -> str:
        """A hash of everything that determines the result, the package version included."""
        content = asdict(self)
        content.pop("suite")  # the same cell in two suites computes the same thing
        content.pop("profile")
        content.update(version=__version__, device_type=device_type)
        return _digest(content)[:20]

    @property
    def label(self) -> str:
        return (
            f"{self.image} {self.degradation}={self.level:g} {self.method_key} r{self.repetition}"
        )


def _digest(content: Any) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def seed_of(*parts: Any) -> int:
    """A 63-bit seed from any JSON-serialisable parts, independent of execution order."""
    return int(_digest(list(parts))[:16], 16) >> 1


@dataclass(frozen=True)
class Suite:
    """A suite resolved for one profile."""

    name: str
    profile: str
    title: str
    task: str
    protocol: str
    datasets: tuple[str, ...]
    images: tuple[tuple[str, str], ...]  # (dataset, image)
    crop: int
    seed: int
    repetitions: int
    degradations: tuple[dict[str, Any], ...]
    methods: tuple[MethodSpec, ...]
    paper: dict[str, Any]
    notes: str
    source: Path
    report: dict[str, Any] = field(default_factory=dict)
    method_seed: int = 0  # 0: the suite's method seeds; K > 0: stream K (same degraded inputs)

    def cells(self) -> list[Cell]:
        """The grid, image-major (so a suite's first results cover whole images)."""
        cells = []
        for dataset, image in self.images:
            for deg in self.degradations:
                if deg.get("datasets") and dataset not in deg["datasets"]:
                    continue
                for level, severity in _levels(deg):
                    for rep in range(self.repetitions):
                        d_seed = seed_of(self.seed, dataset, image, deg["kind"], level, rep)
                        for spec in self.methods:
                            if not spec.runs_on(deg["kind"]):
                                continue
                            cells.append(
                                Cell(
                                    suite=self.name,
                                    profile=self.profile,
                                    dataset=dataset,
                                    image=image,
                                    crop=self.crop,
                                    task=self.task,
                                    protocol=self.protocol,
                                    degradation=deg["kind"],
                                    level=level,
                                    severity=severity,
                                    degradation_options=deg.get("options", {}),
                                    repetition=rep,
                                    method_key=spec.key,
                                    method=spec.method,
                                    method_options=spec.options_for(deg["kind"]),
                                    outputs=spec.outputs,
                                    degradation_seed=d_seed,
                                    method_seed=self._method_seed(d_seed, spec.key),
                                )
                            )
        return cells

    def _method_seed(self, degradation_seed: int, key: str) -> int:
        """The seed of a method's own randomness (network initialisation, input noise)."""
        if self.method_seed == 0:
            return seed_of(degradation_seed, key)
        return seed_of(degradation_seed, key, "stream", self.method_seed)


def _levels(deg: Mapping[str, Any]) -> list[tuple[float, int | None]]:
    if "imagenet_c" in deg:
        return [(float(imagenet_c_level(deg["kind"], s)), int(s)) for s in deg["imagenet_c"]]
    return [(float(level), None) for level in deg["levels"]]


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
        return tomllib.loads(path.read_text()), path
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path}: not valid TOML: {err}") from err


def load_suite(
    name_or_path: str,
    profile: str = "full",
    *,
    images_subset: Sequence[str] | None = None,
    methods_subset: Sequence[str] | None = None,
    method_seed: int = 0,
) -> Suite:
    """Load a suite for one profile, optionally restricted to some images or methods.

    ``method_seed`` K > 0 draws every method's own randomness from stream K while the degraded
    inputs stay the same: repetitions of a method for measuring its spread over seeds.
    """
    if method_seed < 0:
        raise SuiteError(
            f"method seed must be 0 (the suite's) or a positive stream, got {method_seed}"
        )
    raw, path = read_suite_file(name_or_path)
    _unknown(raw, _SUITE_KEYS, f"{path}: suite key(s)")
    _check_types(raw, _SUITE_TYPES, str(path))
    profiles = raw.get("profiles", {})
    if not isinstance(profiles, Mapping):
        raise SuiteError(f"{path}: 'profiles' must be a table of [profiles.<name>] tables")
    _unknown(profiles, PROFILES, f"{path}: profile(s)")
    for name_, table in profiles.items():
        if not isinstance(table, Mapping):
            raise SuiteError(f"{path}: [profiles.{name_}] must be a table")
        _unknown(table, _SUITE_KEYS - {"profiles", "name"}, f"{path}: [profiles.{name_}] key(s)")
        _check_types(table, _SUITE_TYPES, f"{path}: [profiles.{name_}]")
    if profile not in PROFILES:
        raise SuiteError(f"unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
    merged = _merge({k: v for k, v in raw.items() if k != "profiles"}, profiles.get(profile, {}))
    name = merged.get("name", path.stem)
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
    available = _available_images(datasets, int(merged.get("count", 0)), path)
    chosen = _choose_images(available, merged.get("images"), path, what=f"suite {name!r}")
    if images_subset:
        chosen = _choose_images(chosen, images_subset, path, what=f"suite {name!r} ({profile})")
    _check_protocol_channels(chosen, merged["protocol"], path)

    degradations = tuple(_check_degradation(d, path) for d in merged["degradations"])
    kinds = {d["kind"] for d in degradations}
    for key, entry in merged["methods"].items():
        if not isinstance(entry, Mapping):
            raise SuiteError(f"{path}: [methods.{key}] must be a table")
    methods = tuple(
        _method_spec(key, entry or {}, path, kinds)
        for key, entry in merged["methods"].items()
        if not (entry or {}).get("skip", False)
    )
    for spec in methods:
        _check_method_options(spec, merged["task"], degradations, path)
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
    )


def _available_images(datasets: list[str], count: int, path: Path) -> list[tuple[str, str]]:
    """Every (dataset, image) of the named sets; an archive set yields ``count`` images."""
    registry = images.load_registry()
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
            found += [(dataset, name) for name in images.archive_image_names(dataset, count)]
        else:
            found += [(dataset, e.name) for e in members]
    return found


def _check_protocol_channels(chosen: Sequence[tuple[str, str]], protocol: str, path: Path) -> None:
    """A ``gray`` protocol on color images (or ``rgb`` on gray ones) would fail every cell
    when it is scored; say so now."""
    wanted = {"gray": "gray", "rgb": "RGB"}.get(protocol)
    if wanted is None:
        return
    modes = {(e.set, e.name): e.mode for e in images.load_registry()}
    kinds = {"L": "gray", "1": "gray", "LA": "gray", "RGB": "RGB", "RGBA": "RGB"}
    wrong = [f"{d}/{i}" for d, i in chosen if kinds.get(modes.get((d, i), "RGB"), wanted) != wanted]
    if wrong:
        other = "rgb" if wanted == "gray" else "gray"
        raise SuiteError(
            f"{path}: protocol {protocol!r} scores {wanted} images, but "
            f"{', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''} are not; use protocol "
            f"{other!r} (or sr-y), or other images"
        )


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


def _check_degradation(entry: Mapping[str, Any], path: Path) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise SuiteError(f"{path}: each [[degradations]] entry must be a table")
    kind = entry.get("kind")
    if kind not in DEGRADATIONS:
        close = difflib.get_close_matches(str(kind), list(DEGRADATIONS), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SuiteError(
            f"{path}: unknown degradation {kind!r}{hint}; known: {', '.join(DEGRADATIONS)}"
        )
    _unknown(entry, _DEGRADATION_KEYS, f"{path}: degradation {kind!r} key(s)")
    _check_types(entry, _DEGRADATION_TYPES, f"{path}: degradation {kind!r}")
    options = entry.get("options", {})
    if not isinstance(options, Mapping):
        raise SuiteError(f"{path}: degradation {kind!r}: options must be a table")
    parameters = inspect.signature(DEGRADATIONS[kind]).parameters.values()
    accepted = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    _unknown(options, accepted, f"{path}: degradation {kind!r} option(s)")
    if ("levels" in entry) == ("imagenet_c" in entry):
        raise SuiteError(f"{path}: degradation {kind!r} needs either 'levels' or 'imagenet_c'")
    values = entry.get("levels", entry.get("imagenet_c"))
    if not isinstance(values, list) or not values:
        raise SuiteError(f"{path}: degradation {kind!r}: give a non-empty list, e.g. levels = [25]")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SuiteError(
                f"{path}: degradation {kind!r}: level {value!r} is not a number "
                "(levels are numbers in the degradation's units, e.g. sigma = 25 on 0-255)"
            )
    if "imagenet_c" in entry and not all(v in (1, 2, 3, 4, 5) for v in values):
        raise SuiteError(f"{path}: degradation {kind!r}: ImageNet-C severities are 1..5")
    return dict(entry)


def _check_method_options(
    spec: MethodSpec, task: str, degradations: Sequence[Mapping[str, Any]], path: Path
) -> None:
    """Unknown options fail here, when the suite loads, not hours into a run."""
    from benchmark.methods.priors import check_setting, has_presets

    where = f"{path}: method {spec.key!r}"
    if has_presets(spec.method):
        for deg in degradations:
            if not spec.runs_on(deg["kind"]):
                continue
            for level, _ in _levels(deg):
                options = spec.options_for(deg["kind"])
                factor = int(level) if task == "super_resolution" else None
                try:
                    check_setting(
                        spec.method,
                        task,
                        factor,
                        preset=options.get("preset"),
                        network=options.get("network"),
                        fit_options=options.get("fit_options"),
                    )
                except (KeyError, ValueError, TypeError) as err:
                    raise SuiteError(f"{where}: {err.args[0] if err.args else err}") from err
        return
    if ":" in spec.method:
        return  # a user's function: its options are its own business
    extra = set(spec.options) - {"preset"}
    if "network" in extra or "fit_options" in extra:
        raise SuiteError(f"{where}: 'network' and 'fit' apply to network methods (dip, dd) only")
    parameters = inspect.signature(get_method(spec.method).function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    accepted = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    _unknown(extra, [a for a in accepted if a != "seed"], f"{where}: option(s)")


def _method_spec(key: str, entry: Mapping[str, Any], path: Path, kinds: set[str]) -> MethodSpec:
    _unknown(entry, _METHOD_KEYS, f"{path}: method {key!r} key(s)")
    _check_types(entry, _METHOD_TYPES, f"{path}: method {key!r}")
    runs_on = entry.get("degradations", [])
    runs_on = [runs_on] if isinstance(runs_on, str) else list(runs_on)
    absent = sorted(set(runs_on) - kinds)
    if absent:
        raise SuiteError(
            f"{path}: method {key!r}: degradations {absent} are not in the suite; "
            f"its degradations: {', '.join(sorted(kinds))}"
        )
    method = entry.get("method", key)
    try:
        get_method(method)
    except KeyError as err:
        raise SuiteError(f"{path}: {err.args[0]}") from err
    options: dict[str, Any] = dict(entry.get("options", {}))
    presets: dict[str, str] = {}
    if isinstance(entry.get("preset"), Mapping):
        presets = dict(entry["preset"])
    elif "preset" in entry:
        options["preset"] = entry["preset"]
    if "network" in entry:
        options["network"] = dict(entry["network"])
    if "fit" in entry:
        options["fit_options"] = dict(entry["fit"])
    return MethodSpec(
        key=key,
        method=method,
        label=entry.get("label", key),
        options=options,
        outputs=tuple(entry.get("outputs", ())),
        presets=presets,
        degradations=tuple(runs_on),
    )
