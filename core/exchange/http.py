"""A lean HTTP session for ccxt's synchronous REST client: the same wire, less machinery.

Why: a stop move is two REST calls (POST the new stop, DELETE the old), and most of their
client-side CPU went to requests' own per-call work (merging session settings, cookies and
hooks, preparing and re-wrapping the request and response), not to the HTTP itself.
``LeanSession`` sends through a urllib3 connection pool directly (keep-alive, one pool per
scheme, host, port and TLS setting) and answers with the few things ccxt's ``Exchange.fetch``
reads, so everything above (ccxt's error mapping, ``core.exchange.errors.classify``) sees
exactly what it saw with a ``requests.Session``:

* the request on the wire is the one requests would send: ccxt's headers merged over the
  session's defaults, ``Content-Length`` as requests sets it (``0`` for a body-less DELETE
  or POST), the URL requoted as requests does;
* failures are requests' exception classes, raised where requests raises them (a refused
  connection is a ``ConnectionError``, a read timeout a ``ReadTimeout``, an HTTP status of
  400-599 an ``HTTPError`` from ``raise_for_status``, a broken body a
  ``ChunkedEncodingError``), so ccxt maps them to the same ``NetworkError``,
  ``RequestTimeout`` or venue error as before;
* nothing is ever re-sent: urllib3 retries are requests' ``Retry(0, read=False)``, so a
  request that may have reached the venue (a create that may have placed an order) fails
  instead of going out twice. A pooled connection the venue already closed is noticed
  before anything is written on it and replaced, as urllib3 does for requests;
* TLS is verified against requests' CA bundle unless ccxt says ``verify=False``.

What it does not do itself it hands to a plain ``requests.Session`` (built on first need):
proxies, multipart files, a CA-bundle path as ``verify``, ``trust_env`` (proxies and CA
bundles from the environment), non-bytes bodies, and following a redirect.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests
from requests import exceptions as rex
from requests.compat import chardet
from requests.cookies import RequestsCookieJar
from requests.structures import CaseInsensitiveDict
from requests.utils import (
    DEFAULT_CA_BUNDLE_PATH,
    check_header_validity,
    default_headers,
    get_encoding_from_headers,
    requote_uri,
)
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3 import exceptions as u3
from urllib3.util import Retry, Timeout

POOL_MAXSIZE = 10  # requests' default pool size per host
NO_RETRIES = Retry(0, read=False)  # requests' default: never re-send a request
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_BODYLESS_METHODS = frozenset({"GET", "HEAD"})


class LeanResponse:
    """What ccxt reads of a response, with requests' semantics for each attribute."""

    __slots__ = ("status_code", "reason", "headers", "url", "content", "encoding", "request")

    def __init__(self, status: int, reason: str | None, headers: Any, url: str, content: bytes):
        self.status_code = status
        self.reason = reason
        self.headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(headers)
        self.url = url
        self.content = content
        self.encoding: str | None = get_encoding_from_headers(self.headers)
        self.request = None  # read by requests' exceptions; no PreparedRequest is built

    @property
    def ok(self) -> bool:
        return not 400 <= self.status_code < 600

    @property
    def apparent_encoding(self) -> str:
        if chardet is not None:
            return str(chardet.detect(self.content)["encoding"])
        return "utf-8"

    @property
    def text(self) -> str:
        if not self.content:
            return ""
        encoding = self.encoding or self.apparent_encoding
        try:
            return str(self.content, encoding, errors="replace")
        except (LookupError, TypeError):
            return str(self.content, errors="replace")

    def json(self) -> Any:
        return requests.models.complexjson.loads(self.text)

    def raise_for_status(self) -> None:
        """``requests.HTTPError`` for 400-599, with requests' message."""
        reason = self.reason
        if isinstance(reason, bytes):
            try:
                reason = reason.decode("utf-8")
            except UnicodeDecodeError:
                reason = reason.decode("iso-8859-1")
        if 400 <= self.status_code < 500:
            kind = "Client"
        elif 500 <= self.status_code < 600:
            kind = "Server"
        else:
            return
        message = f"{self.status_code} {kind} Error: {reason} for url: {self.url}"
        raise rex.HTTPError(message, response=self)

    def close(self) -> None:
        """Nothing to free: the body was read and the connection went back to its pool."""


def _pool_key(parts: SplitResult, verify: bool) -> tuple[str, str, int | None, bool]:
    return parts.scheme.lower(), parts.hostname or "", parts.port, verify


def _new_pool(scheme: str, host: str, port: int | None, verify: bool) -> HTTPConnectionPool:
    if scheme == "http":
        return HTTPConnectionPool(host, port, maxsize=POOL_MAXSIZE, block=False)
    if verify:  # as requests' HTTPAdapter.cert_verify sets up a verified pool
        return HTTPSConnectionPool(
            host,
            port,
            maxsize=POOL_MAXSIZE,
            block=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=DEFAULT_CA_BUNDLE_PATH,
        )
    return HTTPSConnectionPool(host, port, maxsize=POOL_MAXSIZE, block=False, cert_reqs="CERT_NONE")


def _timeout(value: Any) -> Timeout:
    if isinstance(value, Timeout):
        return value
    if isinstance(value, tuple):
        connect, read = value
        return Timeout(connect=connect, read=read)
    return Timeout(connect=value, read=value)


def _request_headers(session_headers: Any, headers: Any) -> CaseInsensitiveDict[Any]:
    """requests' merge: the session's headers, the call's over them, ``None`` removes one."""
    merged: CaseInsensitiveDict[Any] = CaseInsensitiveDict(session_headers)
    if headers:
        merged.update(headers)
    for name in [name for name, value in merged.items() if value is None]:
        del merged[name]
    for header in merged.items():
        check_header_validity(header)
    return merged


def _set_content_length(headers: CaseInsensitiveDict[Any], method: str, body: bytes | None) -> None:
    """As requests' ``prepare_content_length``: the body's length, or ``0`` when a method other
    than GET or HEAD has none."""
    if body is not None:
        headers["Content-Length"] = str(len(body))
    elif method not in _BODYLESS_METHODS and headers.get("Content-Length") is None:
        headers["Content-Length"] = "0"


def _path_url(parts: SplitResult) -> str:
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


class LeanSession:
    """A drop-in for the ``requests.Session`` ccxt's synchronous ``Exchange`` keeps in
    ``.session``: ``headers``, ``cookies``, ``trust_env``, ``request(...)`` and ``close()``."""

    def __init__(self, *, trust_env: bool = False) -> None:
        self.headers: CaseInsensitiveDict[str] = default_headers()
        self.cookies = RequestsCookieJar()  # ccxt clears it before every call
        self.trust_env = trust_env
        self._pools: dict[tuple[str, str, int | None, bool], HTTPConnectionPool] = {}
        self._pools_lock = threading.Lock()
        self._fallback: requests.Session | None = None

    # --- the calls ccxt makes -------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        data: Any = None,
        headers: Any = None,
        timeout: Any = None,
        proxies: Any = None,
        verify: Any = True,
        files: Any = None,
        **kwargs: Any,
    ) -> Any:
        """One HTTP request, answered as requests would answer it."""
        if isinstance(data, str | bytes) and not data:
            data = None  # requests sends no body for an empty one (ccxt passes '' at times)
        if self._needs_requests(url, data, proxies, verify, files, kwargs):
            return self._fallback_session().request(
                method, url, data=data, headers=headers, timeout=timeout, proxies=proxies,
                verify=verify, files=files, **kwargs,
            )  # fmt: skip
        method = method.upper()
        url = requote_uri(url)
        prepared = _request_headers(self.headers, headers)
        _set_content_length(prepared, method, data)
        response = self._send(method, url, data, prepared, _timeout(timeout), bool(verify))
        if response.status_code in REDIRECT_STATUSES and "location" in response.headers:
            return self._follow_redirect(response, method, url, data, prepared, timeout, verify)
        return response

    def close(self) -> None:
        with self._pools_lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
        if self._fallback is not None:
            self._fallback.close()

    # --- the lean path --------------------------------------------------------------------

    def _needs_requests(
        self, url: str, data: Any, proxies: Any, verify: Any, files: Any, extra: dict[str, Any]
    ) -> bool:
        """True when the call asks for something only requests does (see the module's doc)."""
        if proxies or files or extra or self.trust_env or len(self.cookies):
            return True
        if not isinstance(verify, bool) or (data is not None and not isinstance(data, bytes)):
            return True
        scheme, _, rest = url.partition("://")
        return scheme.lower() not in ("http", "https") or not rest.isascii()

    def _pool(self, parts: SplitResult, verify: bool) -> HTTPConnectionPool:
        key = _pool_key(parts, verify)
        pool = self._pools.get(key)
        if pool is None:
            with self._pools_lock:
                pool = self._pools.get(key)
                if pool is None:
                    pool = self._pools[key] = _new_pool(*key)
        return pool

    def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: CaseInsensitiveDict[Any],
        timeout: Timeout,
        verify: bool,
    ) -> LeanResponse:
        try:
            parts = urlsplit(url)
            pool = self._pool(parts, verify)
        except ValueError as exc:  # a bad port or host, as requests' InvalidURL
            raise rex.InvalidURL(exc) from exc
        try:
            raw = pool.urlopen(
                method,
                _path_url(parts),
                body=body,
                headers=headers,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=NO_RETRIES,
                timeout=timeout,
                chunked=False,
            )
        except Exception as exc:  # mapped as requests' HTTPAdapter.send maps it
            mapped = _as_requests_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        content = _read_body(raw)
        return LeanResponse(raw.status, raw.reason, raw.headers, url, content)

    # --- what requests does for us --------------------------------------------------------

    def _fallback_session(self) -> requests.Session:
        if self._fallback is None:
            session = requests.Session()
            session.trust_env = self.trust_env
            session.headers = self.headers
            session.cookies = self.cookies
            self._fallback = session
        return self._fallback

    def _follow_redirect(
        self,
        response: LeanResponse,
        method: str,
        url: str,
        body: bytes | None,
        headers: CaseInsensitiveDict[Any],
        timeout: Any,
        verify: Any,
    ) -> Any:
        """Let requests follow a redirect exactly as it would have (method changes, header
        stripping, its limit of 30): the venue answered, so nothing was done twice."""
        session = self._fallback_session()
        prepared = requests.Request(method, url, data=body, headers=headers).prepare()
        first = requests.Response()
        first.status_code = response.status_code
        first.reason = response.reason  # type: ignore[assignment]
        first.headers = response.headers
        first.url = url
        first.request = prepared
        first._content = response.content
        first._content_consumed = True
        history = [first]
        for hop in session.resolve_redirects(
            first, prepared, timeout=timeout, verify=verify, proxies={}, stream=False
        ):
            history.append(hop)
        final = history.pop()
        final.history = history
        return final


