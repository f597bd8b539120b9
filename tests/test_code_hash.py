"""A module's hash is what it computes: where its imports sit is not (scheme 3), and records of
the scheme before are re-stamped, never recomputed, while their files are today's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmark import code_hash, provenance
from benchmark.cli import main

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
