"""Request authentication as Bybit v5 checks it (HMAC-SHA256 keys).

Private REST calls carry `X-BAPI-API-KEY`, `X-BAPI-TIMESTAMP`, `X-BAPI-RECV-WINDOW`
(default 5000 ms) and `X-BAPI-SIGN` = hex HMAC-SHA256(secret, timestamp + key + recvWindow
+ payload), where the payload is the raw query string of a GET and the raw JSON body of a
POST, exactly as sent (a client that signs something other than what it sends is caught,
as Bybit catches it). The timestamp must satisfy
`server_time - recv_window <= timestamp < server_time + 1000` (10002 otherwise).

The private WebSocket authenticates with `{"op": "auth", "args": [key, expires,
signature]}`, signature = hex HMAC-SHA256(secret, "GET/realtime" + expires), `expires`
in the future.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from sim.auth import KeyPair
from sim.bybit import errors

DEFAULT_RECV_WINDOW = 5000
FUTURE_TOLERANCE_MS = 1000


def _hmac(secret: bytes, text: str) -> str:
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


class BybitAuth(KeyPair):
    """Checks one configured key pair."""

    def check(self, headers: Mapping[str, str], payload: str) -> None:
        key = headers.get("X-BAPI-API-KEY", "")
        if not key or not hmac.compare_digest(key, self._api_key):
            raise errors.API_KEY
        stamp = headers.get("X-BAPI-TIMESTAMP", "")
        window = headers.get("X-BAPI-RECV-WINDOW", str(DEFAULT_RECV_WINDOW))
        if not stamp.isdigit() or not window.isdigit():
            raise errors.TIMESTAMP
        now = int(time.time() * 1000)
        if not now - int(window) <= int(stamp) < now + FUTURE_TOLERANCE_MS:
            raise errors.TIMESTAMP
        origin = stamp + key + window + payload
        signature = headers.get("X-BAPI-SIGN", "")
        if not hmac.compare_digest(_hmac(self._secret, origin), signature.lower()):
            raise errors.sign_error(origin)

    def check_ws(self, args: object) -> bool:
        """The private stream's `auth` op: [key, expires_ms, signature]."""
        if not isinstance(args, list) or len(args) != 3:
            return False
        key, expires, signature = (str(a) for a in args)
        if not hmac.compare_digest(key, self._api_key) or not expires.isdigit():
            return False
        if int(expires) <= int(time.time() * 1000):
            return False
        return hmac.compare_digest(_hmac(self._secret, "GET/realtime" + expires), signature)
