"""Scripts by SHA: a server that forgot them (a restart, SCRIPT FLUSH) still runs them."""

from __future__ import annotations

import pytest

from core.redis_scripts import run_script, sha_of

pytestmark = pytest.mark.integration

INCR_BY = "return redis.call('incrby', KEYS[1], ARGV[1])"


def test_a_script_runs_by_its_sha_and_again_after_the_server_forgot_it(redis_client):
    assert run_script(redis_client, INCR_BY, 1, "counter", 2) == 2  # first use: loaded by EVAL
    assert redis_client.script_exists(sha_of(INCR_BY)) == [True]
    assert run_script(redis_client, INCR_BY, 1, "counter", 3) == 5  # by SHA
    redis_client.script_flush()
    assert run_script(redis_client, INCR_BY, 1, "counter", 4) == 9
    assert redis_client.script_exists(sha_of(INCR_BY)) == [True]