def _read_body(raw: Any) -> bytes:
    """The whole body, decoded; failures mapped as requests' ``Response.iter_content``."""
    try:
        content: bytes = raw.read(decode_content=True)
    except u3.ProtocolError as exc:
        raise rex.ChunkedEncodingError(exc) from exc
    except u3.DecodeError as exc:
        raise rex.ContentDecodingError(exc) from exc
    except u3.ReadTimeoutError as exc:
        raise rex.ConnectionError(exc) from exc
    except u3.SSLError as exc:
        raise rex.SSLError(exc) from exc
    finally:
        raw.release_conn()
    return content or b""


#: requests' ``HTTPAdapter.send``: the error a ``MaxRetryError`` becomes by its reason (first
#: match; a connect timeout is handled before, anything else is a ``ConnectionError``) ...
_RETRY_REASON_ERRORS: tuple[tuple[type[Exception], type[Exception]], ...] = (
    (u3.ResponseError, rex.RetryError),
    (u3.ProxyError, rex.ProxyError),
    (u3.SSLError, rex.SSLError),
)
#: ... and the error another urllib3 failure becomes (first match; else it is raised as is).
_FAILURE_ERRORS: tuple[tuple[type[Exception], type[Exception]], ...] = (
    (u3.ClosedPoolError, rex.ConnectionError),
    (u3.ProxyError, rex.ProxyError),
    (u3.SSLError, rex.SSLError),
    (u3.ReadTimeoutError, rex.ReadTimeout),
    (u3.InvalidHeader, rex.InvalidHeader),
)


def _first_match(
    error: object, table: tuple[tuple[type[Exception], type[Exception]], ...]
) -> type[Exception] | None:
    return next((mapped for kind, mapped in table if isinstance(error, kind)), None)


def _as_requests_error(exc: Exception) -> Exception:
    """The requests exception ``HTTPAdapter.send`` raises for a urllib3 failure."""
    if isinstance(exc, u3.ProtocolError | OSError):
        return rex.ConnectionError(exc)
    if isinstance(exc, u3.MaxRetryError):
        reason = exc.reason
        if isinstance(reason, u3.ConnectTimeoutError) and not isinstance(
            reason, u3.NewConnectionError
        ):
            return rex.ConnectTimeout(exc)
        return (_first_match(reason, _RETRY_REASON_ERRORS) or rex.ConnectionError)(exc)
    mapped = _first_match(exc, _FAILURE_ERRORS)
    return exc if mapped is None else mapped(exc)


def install(exchange: Any) -> Any:
    """Give a synchronous ccxt client a ``LeanSession`` in place of its ``requests.Session``."""
    old = getattr(exchange, "session", None)
    if old is None or isinstance(old, LeanSession):
        return exchange
    session = LeanSession(trust_env=bool(getattr(old, "trust_env", False)))
    session.headers = CaseInsensitiveDict(old.headers)
    old.close()
    exchange.session = session
    return exchange
