"""What a Python file computes, as a hash: the code half of a cell's identity.

Three schemes have stamped records; each record says which (``scheme``), and is checked by it:

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
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path
from typing import Any

SCHEME = 3
TYPE_CHECKING_FLAG = ("typing", "TYPE_CHECKING")


def source_hash(path: Path, scheme: int = SCHEME) -> str:
    """The hash of what a Python file computes by ``scheme`` (2 or 3; see the module's
    docstring), cached while the file's modification time and size stay the same."""
    stat = path.stat()
    return _source_hash(path, stat.st_mtime_ns, stat.st_size, scheme)


@cache
def _source_hash(path: Path, mtime_ns: int, size: int, scheme: int) -> str:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if scheme >= 3:
        bindings = sorted(_gather_imports(tree))
        text = f"{_canonical(tree)}|imports={bindings!r}"
    else:
        text = _canonical(tree)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
