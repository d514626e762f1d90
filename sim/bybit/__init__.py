"""The Bybit v5 dialect of the paper exchange (linear USDT perpetuals, unified account).

`server.build_bybit_app` serves it; `engine` is the account and order book, `rest` the
`/v5/...` endpoints, `ws` the public and private streams, `admin` the account-specific
admin routes. See docs/paper-exchange.md, section "Bybit v5 dialect".
"""
