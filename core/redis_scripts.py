"""Lua scripts sent by their SHA1 (``EVALSHA``), not their text (``EVAL``).

Why: a price run calls six scripts (the tick window, the lock, the run marker); ``EVAL``
sends each one's whole source every time, which the client encodes and the server hashes
again. ``EVALSHA`` sends 40 characters. A server that does not know the script yet (first
use, or after a restart emptied its script cache) answers ``NOSCRIPT``; the call is then made
once with ``EVAL``, which also caches the script there. Atomicity is the same either way.
"""

from __future__ import annotations

import hashlib
from typing import Any

from redis.exceptions import NoScriptError

_SHAS: dict[str, str] = {}


def sha_of(source: str) -> str:
    sha = _SHAS.get(source)
    if sha is None:
        sha = _SHAS[source] = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis' id
    return sha


def run_script(client: Any, source: str, numkeys: int, *keys_and_args: Any) -> Any:
    """``client.eval(source, numkeys, *keys_and_args)``, by SHA when the server has it."""
    try:
        return client.evalsha(sha_of(source), numkeys, *keys_and_args)
    except NoScriptError:
        return client.eval(source, numkeys, *keys_and_args)
