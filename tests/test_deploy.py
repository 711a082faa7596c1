"""The production example env is complete: `manage.py check --deploy` under it reports no issues.

Run in a subprocess with nothing but that file's variables (and a generated
secret key in the file it names), as a fresh production machine would: before
the HTTPS settings existed, this warned security.W004 (no HSTS) and W008 (no
SSL redirect).
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
PRODUCTION_ENV = BASE_DIR / "docs" / "deploy" / "production.env.example"
VARIABLE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def example_env(path: Path) -> dict[str, str]:
    return {match[1]: match[2] for line in path.read_text().splitlines() if (match := VARIABLE.match(line))}


def run_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        cwd=BASE_DIR,
        timeout=60,
    )


@pytest.fixture
def production_env(tmp_path: Path) -> dict[str, str]:
    env = example_env(PRODUCTION_ENV)
    assert env["DEBUG"] == "false" and "SECRET_KEY_FILE" in env
    secret = tmp_path / "secret_key"
    secret.write_text(secrets.token_urlsafe(50) + "\n")
    return {**env, "SECRET_KEY_FILE": str(secret)}


def test_check_deploy_is_clean_with_the_production_example(production_env: dict[str, str]) -> None:
    result = run_with(production_env, "check", "--deploy")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr
    assert "WARNINGS" not in result.stdout + result.stderr


def test_without_the_https_settings_check_deploy_warns(production_env: dict[str, str]) -> None:
    # The test above could pass because check --deploy checked nothing; this proves it checks these.
    for name in ("SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT"):
        production_env.pop(name)
    result = run_with(production_env, "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode != 0
    assert "security.W004" in result.stderr and "security.W008" in result.stderr


def test_every_variable_of_the_production_example_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (BASE_DIR / ".env.example").read_text(), re.MULTILINE))
    names = {name.removesuffix("_FILE") for name in example_env(PRODUCTION_ENV)}

    assert sorted(names - documented) == []


@pytest.mark.parametrize("raw", ["HTTP_X_FORWARDED_PROTO", "X_FORWARDED_PROTO,https", "HTTP_X_FORWARDED_PROTO,https,http"])
def test_a_malformed_proxy_ssl_header_stops_start_up(raw: str) -> None:
    result = run_with({"SECURE_PROXY_SSL_HEADER": raw}, "check")

    assert result.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER" in result.stderr and "HTTP_HEADER_NAME,value" in result.stderr


def test_the_proxy_ssl_header_is_read_as_django_wants_it(production_env: dict[str, str]) -> None:
    code = "from django.conf import settings; print(repr(settings.SECURE_PROXY_SSL_HEADER))"
    result = run_with(production_env, "shell", "-c", code)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "('HTTP_X_FORWARDED_PROTO', 'https')"
