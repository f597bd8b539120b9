"""What a suite file may say: its keys, their types, and the checks that refuse a bad entry
when the suite loads (not hours into a run), each naming the file, the entry and the fix."""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmark import options
from benchmark.degradation_kinds import DEGRADATIONS
from benchmark.grid import MethodSpec, levels_of
from benchmark.methods import get_method
from benchmark.tasks import get_task


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


SUITE_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
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
    "registry": (lambda v: isinstance(v, str) and v != "", "a registry file's path"),
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
    # numbers in the degradation's units, or ImageNet-C severities (check_degradation says more)
    "levels": (lambda v: isinstance(v, list), "a non-empty list, e.g. levels = [25]"),
    "imagenet_c": (lambda v: isinstance(v, list), "a non-empty list of severities 1..5"),
}

# The keys a suite, a method entry and a degradation entry may hold: those the types declare.
SUITE_KEYS = set(SUITE_TYPES)
_METHOD_KEYS = set(_METHOD_TYPES)
_DEGRADATION_KEYS = set(_DEGRADATION_TYPES)


def check_types(
    table: Mapping[str, Any], types: Mapping[str, tuple[Callable[[Any], bool], str]], where: str
) -> None:
    """Raise a SuiteError for a value of ``table`` that its key's test in ``types`` refuses."""
    for key, value in table.items():
        if key in types and not types[key][0](value):
            raise SuiteError(f"{where}: {key!r} must be {types[key][1]}, got {value!r}")


def check_known(found: Iterable[str], valid: Iterable[str], where: str) -> None:
    """Raise a SuiteError naming each unknown key with the closest valid one."""
    options.check_known(found, valid, where, SuiteError)


def check_protocol_channels(
    chosen: Sequence[tuple[str, str]], protocol: str, path: Path, entries: Sequence[Any]
) -> None:
    """A ``gray`` protocol on color images (or ``rgb`` on gray ones) would fail every cell
    when it is scored; say so now."""
    wanted = {"gray": "gray", "rgb": "RGB"}.get(protocol)
    if wanted is None:
        return
    modes = {(e.set, e.name): e.mode for e in entries}
    kinds = {"L": "gray", "1": "gray", "LA": "gray", "RGB": "RGB", "RGBA": "RGB"}
    wrong = [f"{d}/{i}" for d, i in chosen if kinds.get(modes.get((d, i), "RGB"), wanted) != wanted]
    if wrong:
        other = "rgb" if wanted == "gray" else "gray"
        raise SuiteError(
            f"{path}: protocol {protocol!r} scores {wanted} images, but "
            f"{', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''} are not; use protocol "
            f"{other!r} (or sr-y), or other images"
        )


def check_method_channels(
    methods: Sequence[MethodSpec],
    chosen: Sequence[tuple[str, str]],
    path: Path,
    entries: Sequence[Any],
) -> None:
    """A method that takes only color (or only gray) images is refused with the images it
    cannot take, instead of failing each of their cells (or the estimate) later."""
    modes = {(e.set, e.name): e.mode for e in entries}
    for spec in methods:
        accepted = get_method(spec.method).channels
        if not accepted:
            continue
        wrong = [
            f"{d}/{i}"
            for d, i in chosen
            if (1 if modes.get((d, i), "RGB") in ("L", "1", "LA") else 3) not in accepted
        ]
        if wrong:
            kind = "color" if accepted == (3,) else f"{accepted}-channel"
            raise SuiteError(
                f"{path}: method {spec.key!r} ({spec.method}) takes {kind} images only, and "
                f"{', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''} are not; remove it "
                "from this suite or choose other images (bm3d for gray images)"
            )


