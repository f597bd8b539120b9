"""What a Python file computes, as a hash: the code half of a cell's identity.

Four schemes have stamped records; each record says which (``scheme``), and is checked by it:

1. (no ``scheme`` key) the file's bytes.
2. its syntax tree without docstrings (and other bare strings); comments and formatting are
   not in the tree.
3. as 2, with the import statements gathered into one set of bindings (module, name, alias)
   wherever they sit: moving ``import torch`` from the top of a module into the function
   that uses it (so that a command that never calls it starts without torch), splitting or
   joining ``from x import a, b``, or reordering imports computes the same thing and hashes
   the same. Annotation-only imports (an ``if TYPE_CHECKING:`` block holding only imports,
   and the ``TYPE_CHECKING`` flag itself) bind nothing at run time and are left out. Any
   other change of what is imported (another module, name or alias) changes the hash.
4. as 3, without the top-level definitions that :data:`GUARDS` names: code that only refuses
   a fit before it starts (the memory guard's estimate and check). It can change whether a
   cell runs, never what a cell that ran computed, so tuning it re-runs nothing. A guard's
   result may not feed what computes: outside the guards a guard is only called as a
   statement of its own, its result dropped (``tests/test_code_hash.py`` checks every module
   a method's identity holds). The imports inside a guard go with it. A file without a guard
   hashes as by scheme 3.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path
from typing import Any

SCHEME = 4
TYPE_CHECKING_FLAG = ("typing", "TYPE_CHECKING")
PACKAGE_PARENT = Path(__file__).resolve().parent.parent

# Scheme 4 leaves these top-level definitions out of their module's hash (by the module's
# path from the package's parent folder): they only refuse a fit that would not fit.
GUARDS: dict[str, frozenset[str]] = {
    "benchmark/methods/fit/devices.py": frozenset(
        {
            "STEP_MEMORY_FACTOR",
            "PARAMETER_COPIES",
            "MEMORY_LIMIT",
            "_UNITS",
            "memory_limit",
            "available_memory",
            "_cpu_free_memory",
            "fit_memory",
            "check_memory",
            "_count_saved_bytes",
        }
    ),
}


def source_hash(path: Path, scheme: int = SCHEME) -> str:
    """The hash of what a Python file computes by ``scheme`` (2 to 4; see the module's
    docstring), cached while the file's modification time and size stay the same."""
    stat = path.stat()
    return _source_hash(path, stat.st_mtime_ns, stat.st_size, scheme)


@cache
def _source_hash(path: Path, mtime_ns: int, size: int, scheme: int) -> str:
    tree = computing_tree(path) if scheme >= 4 else parse(path)
    if scheme >= 3:
        bindings = sorted(_gather_imports(tree))
        text = f"{_canonical(tree)}|imports={bindings!r}"
    else:
        text = _canonical(tree)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse(path: Path) -> ast.Module:
    """The syntax tree of the Python file at ``path``."""
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def computing_tree(path: Path) -> ast.Module:
    """The syntax tree of the Python file at ``path`` without its guards (:data:`GUARDS`),
    the imports inside them included: what scheme 4 hashes, and where the modules a method's
    code identity holds are found."""
    tree = parse(path)
    guards = guards_of(path)
    tree.body = [s for s in tree.body if not set() < defined_names(s) <= guards]
    return tree


def guards_of(path: Path) -> frozenset[str]:
    """The names :data:`GUARDS` lists for the module at ``path`` (none outside the package)."""
    try:
        return GUARDS.get(path.resolve().relative_to(PACKAGE_PARENT).as_posix(), frozenset())
    except ValueError:
        return frozenset()


def defined_names(statement: ast.stmt) -> set[str]:
    """The names a top-level statement defines: a function's or class's, or the plain names
    an assignment binds (empty for any other statement)."""
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {statement.name}
    if isinstance(statement, ast.Assign):
        targets = statement.targets
    elif isinstance(statement, ast.AnnAssign):
        targets = [statement.target]
    else:
        return set()
    if all(isinstance(t, ast.Name) for t in targets):
        return {t.id for t in targets}  # type: ignore[attr-defined]
    return set()


def _gather_imports(tree: ast.AST) -> set[tuple[int, str, str, str]]:
    """Take every import statement out of ``tree`` (in place) and return what they bind, as
    (relative level, module, name, alias) per imported name."""
    bindings: set[tuple[int, str, str, str]] = set()
    for node in ast.walk(tree):
        for field, value in ast.iter_fields(node):
            if not (isinstance(value, list) and value and isinstance(value[0], ast.stmt)):
                continue
            kept = []
            for statement in value:
                if _is_annotation_only(statement):
                    continue
                if isinstance(statement, (ast.Import, ast.ImportFrom)):
                    bindings |= _bindings(statement)
                else:
                    kept.append(statement)
            setattr(node, field, kept)
    return {b for b in bindings if (b[1], b[2]) != TYPE_CHECKING_FLAG}


def _bindings(statement: ast.Import | ast.ImportFrom) -> set[tuple[int, str, str, str]]:
    if isinstance(statement, ast.Import):
        return {(0, "", alias.name, alias.asname or "") for alias in statement.names}
    module = statement.module or ""
    return {(statement.level, module, a.name, a.asname or "") for a in statement.names}


def _is_annotation_only(statement: ast.stmt) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) holding only imports, no else."""
    if not isinstance(statement, ast.If) or statement.orelse:
        return False
    test = statement.test
    flag = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )
    return flag and all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in statement.body)


def _canonical(node: Any) -> str:
    """The tree written out field by field, bare strings left out; not ``ast.dump``, whose
    text changes between Python versions (empty fields shown or not)."""
    if isinstance(node, ast.AST):
        shown = []
        for name, value in ast.iter_fields(node):
            if isinstance(value, list):
                value = [v for v in value if not _is_bare_string(v)]
            if value is None or value == [] or name in ("kind", "type_comment"):
                continue  # absent, or how a constant was spelt ('u' prefix)
            shown.append(f"{name}={_canonical(value)}")
        return f"{type(node).__name__}({','.join(shown)})"
    if isinstance(node, list):
        return "[" + ",".join(_canonical(item) for item in node) + "]"
    return repr(node)


def _is_bare_string(node: Any) -> bool:
    """A statement that is only a string: a docstring, or text that computes nothing."""
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )
