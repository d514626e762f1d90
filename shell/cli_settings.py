"""``vigil settings show|set|unset``: per-symbol settings changed on a running engine.

``vigil settings set BTCUSDT trailing_callback_percent=1.0`` stores the value and announces
it; every worker's next decision about BTCUSDT reads it, without a restart
(core/services/symbol_settings.py). ``*`` as the symbol sets the venue's default. Bad input
(an unknown key, a value out of range, a symbol the venue does not list) is refused with one
line and exit code 2, and nothing is stored.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shell.cli_control import _who
from shell.cli_output import fail
from shell.cli_running import current_deps, current_settings, storage_errors

console = Console()
settings_app = typer.Typer(
    help="Per-symbol settings (stop-loss, trailing, leverage, size, enabled).",
    no_args_is_help=True,
)

ExchangeOption = Annotated[
    str | None, typer.Option("--exchange", help="Venue (default: this deployment's).")
]


@settings_app.command("show")
def show(
    symbol: Annotated[str | None, typer.Argument(help="Only this symbol (and *).")] = None,
    exchange: ExchangeOption = None,
) -> None:
    """The stored overrides; with SYMBOL, also the values its next decision uses."""
    from core.services import symbol_settings as store
    from core.services.deps import exchange_name

    settings = current_settings()
    venue = exchange or exchange_name(settings)
    with storage_errors():
        rows = store.show(venue)
    wanted = {"*", symbol.upper()} if symbol else None
    table = Table("exchange", "symbol", "overrides")
    for row in rows:
        if wanted is None or row["symbol"] in wanted:
            shown = " ".join(f"{k}={v}" for k, v in row["values"].items())
            table.add_row(row["exchange"], row["symbol"], shown)
    console.print(table)
    if symbol:
        _show_effective(venue, symbol.upper())


def _show_effective(venue: str, symbol: str) -> None:
    from core.domain.symbol_settings import KEYS
    from core.services import symbol_settings as store

    deps = current_deps()
    with storage_errors():
        found = store.overrides(deps.redis, venue, symbol)
        disabled = store.disabled_among(deps.settings, deps.redis, venue, [symbol])
    effective = store.apply(deps.settings, found)
    console.print(f"effective for {symbol} on {venue}:", highlight=False)
    for key in KEYS:
        value = symbol not in disabled if key == "enabled" else getattr(effective, key)
        source = "override" if key in found else "environment"
        console.print(f"  {key}={value}  ({source})", highlight=False)


@settings_app.command("set")
def set_(
    symbol: Annotated[str, typer.Argument(help="Symbol, e.g. BTCUSDT, or * (venue default).")],
    assignments: Annotated[list[str], typer.Argument(help="KEY=VALUE ...")],
    exchange: ExchangeOption = None,
) -> None:
    """Override values for SYMBOL, e.g. `trailing_callback_percent=1.0 enabled=false`."""
    from core.domain.symbol_settings import SymbolSettingError, parse_assignments
    from core.services import symbol_settings as store

    try:
        values = parse_assignments(assignments)
        deps = current_deps()
        with storage_errors():
            venue, target = store.check_target(deps, exchange, symbol)
            change = store.set_values(deps.redis, venue, target, values, _who())
    except SymbolSettingError as exc:
        raise fail(str(exc)) from None
    _print_change(change)


@settings_app.command("unset")
def unset(
    symbol: Annotated[str, typer.Argument(help="Symbol, or * (venue default).")],
    keys: Annotated[list[str] | None, typer.Argument(help="Keys to unset (default: all).")] = None,
    exchange: ExchangeOption = None,
) -> None:
    """Remove overrides of SYMBOL (the venue default, then the environment, apply again)."""
    from core.domain.symbol_settings import SymbolSettingError, normalise_symbol, parse_keys
    from core.services import symbol_settings as store
    from core.services.deps import exchange_name

    settings = current_settings()
    try:
        chosen = parse_keys(keys) if keys else None
        venue = store.check_venue(settings, exchange or exchange_name(settings))
        deps = current_deps()
        with storage_errors():
            change = store.unset_values(deps.redis, venue, normalise_symbol(symbol), chosen, _who())
    except SymbolSettingError as exc:
        raise fail(str(exc)) from None
    _print_change(change)


def _print_change(change: object) -> None:
    from core.services.symbol_settings import Change

    assert isinstance(change, Change)
    data = change.as_dict()
    if not change.changed:
        console.print(f"{change.symbol} on {change.exchange}: unchanged", highlight=False)
        return
    console.print(
        f"{change.symbol} on {change.exchange}: {data['old'] or '{}'} -> {data['new'] or '{}'}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``vigil settings`` to the ``vigil`` app."""
    app.add_typer(settings_app, name="settings")
