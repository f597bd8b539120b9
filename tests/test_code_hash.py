"""A module's hash is what it computes: where its imports sit is not (scheme 3), and records of
the scheme before are re-stamped, never recomputed, while their files are today's."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from benchmark import code_hash, provenance
from benchmark.cli import main
from benchmark.methods import all_methods

MODULE = '''"""A module."""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats

SCALE = 2.0


def scaled(x: np.ndarray) -> np.ndarray:
    return ndimage.uniform_filter(x * SCALE, 3)


def spread(x: np.ndarray) -> float:
    return float(stats.iqr(x))
'''

LAZY = '''"""A module."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SCALE = 2.0


def scaled(x: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.uniform_filter(x * SCALE, 3)


def spread(x: np.ndarray) -> float:
    from scipy import stats

    return float(stats.iqr(x))
'''


SUITE = """
name = "mine"
title = "Two classical methods"
task = "denoising"
protocol = "rgb"
datasets = "kodak24"
images = ["kodim01", "kodim02"]
crop = 40

[[degradations]]
kind = "gaussian"
levels = [25]

[methods.median]

[methods.tv]
"""


def _hash(tmp_path: Path, text: str, scheme: int = code_hash.SCHEME) -> str:
    path = tmp_path / "m.py"
    path.write_text(text)
    os.utime(path, ns=(len(text), hash(text) & 0xFFFFFFFF))  # the cache is keyed by time and size
    return code_hash.source_hash(path, scheme)


EAGER_IMPORTS = "import numpy as np\nfrom scipy import ndimage, stats\n"
REORDERED = "from scipy import stats\nimport numpy as np\nfrom scipy import ndimage\n"
ON_GPU = "from cupyx.scipy import ndimage\nfrom scipy import stats"


@pytest.mark.parametrize(
    ("old", "new", "same"),
    [
        (EAGER_IMPORTS, REORDERED, True),
        ("ndimage, stats", "stats, ndimage", True),
        ("ndimage, stats", "ndimage, stats, signal", False),
        ("import numpy as np", "import numpy as onp", False),
        ("from scipy import ndimage, stats", ON_GPU, False),
        ("uniform_filter(x * SCALE, 3)", "uniform_filter(x * SCALE, 5)", False),
    ],
)  # fmt: skip
def test_imports_are_one_set_of_bindings(tmp_path: Path, old: str, new: str, same: bool) -> None:
    edited = MODULE.replace(old, new)
    if "onp" in new:
        edited = edited.replace("np.", "onp.").replace("oonp.", "onp.")
    assert edited != MODULE
    assert (_hash(tmp_path, edited) == _hash(tmp_path, MODULE)) is same


def test_an_import_moved_into_the_function_that_uses_it_hashes_the_same(tmp_path: Path) -> None:
    """The lazy module (numpy for annotations only, scipy where it is called) is the eager one
    by scheme 3, and was another module by scheme 2: the reason the scheme exists."""
    assert _hash(tmp_path, LAZY) == _hash(tmp_path, MODULE)
    assert _hash(tmp_path, LAZY, 2) != _hash(tmp_path, MODULE, 2)
    # a statement in the TYPE_CHECKING block is not an annotation-only import: it counts
    computing = LAZY.replace("    import numpy as np\n", "    import numpy as np\n    SCALE = 3\n")
    assert _hash(tmp_path, computing) != _hash(tmp_path, LAZY)


def test_scheme_two_is_what_the_records_of_scheme_two_hold() -> None:
    """Today's scheme-2 hash of the package's files is the committed reports' (re-stamped from
    them): the function that checks those records still computes what it did."""
    identity = provenance.code_identity("median", 2)
    assert identity["scheme"] == 2
    assert provenance.changed_files(identity) == []
    assert identity["fingerprint"] != provenance.code_identity("median")["fingerprint"]


def test_a_record_of_scheme_two_is_restamped_when_its_files_are_todays(
    mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    suite = tmp_path / "mine.toml"
    suite.write_text(SUITE)
    out = tmp_path / "run"
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 0
    records = sorted((out / "cells").glob("*.json"))
    for number, path in enumerate(records):  # as scheme 2 wrote them
        content = json.loads(path.read_text())
        content["code"] = provenance.code_identity(content["cell"]["method"], 2)
        if number == 0:  # computed by another forward.py than today's
            content["code"]["files"]["benchmark/forward.py"] = "0" * 16
            content["code"]["fingerprint"] = "1" * 16
        content.pop("digest")
        path.write_text(json.dumps(content))
    capsys.readouterr()
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 0
    assert f"{len(records) - 1} already done, 1 to run" in capsys.readouterr().out
    for path in records:
        content = json.loads(path.read_text())
        assert content["code"] == provenance.code_identity(content["cell"]["method"])


DEVICES = "benchmark/methods/fit/devices.py"


def _as_devices(folder: Path, text: str, scheme: int, monkeypatch: pytest.MonkeyPatch) -> str:
    """The hash of ``text`` as the devices module of a package copy in ``folder``."""
    path = folder / DEVICES
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with monkeypatch.context() as patch:
        patch.setattr(code_hash, "PACKAGE_PARENT", folder)
        return code_hash.source_hash(path, scheme)


@pytest.mark.parametrize(
    ("old", "new", "same"),
    [
        ("STEP_MEMORY_FACTOR = 1.75", "STEP_MEMORY_FACTOR = 2.5", True),
        ("    free = available_memory(dev)\n", "    free = available_memory(dev)\n"
         "    import gc\n\n    gc.collect()\n", True),
        ("floats_per_pixel: int = 0\n) -> None:", "floats_per_pixel: int = 1\n) -> None:", True),
        ("    from benchmark import heap\n",
         "    import gc\n    from benchmark import heap\n", True),
        ("float32 tensor.\"\"\"\n    return torch.from_numpy(",
         "float32 tensor.\"\"\"\n    return 2 * torch.from_numpy(", False),
        ("if gflop <= NATIVE_CONV_GFLOP", "if gflop < 0", False),
    ],
)  # fmt: skip
def test_the_memory_guard_is_not_in_the_hash_and_what_computes_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str, same: bool
) -> None:
    """Scheme 4: a change to the memory guard (its factor, its check, an import inside it)
    hashes the same, as it can only refuse a fit; a change to what a fit computes does not.
    By scheme 3 every one of them was another module."""
    text = (code_hash.PACKAGE_PARENT / DEVICES).read_text()
    assert old in text
    edited = text.replace(old, new)
    for scheme, expected in ((4, same), (3, False)):
        before = _as_devices(tmp_path / f"before{scheme}", text, scheme, monkeypatch)
        after = _as_devices(tmp_path / f"after{scheme}", edited, scheme, monkeypatch)
        assert (before == after) is expected, scheme
    # the copy is the package's module by either scheme: the guards are found by path
    assert before == code_hash.source_hash(code_hash.PACKAGE_PARENT / DEVICES, 3)


def test_every_guard_is_defined_and_its_result_feeds_nothing_that_computes() -> None:
    """Each name :data:`GUARDS` lists is a top-level definition of its module (a stale entry
    would hide nothing, a misspelt one would leave a guard hashed), and in every module of
    every method's code identity a guard is only called as a statement of its own: it may
    raise, but nothing a cell computes reads what it returns."""
    guards = set().union(*code_hash.GUARDS.values())
    for module, names in code_hash.GUARDS.items():
        tree = code_hash.parse(code_hash.PACKAGE_PARENT / module)
        defined = set().union(*(code_hash.defined_names(s) for s in tree.body))
        assert names <= defined, (module, names - defined)
    files: set[str] = set()
    for method in all_methods():  # every built-in method, imported or not yet
        files |= set(provenance.code_identity(method)["files"])
    assert DEVICES in files
    for name in sorted(files):
        tree = code_hash.computing_tree(code_hash.PACKAGE_PARENT / name)
        assert not _guard_results_read(tree, guards), name


def _guard_results_read(tree: ast.AST, guards: set[str]) -> list[int]:
    """The lines of ``tree`` that refer to a guard other than as the callee of a call that is
    a statement of its own (its result dropped)."""
    dropped = {
        id(node.value.func)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if (
            getattr(node, "id", None) if isinstance(node, ast.Name) else getattr(node, "attr", None)
        )
        in guards
        and id(node) not in dropped
    ]


@pytest.mark.parametrize(
    ("code", "read"),
    [
        ("check_memory(net, h, w)", False),
        ("devices.check_memory(net, h, w)", False),
        ("ok = check_memory(net, h, w)", True),
        ("scale = devices.STEP_MEMORY_FACTOR * 2", True),
        ("if available_memory(dev) > 0:\n    pass", True),
    ],
)
def test_a_guard_read_by_what_computes_is_found(code: str, read: bool) -> None:
    guards = {"check_memory", "STEP_MEMORY_FACTOR", "available_memory"}
    assert bool(_guard_results_read(ast.parse(code), guards)) is read


def test_what_a_guard_imports_is_not_in_a_methods_code_identity() -> None:
    """The memory guard reads the heap's setting (``benchmark.heap``); the fits do not import
    it, so it is not code that computes a cell."""
    assert "benchmark/heap.py" not in provenance.code_identity("dip")["files"]
