"""Every order the engine sends goes through one executor (``core/services/executor.py``).

Checked on the source: a call of a venue's mutating method (create an order, a stop, cancel
one) anywhere in the product code outside the exchange adapter (``core/exchange/``, which
implements them) and the executor is a second way to send an order, which is how the
engine once came to place stops four different ways with four different failure rules.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MUTATING = frozenset(
    {
        "create_stop",
        "create_market_order",
        "create_order",
        "cancel_order",
        "cancel_all_orders",
        "edit_order",
    }
)
ALLOWED = ("core/exchange/", "core/services/executor.py")
# not the engine: the tests, the simulator (the venue itself), the benchmarks' drivers
NOT_PRODUCT = ("tests", "sim", "bench", "alembic", ".venv", "vigil.egg-info")


def product_files() -> list[Path]:
    files = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in NOT_PRODUCT or rel.parts[0].startswith("."):
            continue
        files.append(path)
    return files


def direct_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.relative_to(ROOT).as_posix()}:{node.lineno} calls .{node.func.attr}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in MUTATING
    ]


def test_only_the_executor_and_the_adapter_call_the_venues_create_and_cancel():
    bad = [
        call
        for path in product_files()
        if not path.relative_to(ROOT).as_posix().startswith(ALLOWED)
        for call in direct_calls(path)
    ]
    assert bad == []


def test_the_scan_sees_the_calls_it_is_meant_to_forbid():
    executor = ROOT / "core/services/executor.py"
    assert any(".create_stop()" in c for c in direct_calls(executor))
    assert any(".cancel_order()" in c for c in direct_calls(executor))
    assert ROOT / "core/services/opening.py" in product_files()
    assert ROOT / "tasks/orders.py" in product_files()