def check_degradation(entry: Mapping[str, Any], path: Path) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise SuiteError(f"{path}: each [[degradations]] entry must be a table")
    kind = entry.get("kind")
    if kind not in DEGRADATIONS:
        close = difflib.get_close_matches(str(kind), list(DEGRADATIONS), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SuiteError(
            f"{path}: unknown degradation {kind!r}{hint}; known: {', '.join(DEGRADATIONS)}"
        )
    check_known(entry, _DEGRADATION_KEYS, f"{path}: degradation {kind!r} key(s)")
    check_types(entry, _DEGRADATION_TYPES, f"{path}: degradation {kind!r}")
    options = entry.get("options", {})
    if not isinstance(options, Mapping):
        raise SuiteError(f"{path}: degradation {kind!r}: options must be a table")
    parameters = inspect.signature(DEGRADATIONS[kind]).parameters.values()
    accepted = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    check_known(options, accepted, f"{path}: degradation {kind!r} option(s)")
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
    # Levels are shown (figure names: "{level:g}") and checked (rounded to 6 decimals) by
    # value: two levels that read the same there would be one level twice.
    if len({f"{round(float(v), 6):g}" for v in values}) < len(values):
        raise SuiteError(
            f"{path}: degradation {kind!r}: a level is listed twice in {values} (levels equal "
            "to 6 decimals are one level)"
        )
    if "levels" in entry:
        check_levels(kind, values, f"{path}: degradation {kind!r}")
    return dict(entry)


MAX_LEVEL = 1e4  # sigma 10000 on 0-255 is noise alone; a factor of 10000 leaves no pixel


def check_levels(kind: str, values: Sequence[float], where: str) -> None:
    """A level that degrades nothing (0, a negative one) or a fraction that is not one would
    run as if fine and score an undegraded image."""
    level_name = list(inspect.signature(DEGRADATIONS[kind]).parameters)[1]
    for value in values:
        if not math.isfinite(value) or value > MAX_LEVEL:
            raise SuiteError(
                f"{where}: level {value!r} is not a level any degradation has (finite, at "
                f"most {MAX_LEVEL:g} in its units)"
            )
        if not value > 0:
            raise SuiteError(f"{where}: level {value!r} degrades nothing; levels are > 0")
        if level_name == "fraction" and not value < 1:
            raise SuiteError(f"{where}: level {value!r} is a fraction of the pixels: 0 < f < 1")


def check_suite_name(name: Any, path: Path) -> str:
    """A suite's name becomes a folder name: a plain name, never a path."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise SuiteError(
            f"{path}: suite name {name!r} is not a plain name (letters, digits, '.', '_' and "
            "'-', starting with a letter or digit): it names the run folder"
        )
    return name


def check_labels(methods: Sequence[MethodSpec], path: Path) -> None:
    """Two methods with one label would share a table row (a mean neither produced); a '|'
    would break the Markdown table."""
    seen: dict[str, str] = {}
    for spec in methods:
        if "|" in spec.label or "\n" in spec.label:
            raise SuiteError(f"{path}: method {spec.key!r}: label {spec.label!r} holds '|'")
        if spec.label in seen:
            raise SuiteError(
                f"{path}: methods {seen[spec.label]!r} and {spec.key!r} share the label "
                f"{spec.label!r}: give each its own"
            )
        seen[spec.label] = spec.key


def check_method_options(
    spec: MethodSpec, task: str, degradations: Sequence[Mapping[str, Any]], path: Path
) -> None:
    """Unknown options fail here, when the suite loads, not hours into a run."""
    where = f"{path}: method {spec.key!r}"
    info = get_method(spec.method)
    for deg in degradations:
        if not spec.runs_on(deg["kind"]):
            continue
        for level, _ in levels_of(deg):
            factor = get_task(task).factor(level)
            check_options_for(info, task, factor, spec.options_for(deg["kind"]), where)


def check_options_for(
    info: Any,
    task: str,
    factor: int | None,
    given: Mapping[str, Any],
    where: str,
    error: type[Exception] = SuiteError,
) -> None:
    """Raise ``error`` when ``info``'s method would refuse the options ``given`` for ``task``
    (its own ``check_options``, else its named keyword parameters): a suite's methods when it
    loads, ``dipbench restore --option`` before the fit."""
    if info.check_options is not None:
        try:
            info.check_options(task, factor, **given)
        except (KeyError, ValueError, TypeError) as err:
            raise error(f"{where}: {err.args[0] if err.args else err}") from err
        return
    extra = set(given) - {"preset"}
    if "network" in extra or "fit_options" in extra:
        raise error(
            f"{where}: 'network' and 'fit' apply to network methods configured by presets only"
        )
    if info.any_options:
        return  # it declares that it takes anything: its options are its own business
    # The named keyword parameters are the options, with or without **options (which a
    # method may keep to pass options on): a misspelt option must never run on a default.
    parameters = list(inspect.signature(info.function).parameters.values())
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    accepted = [p.name for p in parameters[1:] if p.kind in named]  # after the observation
    accepted = [a for a in accepted if a != "seed"]
    options.check_known(extra, accepted, f"{where}: option(s)", error)
    defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
    for name in sorted(extra & set(defaults)):
        if not _same_kind(given[name], defaults[name]):
            raise error(
                f"{where}: option {name!r} = {given[name]!r} ({type(given[name]).__name__}) "
                f"where its default is {defaults[name]!r} ({type(defaults[name]).__name__})"
                + (" (write it without quotes)" if isinstance(given[name], str) else "")
            )


def _same_kind(value: Any, default: Any) -> bool:
    """Whether ``value`` can stand where the method's ``default`` does: the same type, an
    integer for a float, anything for a default of None (no type to hold it to)."""
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (int, str)):
        return isinstance(value, type(default))
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return True  # a default of another type: the method's own business


def method_spec(
    key: str, entry: Mapping[str, Any], path: Path, kinds: set[str], *, check: bool = True
) -> MethodSpec:
    """One ``[methods.<key>]`` table as a :class:`MethodSpec`; ``check``: the method must be
    registered (or importable as ``module:function``)."""
    check_known(entry, _METHOD_KEYS, f"{path}: method {key!r} key(s)")
    check_types(entry, _METHOD_TYPES, f"{path}: method {key!r}")
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
        if check:
            get_method(method)
    except KeyError as err:
        raise SuiteError(f"{path}: {err.args[0]}") from err
    options: dict[str, Any] = dict(entry.get("options", {}))
    presets: dict[str, str] = {}
    if isinstance(entry.get("preset"), Mapping):
        presets = dict(entry["preset"])
        unknown = sorted(set(presets) - kinds)
        if unknown:  # e.g. gaussian_25: a preset per level, which a suite cannot say
            raise SuiteError(
                f"{path}: method {key!r}: preset keys {unknown} are not degradation kinds of "
                f"the suite ({', '.join(sorted(kinds))}); the table names a preset per kind, "
                'e.g. preset = { gaussian = "denoising" } (a preset per level: one suite per '
                "level)"
            )
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
