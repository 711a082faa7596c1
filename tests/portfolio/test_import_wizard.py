"""The import wizard (portfolio/import_views.py, portfolio/wizard.py): upload → format → preview and fix → import."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from marketdata.models import AssetClass, Instrument, SymbolAlias
from portfolio import services, wizard
from portfolio.models import ImportMapping, ImportUpload, Portfolio, Transaction
from tests.portfolio.brokers.test_presets import BAD_ROWS, MAPPING, SAMPLES

D = Decimal
pytestmark = pytest.mark.django_db

HEADER = "executed_at,kind,symbol,quantity,price,fee,currency,fx_rate,note"
SOUND = f"""{HEADER}
2026-01-02T10:00:00Z,deposit,,1000,,,,,
2026-01-03T14:30:00Z,buy,AAPL,2,150,1,,,first buy
2026-01-04T14:30:00Z,sell,AAPL,1,160,,,,
"""
# Line 3: a date that is no date; line 7 (after a blank line): sells more than held.
TWO_PROBLEMS = f"""{HEADER}
2026-01-02T10:00:00Z,deposit,,1000,,,,,
2026-13-45T14:30:00Z,buy,AAPL,2,150,,,,
2026-01-04T14:30:00Z,buy,MSFT,1,300,,,,

2026-01-05T14:30:00Z,fee,,1,,,,,
2026-01-06T14:30:00Z,sell,AAPL,5,160,,,,
"""


@pytest.fixture
def aliases(instruments: dict[str, Instrument]) -> dict[str, Instrument]:
    """ETH-USD and the aliases the broker samples' symbols are found by (as in tests/portfolio/brokers)."""
    eth = Instrument.objects.create(symbol="ETH-USD", name="Ether", asset_class=AssetClass.CRYPTO, quote_currency="USD")
    for alias, source, instrument in [
        ("BTCUSDT", "binance", instruments["BTC-USD"]),
        ("ETHUSDT", "binance", eth),
        ("US0378331005", "degiro", instruments["AAPL"]),
        ("DE0007164600", "", instruments["SAP"]),
    ]:
        SymbolAlias.objects.create(alias=alias, source=source, instrument=instrument)
    return {**instruments, "ETH-USD": eth}


def empty(owner: Any, base: str = "USD", name: str = "Imported") -> Portfolio:
    return services.portfolio_create(owner_id=owner.pk, name=name, base_currency=base)


