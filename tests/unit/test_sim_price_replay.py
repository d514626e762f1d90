"""The paper exchange replays a CSV of recorded prices at its tick clock's pace."""

from decimal import Decimal
from pathlib import Path

from sim.markets import build_markets
from sim.prices import PriceBook, load_replay


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.csv"
    path.write_text(text)
    return path


def test_rows_are_sorted_offset_from_the_first_and_headers_skipped(tmp_path):
    rows = load_replay(
        write(
            tmp_path,
            "timestamp_ms,symbol,price\n"
            "1700000002000,ethusdt,3001.5\n"
            "1700000000000,BTCUSDT,60000\n"
            "\n"
            "1700000001000, BTCUSDT , 60010.25\n",
        )
    )
    assert [(r.offset_ms, r.symbol, r.price) for r in rows] == [
        (0, "BTCUSDT", Decimal("60000")),
        (1000, "BTCUSDT", Decimal("60010.25")),
        (2000, "ETHUSDT", Decimal("3001.5")),
    ]
    assert load_replay(write(tmp_path, "timestamp_ms,symbol,price\n")) == []


def test_the_book_follows_the_replay_by_tick_and_pins_replayed_symbols(tmp_path):
    replay = load_replay(
        write(
            tmp_path,
            "0,BTCUSDT,60000\n1000,BTCUSDT,60123.45\n2000,ETHUSDT,3001.53\n2000,NOPEUSDT,1\n",
        )
    )
    book = PriceBook(
        build_markets(["BTCUSDT", "ETHUSDT"]),
        seed=1,
        tick_interval=1.0,
        volatility=0.0,
        replay=replay,
    )
    eth_before = book.prices["ETHUSDT"]
    assert book.tick() == ["BTCUSDT"]  # 1 s: rows at 0 and 1000 ms
    assert book.prices["BTCUSDT"] == book.round("BTCUSDT", Decimal("60123.45"))
    assert book.prices["ETHUSDT"] == eth_before
    assert book.tick() == ["ETHUSDT"]  # 2 s; the unknown symbol is ignored
    assert book.prices["ETHUSDT"] == book.round("ETHUSDT", Decimal("3001.53"))
    assert book.tick() == []  # the replay is over and nothing else moves
    assert {"BTCUSDT", "ETHUSDT"} <= book.pinned
