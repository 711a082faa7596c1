"""The fault suite's figures: each test prints a `FIGURE ...` line; they are listed together at the end of the run."""

from __future__ import annotations

from typing import Any

import pytest

FIGURES: list[tuple[str, str]] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        for line in report.capstdout.splitlines():
            if line.startswith("FIGURE "):
                FIGURES.append((item.name, line.removeprefix("FIGURE ")))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("fault figures (tests/faults)")
        for name, figure in FIGURES:
            terminalreporter.write_line(f"{name}: {figure}")
