"""The registry's lazy door (``benchmark.methods``): a lookup imports only the module that
implements the method, and the table that says which module that is stays true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.methods import BUILT_IN, all_methods, get_method, register

ROOT = Path(__file__).resolve().parents[1]


def _fresh(code: str) -> str:
    """What a fresh interpreter prints after running ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return done.stdout.strip()


def test_the_built_in_table_names_each_methods_own_module() -> None:
    built_in = {
        name: info.function.__module__.removeprefix("benchmark.methods.")
        for name, info in all_methods().items()
        if info.function.__module__.startswith("benchmark.methods.")
    }
    assert built_in == BUILT_IN


def test_a_lookup_imports_only_its_methods_module() -> None:
    code = (
        "import sys\nfrom benchmark.methods import get_method\nget_method('tv')\n"
        "print(','.join(m for m in sys.modules if m == 'torch' or m.startswith('benchmark.')))"
    )
    loaded = set(_fresh(code).split(","))
    assert "benchmark.methods.classical" in loaded
    assert not loaded & {"torch", "benchmark.methods.priors", "benchmark.methods.zsn2n"}
    assert not any(m.startswith(("benchmark.methods.fit", "benchmark.methods.net")) for m in loaded)


def test_an_unknown_name_lists_every_method_even_those_not_imported() -> None:
    code = (
        "from benchmark.methods import get_method\ntry:\n    get_method('nope')\n"
        "except KeyError as err:\n    print(err.args[0])"
    )
    message = _fresh(code)
    assert message.startswith("unknown method 'nope'")
    assert all(name in message for name in BUILT_IN)


def test_a_built_in_name_is_refused_before_its_module_is_imported() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register("zsn2n", tasks=("denoising",), description="a copy")(lambda y, **_: y)
    assert get_method("zsn2n").function.__module__ == "benchmark.methods.zsn2n"
