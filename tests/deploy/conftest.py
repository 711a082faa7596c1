"""The deployment recipe's tests: nginx (tests/nginx.py) before real daphne processes, and the systemd units."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings

from tests.e2e.conftest import browser, demo  # noqa: F401  (fixtures: Debian's chromium, the demo data)


@pytest.fixture(scope="session")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """STATIC_ROOT as `manage.py collectstatic` fills it on a server: what nginx serves at /static/."""
    root = tmp_path_factory.mktemp("staticfiles")
    with override_settings(STATIC_ROOT=str(root)):
        call_command("collectstatic", interactive=False, verbosity=0)
    assert (root / "vendor" / "lightweight-charts.mjs").exists(), "make vendor first: the charting library is missing"
    yield root
