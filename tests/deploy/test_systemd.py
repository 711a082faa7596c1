"""docs/deploy/systemd/: the units are valid for systemd, and what they start is what this project has.

`systemd-analyze verify` reads the units as systemd would (with /srv/livefolio pointed at this checkout, so
that it can find the executables): unknown keys and missing programs fail it. Each ExecStart is then parsed
by the program it starts (daphne's own argument parser, the management command's), and the tmpfiles line
is applied to a directory of the test's own.
"""

from __future__ import annotations

import getpass
import grp
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from daphne.cli import CommandLineInterface
from django.conf import settings
from django.core.management import load_command_class

from tests.test_deploy import PRODUCTION_ENV, example_env

UNITS = Path(settings.BASE_DIR) / "docs" / "deploy" / "systemd"
APP = "/srv/livefolio"
METRICS_DIR = "/run/livefolio-metrics"


def unit(name: str) -> dict[str, list[str]]:
    """A unit file's `Key=value` lines, by key (a key may repeat); comments and sections dropped."""
    keys: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def exec_start(name: str, instance: str) -> list[str]:
    [command] = unit(name)["ExecStart"]
    return shlex.split(command.replace("%i", instance))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    for path in UNITS.glob("livefolio*"):
        (tmp_path / path.name).write_text(path.read_text().replace(APP, str(settings.BASE_DIR)))
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix in {".service", ".target"})
    assert names == ["livefolio-daphne@.service", "livefolio-feeds@.service", "livefolio-metrics.service", "livefolio.target"]

    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(f"./{name}" for name in names)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""  # not even a warning (an unknown key is only one)


def test_a_missing_program_fails_the_verification(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # The test above could pass because nothing is checked; this proves the programs are looked for.
    text = (UNITS / "livefolio-daphne@.service").read_text().replace(APP, str(settings.BASE_DIR))
    (tmp_path / "livefolio-daphne@.service").write_text(text.replace(".venv/bin/daphne", ".venv/bin/no-such-daphne"))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "./livefolio-daphne@.service"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode != 0 and "no-such-daphne" in result.stderr


def test_each_daphne_listens_on_its_instance_port_on_loopback_without_proxy_headers() -> None:
    argv = exec_start("livefolio-daphne@.service", "8001")
    assert argv[0] == f"{APP}/.venv/bin/daphne"

    args = CommandLineInterface().parser.parse_args(argv[1:])

    assert (args.host, args.port, args.application) == ("127.0.0.1", 8001, "config.asgi:application")
    # daphne would take X-Forwarded-For from any peer; the app believes it only from TRUSTED_PROXIES.
    assert not args.proxy_headers


def test_the_feed_worker_runs_run_feeds_with_its_instance_options() -> None:
    argv = exec_start("livefolio-feeds@.service", "1")
    assert argv[:3] == [f"{APP}/.venv/bin/python", "manage.py", "run_feeds"] and argv[3:] == ["$RUN_FEEDS_ARGS"]
    assert "-/etc/livefolio/feeds-%i.env" in unit("livefolio-feeds@.service")["EnvironmentFile"]
    parser = load_command_class("marketdata", "run_feeds").create_parser("manage.py", "run_feeds")

    # systemd splits an unset $RUN_FEEDS_ARGS into nothing, and a set one at whitespace.
    for extra in ([], ["--feed", "binance", "coinbase"], ["--takeover", "--metrics-port", "9101"]):
        parser.parse_args(extra)


def test_every_process_reads_the_production_environment_and_waits_for_an_empty_metrics_directory() -> None:
    for name in ("livefolio-daphne@.service", "livefolio-feeds@.service"):
        keys = unit(name)
        assert "/etc/livefolio.env" in keys["EnvironmentFile"], name
        assert keys["WorkingDirectory"] == [APP] and keys["User"] == ["livefolio"], name
        assert keys["Requires"] == ["livefolio-metrics.service"] and "livefolio-metrics.service" in keys["After"][0], name
        assert keys["PartOf"] == ["livefolio.target"] and keys["WantedBy"] == ["livefolio.target"], name
        assert keys["Restart"] == ["always"] and keys["KillSignal"] == ["SIGTERM"], name
    [reset] = unit("livefolio-metrics.service")["ExecStart"]
    assert reset == "/usr/bin/systemd-tmpfiles --remove --create livefolio.conf"
    # The directory production.env.example names (commented out there: it exists only once tmpfiles made it).
    commented = [line.lstrip("# ") for line in PRODUCTION_ENV.read_text().splitlines() if "PROMETHEUS_MULTIPROC_DIR=" in line]
    assert commented == [f"PROMETHEUS_MULTIPROC_DIR={METRICS_DIR}"]
    assert "SECRET_KEY_FILE" in example_env(PRODUCTION_ENV)


@pytest.mark.skipif(shutil.which("systemd-tmpfiles") is None, reason="systemd-tmpfiles is not installed")
def test_the_tmpfiles_line_makes_the_metrics_directory_and_empties_it(tmp_path: Path) -> None:
    user, group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
    text = (UNITS / "livefolio-tmpfiles.conf").read_text()
    assert f"D {METRICS_DIR} 0750 livefolio livefolio -" in text.splitlines()
    conf = tmp_path / "livefolio.conf"
    conf.write_text(text.replace("livefolio livefolio", f"{user} {group}"))
    root = tmp_path / "root"
    directory = root / METRICS_DIR.lstrip("/")
    directory.mkdir(parents=True)
    (directory / "counter_1234.db").write_bytes(b"a killed process's values")

    result = subprocess.run(
        ["systemd-tmpfiles", "--remove", "--create", f"--root={root}", str(conf)], capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 0, result.stderr
    assert directory.is_dir() and list(directory.iterdir()) == []
    assert directory.stat().st_mode & 0o777 == 0o750
