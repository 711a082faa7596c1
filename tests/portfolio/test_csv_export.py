"""Exporting a ledger as CSV (portfolio/csvio.py and manage.py export_transactions), and importing the export back."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from marketdata.models import Instrument
from portfolio import csvio, services
from portfolio.models import Portfolio
from portfolio.services import Draft
from tests.conftest import T0
from tests.portfolio.test_csv_import import EVERY_KIND, HEADER, import_csv, state

D = Decimal
pytestmark = pytest.mark.django_db


def export(portfolio: Portfolio) -> str:
    out = io.StringIO()
    csvio.csv_export(portfolio=portfolio, stream=out)
    return out.getvalue()


@pytest.fixture
def euro(alice: Any, instruments: dict[str, Instrument]) -> Portfolio:
    """Alice's EUR portfolio with awkward rows: USD trades at an FX rate, fine decimals, microseconds, notes that need quoting."""
    portfolio = services.portfolio_create(owner_id=alice.pk, name="Alice euro", base_currency="EUR")
    services.transactions_import(
        portfolio=portfolio,
        drafts=[
            Draft(kind="deposit", executed_at=T0, quantity=D("20000.50"), note='first, "big" one'),
            Draft(kind="deposit", executed_at=T0, quantity=D(8000), currency="USD", fx_rate=D("0.9200")),
            Draft(
                kind="buy",
                executed_at=T0 + timedelta(hours=1, microseconds=250),
                quantity=D("0.0000000001"),
                instrument=instruments["BTC-USD"],
                price=D("58300.1234567891"),
                fee=D("1.10"),
                fx_rate=D("0.9015"),
                note="two\nlines",
            ),
            Draft(
                kind="buy", executed_at=T0 + timedelta(hours=2), quantity=D(25), instrument=instruments["SAP"], price=D("228.40"), fee=D(2)
            ),
            Draft(
                kind="buy",
                executed_at=T0 + timedelta(hours=3),
                quantity=D(20),
                instrument=instruments["AAPL"],
                price=D(1),
                fx_rate=D("0.93"),
            ),
            Draft(
                kind="dividend",
                executed_at=T0 + timedelta(days=1),
                quantity=D(20),
                instrument=instruments["AAPL"],
                price=D("0.25"),
                fee=D("0.75"),
                fx_rate=D("0.91"),
            ),
            Draft(kind="split", executed_at=T0 + timedelta(days=2), quantity=D(3), instrument=instruments["SAP"]),
            Draft(kind="interest", executed_at=T0 + timedelta(days=3), quantity=D("18.2")),
        ],
    )
    return portfolio


def test_write_gives_utc_times_plain_decimals_and_empty_cells_where_defaults_apply(euro: Portfolio) -> None:
    assert export(euro) == (
        f"{HEADER}\n"
        '2026-01-05T14:30:00Z,deposit,,20000.5,,,,,"first, ""big"" one"\n'
        "2026-01-05T14:30:00Z,deposit,,8000,,,USD,0.92,\n"
        '2026-01-05T15:30:00.000250Z,buy,BTC-USD,0.0000000001,58300.1234567891,1.1,,0.9015,"two\nlines"\n'
        "2026-01-05T16:30:00Z,buy,SAP,25,228.4,2,,,\n"
        "2026-01-05T17:30:00Z,buy,AAPL,20,1,,,0.93,\n"
        "2026-01-06T14:30:00Z,dividend,AAPL,20,0.25,0.75,,0.91,\n"
        "2026-01-07T14:30:00Z,split,SAP,3,,,,,\n"
        "2026-01-08T14:30:00Z,interest,,18.2,,,,,\n"
    )


@pytest.mark.parametrize("source", ["euro", "every_kind"])
def test_export_then_import_into_a_fresh_portfolio_round_trips(
    request: pytest.FixtureRequest, source: str, bob: Any, instruments: dict[str, Instrument]
) -> None:
    if source == "every_kind":
        original = services.portfolio_create(owner_id=bob.pk, name="Bob original")
        import_csv(original, EVERY_KIND)
    else:
        original = request.getfixturevalue("euro")
    copy = services.portfolio_create(owner_id=bob.pk, name="Bob copy", base_currency=original.base_currency)

    import_csv(copy, export(original))

    assert state(copy) == state(original)
    assert export(copy) == export(original)


