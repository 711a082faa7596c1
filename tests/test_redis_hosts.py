"""config/redis_hosts.py: the Redis settings (one server, Sentinel, shards), their errors, and the symbol → shard map."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from config.redis_hosts import RedisServer, configured_servers, servers, shard_index

SENTINELS = "10.0.0.5:26379, 10.0.0.6:26379,[::1]:26380"


def test_one_url_is_one_plain_server() -> None:
    assert configured_servers({}, url="redis://10.0.0.1:6379/2") == (RedisServer(url="redis://10.0.0.1:6379/2"),)


def test_several_urls_are_shards_in_order() -> None:
    found = configured_servers({}, url="redis://a:6379/0, redis://b:6379/0")
    assert [s.url for s in found] == ["redis://a:6379/0", "redis://b:6379/0"]


def test_sentinels_and_a_master_name_a_sentinel_server() -> None:
    env = {"REDIS_SENTINELS": SENTINELS, "REDIS_SENTINEL_MASTER": "livefolio", "REDIS_PASSWORD": "p", "REDIS_SENTINEL_PASSWORD": "sp"}
    [server] = configured_servers(env, url="redis://ignored:6379/0")
    assert server.master == "livefolio"
    assert server.sentinels == (("10.0.0.5", 26379), ("10.0.0.6", 26379), ("::1", 26380))
    assert (server.password, server.sentinel_password) == ("p", "sp")


def test_several_master_names_are_shards_behind_the_same_sentinels() -> None:
    found = configured_servers({"REDIS_SENTINELS": SENTINELS, "REDIS_SENTINEL_MASTER": "one,two"}, url="")
    assert [s.master for s in found] == ["one", "two"] and found[0].sentinels == found[1].sentinels


@pytest.mark.parametrize(
    ("env", "url", "message"),
    [
        ({"REDIS_SENTINELS": SENTINELS}, "redis://x/0", "REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not"),
        ({"REDIS_SENTINEL_MASTER": "livefolio"}, "redis://x/0", "REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not"),
        ({"REDIS_SENTINELS": "10.0.0.5", "REDIS_SENTINEL_MASTER": "m"}, "", "REDIS_SENTINELS: '10.0.0.5' is not host:port"),
        ({"REDIS_SENTINELS": "h:port", "REDIS_SENTINEL_MASTER": "m"}, "", "REDIS_SENTINELS: 'h:port' is not host:port"),
        ({"REDIS_SENTINELS": "h:70000", "REDIS_SENTINEL_MASTER": "m"}, "", "REDIS_SENTINELS: 'h:70000' is not host:port"),
        ({"REDIS_SENTINELS": " , ", "REDIS_SENTINEL_MASTER": "m"}, "", "REDIS_SENTINELS names no sentinel"),
        ({"REDIS_SENTINELS": "h:1", "REDIS_SENTINEL_MASTER": "m,m"}, "", "names the same master twice"),
        ({}, "localhost:6379", "REDIS_URL: 'localhost:6379' is not a redis://"),
        ({}, "redis://a/0,redis://a/0", "REDIS_URL names the same server twice"),
        ({}, " ", "REDIS_URL is empty"),
    ],
)
def test_bad_redis_settings_are_refused_with_the_variable_named(env: dict[str, str], url: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message.replace("[", r"\[").replace("(", r"\(")):
        configured_servers(env, url=url)


def test_a_sentinel_server_is_channels_redis_own_host_format_and_reads_back_the_same() -> None:
    server = RedisServer(master="livefolio", sentinels=(("10.0.0.5", 26379),), password="p", sentinel_password="sp")
    host = server.layer_host(socket_timeout=30, max_connections=50)
    # channels-redis 4.3 (its README, "hosts"): sentinels, master_name, sentinel_kwargs; the rest goes to the pool.
    assert host["sentinels"] == [["10.0.0.5", 26379]] and host["master_name"] == "livefolio"
    assert host["sentinel_kwargs"]["password"] == "sp" and host["password"] == "p"
    assert (host["socket_timeout"], host["max_connections"]) == (30, 50)
    assert servers([host]) == (server,)
    plain = RedisServer(url="redis://a:1/0")
    assert servers([plain.layer_host(socket_timeout=30, max_connections=5), "redis://b:2/0"]) == (plain, RedisServer(url="redis://b:2/0"))


def test_the_layer_is_built_from_the_settings_with_bounded_pools() -> None:
    from tests.conftest import PRODUCTION_LAYER

    [host] = PRODUCTION_LAYER["CONFIG"]["hosts"]
    assert host["max_connections"] == settings.REDIS_MAX_CONNECTIONS
    assert settings.REDIS_SERVERS == (RedisServer(url=settings.REDIS_URL),)


def test_the_symbol_to_shard_map_is_crc32_modulo_the_count_and_never_changes() -> None:
    # Fixed values: a change here moves every deployment's symbols to other servers (docs/operations.md).
    assert [shard_index(s, 2) for s in ("AAPL", "MSFT", "BTC-USD", "SAP")] == [0, 1, 0, 1]
    assert [shard_index(s, 3) for s in ("AAPL", "MSFT", "BTC-USD", "ETH-USD")] == [0, 1, 2, 0]
    assert all(shard_index(s, 1) == 0 for s in ("AAPL", "MSFT"))


def test_symbols_spread_over_every_shard() -> None:
    symbols = [f"SYM{i}" for i in range(300)]
    for n in (2, 3, 4):
        counts = [sum(shard_index(s, n) == i for s in symbols) for i in range(n)]
        assert min(counts) > 300 / n / 2, counts


def test_sentinels_without_a_master_name_stop_start_up() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={"DJANGO_SETTINGS_MODULE": "config.settings", "REDIS_SENTINELS": "127.0.0.1:26379", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
    )
    assert result.returncode != 0
    assert "REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not" in result.stderr