def signed_in(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


def upload(client: Client, portfolio: Portfolio, text: str | bytes, name: str = "ledger.csv") -> ImportUpload:
    data = text.encode() if isinstance(text, str) else text
    response = client.post(reverse("portfolio:import_upload", args=[portfolio.pk]), {"file": SimpleUploadedFile(name, data)})
    assert response.status_code == 302, response.content.decode()[:2000]
    found = ImportUpload.objects.get(owner=portfolio.owner)
    assert response["Location"] == reverse("portfolio:import_format", args=[portfolio.pk, found.pk])
    return found


def choose(client: Client, up: ImportUpload, fmt: str, **mapping: str) -> Any:
    return client.post(reverse("portfolio:import_format", args=[up.portfolio_id, up.pk]), {"format": fmt, "decimal": ".", **mapping})


def preview(client: Client, up: ImportUpload) -> str:
    response = client.get(reverse("portfolio:import_preview", args=[up.portfolio_id, up.pk]))
    assert response.status_code == 200
    return response.content.decode()


def problems_on(page: str) -> list[str]:
    block = re.search(r'data-testid="import-problems".*?<ul class="problem-list" role="alert">(.*?)</ul>', page, re.S)
    if block is None:
        return []
    return [re.sub(r"\s+", " ", m).strip().replace("&#x27;", "'") for m in re.findall(r"<li>(.*?)</li>", block.group(1), re.S)]


def fix(client: Client, up: ImportUpload, changes: dict[int, list[str] | None]) -> None:
    data: dict[str, Any] = {"line": [str(line) for line in changes]}
    for line, cells in changes.items():
        if cells is None:
            data[f"skip-{line}"] = "1"
        else:
            data.update({f"c-{line}-{i}": cell for i, cell in enumerate(cells)})
    response = client.post(reverse("portfolio:import_fix", args=[up.portfolio_id, up.pk]), data)
    assert response.status_code == 302


def run(client: Client, up: ImportUpload) -> Any:
    return client.post(reverse("portfolio:import_run", args=[up.portfolio_id, up.pk]))


# --- Step 1: upload ------------------------------------------------------------------


def test_the_wizard_needs_a_signed_in_user(client: Client, alice: Any) -> None:
    p = empty(alice)
    response = client.get(reverse("portfolio:import_upload", args=[p.pk]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_an_upload_is_kept_for_the_next_steps_and_a_new_one_replaces_it(client: Client, alice: Any, instruments: Any) -> None:
    p = empty(alice)
    signed_in(client, alice)
    first = upload(client, p, SOUND)
    assert bytes(first.data) == SOUND.encode() and first.size == len(SOUND.encode()) and first.name == "ledger.csv"
    second = upload(client, p, SOUND.replace("1000", "2000"))
    assert list(ImportUpload.objects.values_list("pk", flat=True)) == [second.pk]


def test_an_upload_over_the_size_limit_is_refused_and_not_kept(client: Client, alice: Any, settings: Any) -> None:
    settings.PORTFOLIO_IMPORT_MAX_BYTES = 100
    p = empty(alice)
    signed_in(client, alice)
    response = client.post(reverse("portfolio:import_upload", args=[p.pk]), {"file": SimpleUploadedFile("big.csv", b"x" * 101)})
    assert response.status_code == 200
    assert "the limit is 0 MB" in response.content.decode() or "the limit is" in response.content.decode()
    assert not ImportUpload.objects.exists()


def test_an_upload_that_is_not_utf8_is_refused(client: Client, alice: Any) -> None:
    p = empty(alice)
    signed_in(client, alice)
    data = SOUND.replace("first buy", "caf\xe9").encode("latin-1")
    response = client.post(reverse("portfolio:import_upload", args=[p.pk]), {"file": SimpleUploadedFile("l1.csv", data)})
    assert "The file is not UTF-8 text" in response.content.decode()
    assert not ImportUpload.objects.exists()


def test_uploads_left_longer_than_a_day_are_deleted(alice: Any) -> None:
    p = empty(alice)
    old = ImportUpload.objects.create(owner=alice, portfolio=p, name="old.csv", data=b"x", size=1)
    fresh = ImportUpload.objects.create(owner=alice, portfolio=p, name="new.csv", data=b"x", size=1)
    ImportUpload.objects.filter(pk=old.pk).update(created_at=timezone.now() - wizard.UPLOAD_TTL - timedelta(minutes=1))
    assert wizard.uploads_expire() == 1
    assert list(ImportUpload.objects.values_list("pk", flat=True)) == [fresh.pk]


# --- Isolation and CSRF ----------------------------------------------------------------


def test_nobody_reaches_another_users_portfolio_or_upload(client: Client, alice: Any, bob: Any, instruments: Any) -> None:
    p = empty(alice)
    signed_in(client, alice)
    up = upload(client, p, SOUND)
    choose(client, up, wizard.OURS)
    bobs = empty(bob, name="Bob's")
    client.force_login(bob)
    args = [p.pk, up.pk]
    assert client.get(reverse("portfolio:import_upload", args=[p.pk])).status_code == 404
    assert client.post(reverse("portfolio:import_upload", args=[p.pk]), {"file": SimpleUploadedFile("a.csv", b"x")}).status_code == 404
    for name in ("import_format", "import_preview"):
        assert client.get(reverse(f"portfolio:{name}", args=args)).status_code == 404
    for name in ("import_format", "import_fix", "import_run", "import_cancel"):
        assert client.post(reverse(f"portfolio:{name}", args=args), {"format": wizard.OURS}).status_code == 404
    # Alice's upload through Bob's own portfolio is still not his.
    assert client.get(reverse("portfolio:import_preview", args=[bobs.pk, up.pk])).status_code == 404
    assert client.post(reverse("portfolio:import_run", args=[bobs.pk, up.pk])).status_code == 404
    assert ImportUpload.objects.filter(pk=up.pk).exists()
    assert not Transaction.objects.exists()


def test_every_step_that_writes_needs_a_csrf_token(alice: Any, instruments: Any) -> None:
    p = empty(alice)
    up = ImportUpload.objects.create(owner=alice, portfolio=p, name="a.csv", data=SOUND.encode(), size=len(SOUND), format=wizard.OURS)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(reverse("portfolio:import_upload", args=[p.pk]), {"file": SimpleUploadedFile("a.csv", b"x")}).status_code == 403
    for name in ("import_format", "import_fix", "import_run", "import_cancel"):
        assert client.post(reverse(f"portfolio:{name}", args=[p.pk, up.pk]), {"format": wizard.OURS}).status_code == 403
    assert not Transaction.objects.exists()


# --- Steps 2 to 4 with our own CSV ----------------------------------------------------------


def test_our_own_csv_is_detected_previewed_without_writing_and_imported_all_at_once(client: Client, alice: Any, instruments: Any) -> None:
    p = empty(alice)
    signed_in(client, alice)
    up = upload(client, p, SOUND)
    page = client.get(reverse("portfolio:import_format", args=[p.pk, up.pk])).content.decode()
    assert "It is a Livefolio CSV." in page
    assert re.search(r'value="livefolio"[^>]*checked', page)
    response = choose(client, up, wizard.OURS)
    assert response["Location"] == reverse("portfolio:import_preview", args=[p.pk, up.pk])

    page = preview(client, up)
    assert "Ready to import" in page and problems_on(page) == []
    assert "3 rows → 3 transactions" in page
    holdings = re.search(r'data-testid="import-holdings".*?</section>', page, re.S).group(0)  # type: ignore[union-attr]
    assert "AAPL" in holdings and ">1<" in holdings and ">150<" in holdings
    cash = re.search(r'data-testid="import-cash".*?</section>', page, re.S).group(0)  # type: ignore[union-attr]
    assert ">859.00<" in cash  # 1000 - 301 + 160, as money
    assert "first buy" in page and "2026-01-03T14:30:00Z" in page
    assert not Transaction.objects.exists()  # a preview is a dry run

    response = run(client, up)
    assert response["Location"] == reverse("portfolio:transactions", args=[p.pk])
    assert Transaction.objects.filter(portfolio=p).count() == 3
    assert not ImportUpload.objects.exists()
    shown = client.get(response["Location"]).content.decode()
    assert "Imported 3 rows → 3 transactions" in shown


def test_format_and_ledger_problems_are_listed_at_once_by_line(client: Client, alice: Any, instruments: Any) -> None:
    p = empty(alice)
    signed_in(client, alice)
    up = upload(client, p, TWO_PROBLEMS)
    choose(client, up, wizard.OURS)
    page = preview(client, up)
    assert "2 problems to fix" in page
    assert problems_on(page) == [
        "line 3, executed_at: '2026-13-45T14:30:00Z' is not an ISO 8601 time such as 2025-03-14T15:30:00Z",
        "line 7, quantity: Cannot sell 5 AAPL on 2026-01-06 14:30 UTC: only 0 held at that time, "
        "checked without the rows that have problems (fixing them may change this).",
    ]
    # Both rows are offered for fixing, the bad cell marked.
    assert 'data-line="3"' in page and 'data-line="7"' in page
    assert re.search(r'is-bad">\s*<span>executed_at</span>\s*<input type="text" name="c-3-0" value="2026-13-45T14:30:00Z"', page)
    assert 'data-testid="import-run"' not in page
    assert run(client, up).status_code == 200  # refused: nothing written
    assert not Transaction.objects.exists()


def test_rows_fixed_in_the_browser_are_checked_again_and_imported_without_uploading_again(
    client: Client, alice: Any, instruments: Any
) -> None:
    p = empty(alice)
    signed_in(client, alice)
    up = upload(client, p, TWO_PROBLEMS)
    choose(client, up, wizard.OURS)
    fix(client, up, {3: ["2026-01-03T14:30:00Z", "buy", "AAPL", "2", "150", "", "", "", "fixed"]})
    page = preview(client, up)
    # The date fixed, the sell of 5 is still more than the 2 bought, now without the caveat.
    assert problems_on(page) == ["line 7, quantity: Cannot sell 5 AAPL on 2026-01-06 14:30 UTC: only 2 held at that time."]
    fix(client, up, {7: None})  # leave it out
    page = preview(client, up)
    assert "Ready to import" in page and "1 row fixed here" not in page and "2 rows fixed here" in page
    run(client, up)
    rows = Transaction.objects.filter(portfolio=p).order_by("executed_at")
    assert [(t.kind, t.note) for t in rows] == [("deposit", ""), ("buy", "fixed"), ("buy", ""), ("fee", "")]
    assert bytes(up.data) == TWO_PROBLEMS.encode()  # the file itself was never changed


def test_an_edit_keeps_every_other_lines_number_even_past_a_multiline_record() -> None:
    lines = [f"{HEADER}\n", 'a,b,c,1,,,,,"two\n', 'lines"\n', "bad,row\n", "x,y,z,2,,,,,\n"]
    out = list(wizard.edited_lines(lines, {2: {"cells": ["2026-01-01T00:00:00Z", "deposit", "", "1"]}, 4: {"skip": True}}))
    assert out == [f"{HEADER}\n", "2026-01-01T00:00:00Z,deposit,,1\n", "\n", "\n", "x,y,z,2,,,,,\n"]


def test_cancelling_deletes_the_upload(client: Client, alice: Any) -> None:
    p = empty(alice)
    signed_in(client, alice)
    up = upload(client, p, SOUND)
    response = client.post(reverse("portfolio:import_cancel", args=[p.pk, up.pk]))
    assert response["Location"] == reverse("portfolio:transactions", args=[p.pk])
    assert not ImportUpload.objects.exists()


def test_the_portfolios_and_transactions_pages_link_to_the_wizard(client: Client, alice: Any) -> None:
    p = empty(alice)
    signed_in(client, alice)
    link = reverse("portfolio:import_upload", args=[p.pk])
    assert link in client.get(reverse("portfolio:portfolios")).content.decode()
    assert link in client.get(reverse("portfolio:transactions", args=[p.pk])).content.decode()


# --- Broker presets ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BAD_ROWS))
def test_each_broker_sample_is_detected_its_bad_row_listed_skipped_in_the_wizard_and_imported(
    name: str, client: Client, alice: Any, aliases: Any
) -> None:
    preset, message = BAD_ROWS[name]
    base = "EUR" if name in ("degiro_transactions.csv", "trading212.csv", "binance_history.csv") else "USD"
    p = empty(alice, base)
    signed_in(client, alice)
    up = upload(client, p, (SAMPLES / name).read_bytes(), name=name)
    page = client.get(reverse("portfolio:import_format", args=[p.pk, up.pk])).content.decode()
    assert re.search(rf'value="{preset}"[^>]*checked', page) and "(detected)" in page
    choose(client, up, preset)

    page = preview(client, up)
    listed = problems_on(page)
    assert len(listed) == 1 and listed[0].startswith(message), listed
    line = int(message.split(",")[0].removeprefix("line "))
    assert f'data-line="{line}"' in page
    fix(client, up, {line: None})
    page = preview(client, up)
    assert "Ready to import" in page, problems_on(page)
    run(client, up)
    assert Transaction.objects.filter(portfolio=p).count() > 0
    assert not ImportUpload.objects.exists()


def test_a_detected_preset_can_be_overridden_and_its_problems_are_the_chosen_presets(client: Client, alice: Any, aliases: Any) -> None:
    p = empty(alice)
    signed_in(client, alice)
    up = upload(client, p, (SAMPLES / "coinbase.csv").read_bytes(), name="coinbase.csv")
    choose(client, up, "ibkr")
    assert problems_on(preview(client, up)) == ["line 1: no Interactive Brokers Flex Query (trades) header in the first 10 lines"]


def test_a_trading212_row_fixed_in_the_wizard_is_imported_with_the_rest(client: Client, alice: Any, aliases: Any) -> None:
    p = empty(alice, "EUR")
    signed_in(client, alice)
    up = upload(client, p, (SAMPLES / "trading212.csv").read_bytes(), name="trading212.csv")
    choose(client, up, "trading212")
    page = preview(client, up)
    cells = re.findall(r'name="c-10-(\d+)" value="([^"]*)"', page)
    row = [value for _, value in cells]
    assert row[:2] == ["Stock split open", "2025-03-06 10:00:00"]
    row[0] = "Market buy"
    fix(client, up, {10: row})
    page = preview(client, up)
    assert "Ready to import" in page
    run(client, up)
    # 10 AAPL bought, 4 sold, then the fixed row buys 6 more.
    assert p.holdings.get(instrument__symbol="AAPL").quantity == D(12)


# --- Mapping columns, remembered per user ---------------------------------------------------------


def mapping_post() -> dict[str, str]:
    columns = MAPPING["columns"]
    assert isinstance(columns, dict)
    return {
        **{f"col_{ours}": theirs for ours, theirs in columns.items()},
        "date_format": "%d/%m/%Y %H:%M",
        "timezone": "Europe/Berlin",
        "decimal": ",",
        "thousands": "",
        "kinds": "Einzahlung = deposit\nKauf = buy\nVerkauf = sell",
    }


def test_an_unknown_file_is_mapped_by_hand_and_the_mapping_is_offered_again_for_the_same_header(
    client: Client, alice: Any, bob: Any, instruments: Any
) -> None:
    text = (SAMPLES / "generic_semicolon.csv").read_bytes()
    p = empty(alice)
    signed_in(client, alice)
    up = upload(client, p, text, name="mine.csv")
    page = client.get(reverse("portfolio:import_format", args=[p.pk, up.pk])).content.decode()
    assert "Livefolio does not know this format" in page
    assert re.search(r'value="generic"[^>]*checked', page)
    assert "Stück" in page  # the file's columns are offered

    response = client.post(reverse("portfolio:import_format", args=[p.pk, up.pk]), {"format": wizard.MAPPED, **mapping_post()})
    assert response.status_code == 302
    saved = ImportMapping.objects.get(owner=alice)
    assert saved.mapping["columns"]["quantity"] == "Stück" and saved.mapping["delimiter"] == ";"
    page = preview(client, up)
    # Line 5's "Tausch" is no kind: the only problem; the rows before it read with the mapping.
    assert problems_on(page) == ["line 5, Typ: 'Tausch' is not a kind: map it to one of " + ", ".join(wizard_kinds())]
    assert "2025-01-03T14:30:00Z" in page  # 15:30 in Berlin

    # The next file with this header: the mapping is filled in.
    up2 = upload(client, p, text, name="again.csv")
    page = client.get(reverse("portfolio:import_format", args=[p.pk, up2.pk])).content.decode()
    assert "You mapped a file with this header before" in page
    assert re.search(r'<option value="Stück" selected>', page)
    assert re.search(r"<textarea[^>]*>\s*einzahlung = deposit\s+kauf = buy", page, re.I)

    # Not for anyone else.
    client.force_login(bob)
    bobs = empty(bob, name="Bob's")
    up3 = upload(client, bobs, text)
    page = client.get(reverse("portfolio:import_format", args=[bobs.pk, up3.pk])).content.decode()
    assert "Livefolio does not know this format" in page and not re.search(r"<textarea[^>]*>\s*einzahlung", page, re.I)


def wizard_kinds() -> list[str]:
    from portfolio.models import Kind

    return list(Kind.values)


def test_a_mapping_without_the_required_columns_is_refused_with_what_to_map(client: Client, alice: Any) -> None:
    p = empty(alice)
    signed_in(client, alice)
    up = upload(client, p, (SAMPLES / "generic_semicolon.csv").read_bytes())
    response = client.post(reverse("portfolio:import_format", args=[p.pk, up.pk]), {"format": wizard.MAPPED, "decimal": "."})
    assert response.status_code == 200
    assert "map executed_at, kind, quantity" in response.content.decode()
    assert not ImportMapping.objects.exists()


def test_a_row_the_preset_cannot_map_is_not_shown_among_the_rows_to_be_recorded(client: Client, alice: Any, aliases: Any) -> None:
    p = empty(alice, "EUR")
    signed_in(client, alice)
    up = upload(client, p, (SAMPLES / "trading212.csv").read_bytes(), name="trading212.csv")
    choose(client, up, "trading212")
    page = preview(client, up)
    rows = re.search(r'data-testid="import-rows".*?</section>', page, re.S).group(0)  # type: ignore[union-attr]
    assert re.findall(r'<td data-label="Line">(\d+)</td>', rows) == ["2", "3", "4", "5", "6", "7", "9"]
    assert "1970" not in rows
