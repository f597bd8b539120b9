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


def test_listing_suites_and_a_classical_restore_load_no_torch(tmp_path: Path) -> None:
    """``dipbench list`` and ``restore`` with a classical method start without torch (or any
    network's code): on this machine they answer in about a second instead of five."""
    image = tmp_path / "noisy.png"
    code = (
        "import contextlib, io, numpy as np\nfrom PIL import Image\n"
        "from benchmark.cli import main\n"
        f"Image.fromarray(np.full((40, 41, 3), 99, np.uint8)).save({str(image)!r})\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['list']) == 0\n"
        f"    assert main(['restore', {str(image)!r}, '--task', 'denoising', '--method', 'tv', "
        f"'--sigma', '25', '--out', {str(tmp_path / 'out.png')!r}]) == 0"
    )
    networks = "m == 'torch' or m.startswith(('benchmark.methods.fit', 'benchmark.methods.priors'))"
    assert _loaded_after(code, networks) == []
    assert (tmp_path / "out.png").is_file()


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere (function bodies too), each
    ``from X import y`` counted as ``X.y`` when that is a module, else ``X``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def _import_graph() -> dict[str, set[str]]:
    paths = _sources(PACKAGE)
    known = {_module_name(p) for p in paths}
    return {_module_name(p): _imported_modules(p, known) for p in paths}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected part of ``graph`` that has one (a package's
    ``__init__`` importing its own modules is not an edge back from them: a module does not
    import its package by being in it)."""
    cycles, state = [], dict.fromkeys(graph, 0)  # 0 new, 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state[nxt] == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif state[nxt] == 0:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    return cycles


def test_no_import_cycle_in_the_package() -> None:
    """No module imports, even inside a function, a module that imports it back: the data
    flow goes one way (images -> forward -> degradations -> methods -> runner -> report)."""
    graph = _import_graph()
    assert len(graph) > 40 and graph["benchmark.degradations"]  # the finder finds edges
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_the_runner_needs_no_network_internals() -> None:
    """The runner asks a method's declared contract (``methods.contract``), never DIP's and
    the Deep Decoder's presets, fitting loop or networks."""
    internals = ("benchmark.methods.priors", "benchmark.methods.fit", "benchmark.methods.networks")
    graph = _import_graph()
    found = {
        f"{module} imports {imported}"
        for module, imports in graph.items()
        if module.startswith("benchmark.runner")
        for imported in imports
        if imported.startswith(internals)
    }
    assert found == set()


def _layout_paths(text: str) -> set[str]:
    """The files docs/design.md's layout block names, as paths under ``benchmark/``."""
    block = text.split("```\nbenchmark/\n", 1)[1].split("```", 1)[0]
    paths, folders = set(), []
    for line in block.splitlines():
        name = line.strip().split(" ", 1)[0]
        if not name or line.startswith(" " * 21):  # blank, or a description's continuation
            continue
        depth = (len(line) - len(line.lstrip())) // 2 - 1
        folders = folders[:depth]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            paths.add("/".join([*folders, name]))
    return paths


def test_the_design_layout_names_every_module() -> None:
    named = _layout_paths((ROOT / "docs" / "design.md").read_text())
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    assert modules - named == set(), "modules the layout of docs/design.md does not name"
    assert named - modules == set(), "names in the layout of docs/design.md with no module"
