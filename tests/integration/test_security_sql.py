"""SQL is built only through bound parameters: no SQL text assembled from values.

Scans every module for ``text(...)``/``execute(...)``/``exec_driver_sql(...)`` whose SQL is an
f-string, ``%``-formatted or ``.format``-ed string containing a statement keyword. The only
exceptions allowed are reviewed ones that interpolate identifiers or constants the code
itself defines (never input), listed below with the reason.
"""

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ["core", "tasks", "sim"]
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|TRUNCATE|DROP|ALTER|CREATE|GRANT)\b", re.I)
SINKS = {"text", "execute", "exec_driver_sql", "executescript"}
# (path, function) -> why the interpolation is safe
REVIEWED: dict[tuple[str, str], str] = {
    ("shell/runtime/embedded.py", "_ensure_database"): (
        "psql bootstrap of the embedded server: the database name is checked against "
        "_IDENTIFIER (letters, digits, underscore) before use, and callers pass constants"
    ),
}
STATEMENT = re.compile(
    r"SELECT\s.+\sFROM\s|INSERT\s+INTO\s|UPDATE\s+\S+\s+SET\s|DELETE\s+FROM\s|"
    r"TRUNCATE\s|DROP\s+(TABLE|DATABASE)|CREATE\s+(TABLE|DATABASE)",
    re.I,
)


def _callee(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _formatted_sql(node: ast.AST) -> bool:
    if isinstance(node, ast.JoinedStr):
        literal = "".join(
            v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
        )
        return bool(SQL.search(literal)) and any(
            isinstance(v, ast.FormattedValue) for v in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        parts = [node.left, node.right]
        return any(
            isinstance(p, ast.Constant) and isinstance(p.value, str) and SQL.search(p.value)
            for p in parts
        )
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        base = node.func.value
        return (
            node.func.attr == "format"
            and isinstance(base, ast.Constant)
            and isinstance(base.value, str)
            and bool(SQL.search(base.value))
        )
    return False


def _findings() -> list[tuple[str, str, int]]:
    found = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            scopes = {
                id(n): fn.name
                for fn in ast.walk(tree)
                if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
                for n in ast.walk(fn)
            }
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and _callee(node) in SINKS and node.args:
                    if _formatted_sql(node.args[0]):
                        rel = str(path.relative_to(ROOT))
                        found.append((rel, scopes.get(id(node), "<module>"), node.lineno))
    return found


def test_no_sql_is_built_by_string_formatting_outside_reviewed_identifier_only_exceptions():
    unreviewed = [f for f in _findings() if (f[0], f[1]) not in REVIEWED]
    assert unreviewed == []


def _formatted_statements() -> list[tuple[str, str, int]]:
    """Any f-string that reads like a SQL statement, wherever it goes (e.g. via a variable)."""
    found = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for fn in ast.walk(tree):
                if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(fn):
                    if isinstance(node, ast.JoinedStr) and any(
                        isinstance(v, ast.FormattedValue) for v in node.values
                    ):
                        literal = " ".join(
                            v.value
                            for v in node.values
                            if isinstance(v, ast.Constant) and isinstance(v.value, str)
                        )
                        if STATEMENT.search(literal + " x "):
                            found.append((str(path.relative_to(ROOT)), fn.name, node.lineno))
    return found


def test_no_fstring_reads_like_a_sql_statement_outside_reviewed_exceptions():
    unreviewed = [f for f in _formatted_statements() if (f[0], f[1]) not in REVIEWED]
    assert unreviewed == []


def test_the_scanner_flags_an_fstring_select_passed_to_text():
    tree = ast.parse('text(f"SELECT * FROM t WHERE id = {x}")')
    call = tree.body[0].value
    assert isinstance(call, ast.Call) and _formatted_sql(call.args[0])
    safe = ast.parse('text("SELECT * FROM t WHERE id = :x")').body[0].value
    assert isinstance(safe, ast.Call) and not _formatted_sql(safe.args[0])
