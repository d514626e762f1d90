"""Request authentication exactly as Binance USD-M checks it.

SIGNED endpoints need the `X-MBX-APIKEY` header, a `timestamp` within `recvWindow`
(default 5000 ms, at most 60000) of server time, and `signature` = HMAC-SHA256 over the
total parameter string: the raw query string followed by the raw request body, with the
`signature` parameter itself removed. USER_STREAM endpoints (listenKey) need the key only.
Raw strings are used (never re-encoded parameters) so a client that signs something other
than what it sends is caught, as Binance would catch it.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from sim import errors

DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000
#: Binance refuses timestamps more than 1 s ahead of its clock.
FUTURE_TOLERANCE_MS = 1000


def _split_signature(raw: str) -> tuple[str, str | None]:
    """Remove the `signature=` piece from a raw parameter string."""
    if not raw:
        return "", None
    kept: list[str] = []
    signature: str | None = None
    for piece in raw.split("&"):
        if piece.startswith("signature="):
            signature = piece[len("signature=") :]
        else:
            kept.append(piece)
    return "&".join(kept), signature


class KeyPair:
    """The one key pair a simulated venue accepts, replaceable and restorable (both
    dialects: the way each checks a request with it is its own)."""

    def __init__(self, api_key: str, api_secret: str) -> None:
        self._initial = (api_key, api_secret)
        self.replace(api_key, api_secret)

    @property
    def api_key(self) -> str:
        return self._api_key

    def replace(self, api_key: str, api_secret: str) -> None:
        """Accept this key pair from now on (``POST /_sim/keys``): the old one is revoked,
        so a client still using it gets the venue's real refusal."""
        self._api_key = api_key
        self._secret = api_secret.encode()

    def restore(self) -> None:
        """Back to the key pair the simulator was started with (``POST /_sim/reset``)."""
        self.replace(*self._initial)


class Authenticator(KeyPair):
    """Checks API key and signature against one configured key pair."""

    def check_key(self, header_key: str | None) -> None:
        if not header_key:
            raise errors.SimError(-2014, "API-key format invalid.", status=401)
        if not hmac.compare_digest(header_key, self._api_key):
            raise errors.BAD_API_KEY

    def check_signed(
        self,
        header_key: str | None,
        raw_query: str,
        raw_body: str,
        params: dict[str, str],
    ) -> None:
        self.check_key(header_key)
        self._check_timestamp(params)
        query, sig_q = _split_signature(raw_query)
        body, sig_b = _split_signature(raw_body)
        signature = sig_q or sig_b
        if not signature:
            raise errors.missing("signature")
        expected = hmac.new(self._secret, (query + body).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise errors.BAD_SIGNATURE

    @staticmethod
    def _check_timestamp(params: dict[str, str]) -> None:
        raw_ts = params.get("timestamp", "")
        if not raw_ts.isdigit():
            raise errors.missing("timestamp")
        raw_window = params.get("recvWindow", str(DEFAULT_RECV_WINDOW))
        if not raw_window.isdigit():
            raise errors.illegal("recvWindow")
        window = int(raw_window)
        if window > MAX_RECV_WINDOW:
            raise errors.SimError(-1131, "recvWindow must be less than 60000")
        now = int(time.time() * 1000)
        ts = int(raw_ts)
        if ts > now + FUTURE_TOLERANCE_MS or now - ts > window:
            raise errors.BAD_TIMESTAMP
