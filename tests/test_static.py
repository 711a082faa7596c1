"""The page scripts are plain ES modules, served as they are with no build step: a missing file or a
misspelt import only shows in a browser, so these check every script a template loads and every import.
The one third-party library (lightweight-charts) is installed by make from package-lock.json into the
git-ignored static/vendor/, served from our own origin; none of its code is in the repository."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

BASE_DIR = Path(settings.BASE_DIR)
STATIC_DIR = BASE_DIR / "static"
SCRIPTS = sorted((STATIC_DIR / "js").rglob("*.js"))
IMPORT = re.compile(r'\bimport\s*(?:\{([^}]*)\}\s*from\s*)?"(\.{1,2}/[^"]+)"')
EXPORT = re.compile(r"^export\s+(?:async\s+)?(?:function\*?|const|let|class)\s+(\w+)", re.MULTILINE)
# A bundle's exports: `export{a as createChart,b as LineSeries}`.
EXPORT_LIST = re.compile(r"\bexport\s*\{([^}]*)\}")
CHARTS_LIB = STATIC_DIR / "vendor" / "lightweight-charts.mjs"
# The banner every build of the library starts with; in a committed file it would mean its code was copied in.
LIBRARY_BANNER = re.compile(r"Copyright \(c\) \d{4} TradingView, Inc\.")


def exports_of(module: Path) -> set[str]:
    text = module.read_text()
    listed = {part.split(" as ")[-1].strip() for match in EXPORT_LIST.findall(text) for part in match.split(",")}
    return set(EXPORT.findall(text)) | {name for name in listed if name}


def test_every_static_file_a_template_names_exists() -> None:
    named = {
        path
        for template in (BASE_DIR / "templates").rglob("*.html")
        for path in re.findall(r"\{%\s*static\s+'([^']+)'\s*%\}", template.read_text())
    }

    assert "js/dashboard.js" in named
    assert [path for path in sorted(named) if not (STATIC_DIR / path).is_file()] == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(STATIC_DIR)))
def test_every_import_names_an_existing_module_and_its_exports(script: Path) -> None:
    problems = []
    for names, target in IMPORT.findall(script.read_text()):
        module = (script.parent / target).resolve()
        if not module.is_file():
            problems.append(f"{target}: no such file")
            continue
        exported = exports_of(module)
        for name in filter(None, (part.split(" as ")[0].strip() for part in names.split(","))):
            if name not in exported:
                problems.append(f"{target}: no export named {name}")

    assert problems == []


def test_the_chart_library_is_installed_and_served_from_our_own_origin(client: Client) -> None:
    assert CHARTS_LIB.is_file(), f"{CHARTS_LIB.relative_to(BASE_DIR)} is missing: `make vendor` (or make run / make test) installs it"

    response = client.get("/static/vendor/lightweight-charts.mjs")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")  # a module script needs a JavaScript type
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert LIBRARY_BANNER.search(body[:400].decode())
    assert {"createChart", "CandlestickSeries", "HistogramSeries", "AreaSeries", "LineSeries"} <= exports_of(CHARTS_LIB)


@pytest.mark.skipif(shutil.which("git") is None or not (BASE_DIR / ".git").exists(), reason="not a git checkout")
def test_no_third_party_library_code_is_committed() -> None:
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=BASE_DIR, capture_output=True, check=True).stdout.decode().split("\0")
    tracked = [path for path in tracked if path]

    assert "package-lock.json" in tracked and "package.json" in tracked
    assert [path for path in tracked if path.startswith(("node_modules/", "static/vendor/"))] == []
    carrying_the_banner = []
    for path in tracked:
        file = BASE_DIR / path
        if file.is_file() and file.suffix in {".js", ".mjs", ".css", ".html", ".json", ".txt", ".md"}:
            if LIBRARY_BANNER.search(file.read_text(errors="replace")):
                carrying_the_banner.append(path)
    assert carrying_the_banner == []