def test_a_transfer_between_portfolios_exports_and_reimports_as_its_own_side(
    alice: Any, euro: Portfolio, instruments: dict[str, Instrument]
) -> None:
    other = services.portfolio_create(owner_id=alice.pk, name="Alice other", base_currency="EUR")
    services.transfer_record(
        source=euro, destination=other, executed_at=T0 + timedelta(days=4), quantity=D(10), instrument=instruments["SAP"]
    )
    copy = services.portfolio_create(owner_id=alice.pk, name="Alice other copy", base_currency="EUR")

    text = export(other)
    import_csv(copy, text)

    assert text == f"{HEADER}\n2026-01-09T14:30:00Z,transfer_in,SAP,10,76.1333333333,,,,\n"
    # 10 of the 75 SAP (25 split 3-for-1) arrive at the average cost where they came from, 5710 / 75 per share,
    # as stored (10 decimal places). transfer_record derives the holding from the unrounded price (761.3333333333),
    # so compare with the original rebuilt from its stored ledger, which is what the export carries.
    services.portfolio_rebuild(portfolio=other)
    assert state(copy)["holdings"] == state(other)["holdings"] == [("SAP", D(10), D("761.333333333"), D("761.333333333"))]


def test_the_command_writes_stdout_oldest_first_with_a_summary_on_stderr(euro: Portfolio) -> None:
    out, err = io.StringIO(), io.StringIO()

    call_command("export_transactions", "--portfolio", str(euro.pk), stdout=out, stderr=err)

    assert out.getvalue() == export(euro)
    assert out.getvalue().splitlines()[1].startswith("2026-01-05T14:30:00Z,deposit,,20000.5")
    [summary] = err.getvalue().splitlines()
    assert summary.startswith('export_transactions: 8 transactions from "Alice euro" to standard output in ')


def test_the_command_writes_a_file_that_imports_back(euro: Portfolio, bob: Any, tmp_path: Any) -> None:
    path = tmp_path / "euro.csv"
    err = io.StringIO()

    call_command("export_transactions", "--portfolio", str(euro.pk), "--out", str(path), stderr=err)

    assert path.read_text(encoding="utf-8") == export(euro)
    assert f"to {path} in " in err.getvalue()
    assert [p.name for p in tmp_path.iterdir()] == ["euro.csv"]  # no partial file left behind
    copy = services.portfolio_create(owner_id=bob.pk, name="Bob copy", base_currency="EUR")
    call_command("import_transactions", str(path), "--portfolio", str(copy.pk), stdout=io.StringIO())
    assert state(copy) == state(euro)


def test_the_command_refuses_an_unknown_portfolio() -> None:
    with pytest.raises(CommandError, match=r"^no portfolio with id 999999$"):
        call_command("export_transactions", "--portfolio", "999999")


# OWASP "CSV injection" payloads, and text that merely looks like the escape.
FORMULAS = [
    '=HYPERLINK("http://x","y")',
    "+cmd|' /C calc'!A0",
    "@SUM(A1:A9)",
    "-2+3+cmd|' /C calc'!A0",
    "\tTAB",
    "'=already",
    "''",
    "'plain",
]


def test_notes_that_a_spreadsheet_would_run_are_written_as_text_and_read_back_unchanged(alice: Any, bob: Any) -> None:
    original = services.portfolio_create(owner_id=alice.pk, name="Alice notes")
    services.transactions_import(
        portfolio=original,
        drafts=[Draft(kind="deposit", executed_at=T0 + timedelta(minutes=i), quantity=D(1), note=note) for i, note in enumerate(FORMULAS)],
    )

    written = export(original)

    notes = [row[-1] for row in csv.reader(io.StringIO(written))][1:]
    assert notes == ["'" + note if note[:1] in "=+-@\t" or note[:2] in ("'=", "''") else note for note in FORMULAS]
    assert notes[-1] == "'plain"  # a leading quote before anything harmless is left alone
    copy = services.portfolio_create(owner_id=bob.pk, name="Bob copy")
    import_csv(copy, written)
    assert [t.note for t in copy.transactions.order_by("executed_at")] == FORMULAS


def test_a_symbol_that_starts_like_a_formula_is_escaped_too(alice: Any) -> None:
    Instrument.objects.create(symbol="-X", name="Odd", asset_class="equity", quote_currency="USD")
    portfolio = services.portfolio_create(owner_id=alice.pk, name="Alice odd")
    import_csv(portfolio, f"{HEADER}\n2026-01-05T14:30:00Z,deposit,,100,,,,,\n2026-01-05T15:30:00Z,buy,'-X,1,10,,,,\n")
    assert "buy,'-X,1,10" in export(portfolio)
    assert portfolio.transactions.get(kind="buy").instrument.symbol == "-X"
