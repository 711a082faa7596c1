from decimal import Decimal

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_decimal, env_int, env_list, env_str


def test_bad_boolean_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"DEBUG='maybe' is not a boolean"):
        env_bool("DEBUG", True)


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("yes", True), ("Off", False), ("", False)])
def test_booleans_are_read_in_the_usual_spellings(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("FLAG", raw)
    assert env_bool("FLAG", not expected) is expected


def test_integer_below_its_minimum_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SOCKET_TIMEOUT", "5")
    with pytest.raises(ImproperlyConfigured, match="must be at least 10"):
        env_int("REDIS_SOCKET_TIMEOUT", 30, minimum=10)


def test_non_integer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTFOLIO_COALESCE_MS", "fast")
    with pytest.raises(ImproperlyConfigured, match="PORTFOLIO_COALESCE_MS='fast' is not an integer"):
        env_int("PORTFOLIO_COALESCE_MS", 200)


@pytest.mark.parametrize("raw", ["abc", "NaN", "-1"])
def test_bad_decimal_is_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("SYNTHETIC_VOLATILITY", raw)
    with pytest.raises(ImproperlyConfigured, match="SYNTHETIC_VOLATILITY"):
        env_decimal("SYNTHETIC_VOLATILITY", Decimal("0.001"), minimum=Decimal(0))


def test_secret_can_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    secret = tmp_path / "secret"  # type: ignore[operator]
    secret.write_text("s3cret\n")
    monkeypatch.setenv("SECRET_KEY_FILE", str(secret))
    assert env_str("SECRET_KEY", "") == "s3cret"


def test_missing_secret_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY_FILE", "/nonexistent/secret")
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY_FILE"):
        env_str("SECRET_KEY", "")


def test_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", "example.com, .example.org ,")
    assert env_list("ALLOWED_HOSTS", []) == ["example.com", ".example.org"]


def test_production_without_secret_key_refuses_to_start() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={"DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "false", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_channel_layer_socket_timeout_outlasts_the_blocking_pop() -> None:
    # channels-redis blocks in BZPOPMIN for brpop_timeout (5 s); redis-py 8 would time out at 5 s.
    from channels_redis.core import RedisChannelLayer

    from tests.conftest import PRODUCTION_LAYER

    host = PRODUCTION_LAYER["CONFIG"]["hosts"][0]
    assert host["socket_timeout"] > RedisChannelLayer.brpop_timeout


def test_a_metrics_directory_that_is_not_there_refuses_to_start(tmp_path: object) -> None:
    import subprocess
    import sys

    missing = f"{tmp_path}/no-such-dir"
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={"DJANGO_SETTINGS_MODULE": "config.settings", "PROMETHEUS_MULTIPROC_DIR": missing, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
    )
    assert result.returncode != 0
    assert f"PROMETHEUS_MULTIPROC_DIR={missing!r} is not a writable directory" in result.stderr


def test_email_over_both_starttls_and_tls_refuses_to_start() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={"DJANGO_SETTINGS_MODULE": "config.settings", "EMAIL_USE_TLS": "true", "EMAIL_USE_SSL": "true", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
    )
    assert result.returncode != 0
    assert "EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive" in result.stderr
