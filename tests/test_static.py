"""The page scripts are plain ES modules, served as they are with no build step: a missing file or a
misspelt import only shows in a browser, so these check every script a template loads and every import."""

import re
from pathlib import Path

import pytest
from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
STATIC_DIR = BASE_DIR / "static"
SCRIPTS = sorted((STATIC_DIR / "js").rglob("*.js"))
IMPORT = re.compile(r'\bimport\s*(?:\{([^}]*)\}\s*from\s*)?"(\.{1,2}/[^"]+)"')
EXPORT = re.compile(r"^export\s+(?:async\s+)?(?:function\*?|const|let|class)\s+(\w+)", re.MULTILINE)


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
        exported = set(EXPORT.findall(module.read_text()))
        for name in filter(None, (part.split(" as ")[0].strip() for part in names.split(","))):
            if name not in exported:
                problems.append(f"{target}: no export named {name}")

    assert problems == []
