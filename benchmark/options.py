"""One validator for every table of options a user writes (a suite's keys, a method's, a
network's, a fit's): keys against the names that declare them, with the closest valid name
for a misspelt one, and values against the type of what they set.

The names come from where the options are declared, never from a second list: a dataclass's
fields (``FitConfig``, the network configs), a schema's table of types (:mod:`benchmark.
suite_schema`), a function's keyword parameters (a method's options).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields
from typing import Any


def check_known(
    found: Iterable[str], valid: Iterable[str], where: str, error: type[Exception] = KeyError
) -> None:
    """Raise ``error`` naming each key of ``found`` not in ``valid``, with the closest valid
    one, and listing the valid ones.

    Examples
    --------
    >>> check_known(["iteratons"], ["iterations", "lr"], "fit")
    Traceback (most recent call last):
    ...
    KeyError: "fit: unknown 'iteratons' (did you mean 'iterations'?); valid: iterations, lr"
    """
    valid = sorted(valid)
    unknown = sorted(set(found) - set(valid))
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    raise error(f"{where}: unknown {', '.join(hints)}; valid: {', '.join(valid)}")


def field_defaults(cls: type) -> dict[str, Any]:
    """The default of each field of the dataclass ``cls`` (None for a field without one)."""
    defaults = {}
    for f in fields(cls):
        if f.default is not MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not MISSING:
            defaults[f.name] = f.default_factory()
        else:
            defaults[f.name] = None
    return defaults


def check_fields(cls: type, values: Mapping[str, Any], what: str) -> None:
    """Check a table of options for the dataclass ``cls``: ``KeyError`` for a key that is not
    a field (:func:`check_known`), ``TypeError`` for a value whose type differs from its
    field's default's (a number for a number, a whole number where the default is one, a
    string for a string, a list for a tuple); fields that default to None take anything."""
    defaults = field_defaults(cls)
    check_known(values, defaults, f"{what} option(s)")
    for key, value in values.items():
        default = defaults[key]
        if default is None:
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int | float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and (isinstance(value, int) or isinstance(default, float))
        elif isinstance(default, tuple):
            ok = isinstance(value, list | tuple)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            kind = type(default).__name__
            raise TypeError(
                f"{what} option {key!r} must be like {default!r} ({kind}), got {value!r}"
            )
