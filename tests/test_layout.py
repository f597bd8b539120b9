"""The layout's rules, checked on the source: small modules, no reaching into another
module's private names, no behaviour keyed on a method's name outside its registration, and a
command line that answers ``--help`` without importing torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "benchmark"
MAX_LINES = 420  # "about 400"
# Where a method's own name may be tested: its registration and its presets.
METHOD_DEFINITIONS = {PACKAGE / "methods" / "priors.py", PACKAGE / "methods" / "classical.py"}
NETWORK_NAMES = {"dip", "dd"}


def _sources(*folders: Path) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob("*.py"))


@pytest.mark.parametrize("path", _sources(PACKAGE), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_about_400_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it"


def _private_imports(path: Path) -> list[str]:
    """``from benchmark.x import _name`` and ``benchmark.x._name`` uses in one file."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("benchmark"):
            found += [
                f"{node.module}.{alias.name}"
                for alias in node.names
                if alias.name.startswith("_") and not alias.name.startswith("__")
            ]
    return found


@pytest.mark.parametrize(
    "path", _sources(PACKAGE, ROOT / "tests"), ids=lambda p: str(p.relative_to(ROOT))
)
def test_no_import_of_another_modules_private_name(path: Path) -> None:
    assert not _private_imports(path)


def _method_name_tests(path: Path) -> list[str]:
    """Comparisons of anything with a network method's name (``m == "dip"``, ``m in
    ("dip", "dd")``): behaviour keyed on a name instead of a capability."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        for side in [node.left, *node.comparators]:
            names = {
                c.value
                for c in ast.walk(side)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            }
            if names & NETWORK_NAMES:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("path", _sources(PACKAGE), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_method_name_tests_outside_the_methods_definitions(path: Path) -> None:
    if path in METHOD_DEFINITIONS:
        return
    assert not _method_name_tests(path)


def test_the_name_test_finder_finds_one() -> None:
    """The rule above would pass vacuously if the finder found nothing."""
    probe = ROOT / "tests" / "__probe_layout__.py"
    try:
        probe.write_text('def f(cell):\n    return cell.method in ("dip", "dd")\n')
        assert _method_name_tests(probe) == [
            'line 2: cell.method in ("dip", "dd")'.replace('"', "'")
        ]
        probe.write_text("from benchmark.methods.fit import _Loop\n")
        assert _private_imports(probe) == ["benchmark.methods.fit._Loop"]
    finally:
        probe.unlink(missing_ok=True)


def _loaded_after(code: str, wanted: str) -> list[str]:
    """The modules matching the expression ``wanted`` (over ``m``) that a fresh interpreter
    has loaded after running ``code``."""
    probe = f"import sys\n{code}\nprint(','.join(m for m in sys.modules if {wanted}))\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return [name for name in done.stdout.strip().split(",") if name]


def test_help_imports_neither_torch_nor_the_commands_dependencies() -> None:
    """``dipbench --help`` answers at once: building the parser loads no heavy library."""
    code = "from benchmark.cli import build_parser\nbuild_parser().format_help()"
    heavy = "m in ('torch', 'pandas', 'cv2', 'skimage', 'matplotlib', 'pooch')"
    assert _loaded_after(code, heavy) == []


def test_the_report_reads_a_run_folder_without_torch() -> None:
    """The report only reads files: importing it (and the run folder's module it reads
    through) loads neither torch nor a method."""
    code = "import benchmark.report, benchmark.runfolder"
    assert _loaded_after(code, "m == 'torch' or m.startswith('benchmark.methods')") == []
