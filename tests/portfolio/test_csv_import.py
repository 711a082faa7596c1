"""Importing a CSV ledger (portfolio/csvio.py and manage.py import_transactions): all or nothing, every problem by line."""

from __future__ import annotations

import io
import sys
import tracemalloc
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client

from bench.import_csv import ledger_csv, ledger_lines
from marketdata.models import Instrument
from portfolio import csvio, services
from portfolio.models import Portfolio
from portfolio.services import Draft, LedgerProblems
from tests.conftest import T0

D = Decimal
pytestmark = pytest.mark.django_db

HEADER = "executed_at,kind,symbol,quantity,price,fee,currency,fx_rate,note"


@pytest.fixture
def ledger(alice: Any, instruments: dict[str, Instrument]) -> Portfolio:
    """Alice's USD portfolio: 5000 USD deposited, then 10 AAPL bought at 150 with a 1.00 fee, at T0."""
    portfolio = services.portfolio_create(owner_id=alice.pk, name="Alice growth")
    services.transactions_import(
        portfolio=portfolio,
        drafts=[
            Draft(kind="deposit", executed_at=T0 - timedelta(days=1), quantity=D(5000)),
            Draft(kind="buy", executed_at=T0, quantity=D(10), instrument=instruments["AAPL"], price=D(150), fee=D(1)),
        ],
    )
    return portfolio


@pytest.fixture
def empty(bob: Any, instruments: dict[str, Instrument]) -> Portfolio:
    """Bob's USD portfolio, with no ledger yet."""
    return services.portfolio_create(owner_id=bob.pk, name="Bob income")


def import_csv(portfolio: Portfolio, text: str, *, dry_run: bool = False) -> csvio.CsvImport:
    return csvio.csv_import(portfolio=portfolio, lines=io.StringIO(text, newline=""), dry_run=dry_run)


def problems(portfolio: Portfolio, text: str) -> list[str]:
    with pytest.raises(LedgerProblems) as exc:
        import_csv(portfolio, text)
    return [csvio.describe(p) for p in exc.value.problems]


def state(portfolio: Portfolio) -> dict[str, Any]:
    """Everything an import could change: the ledger rows, holdings, cash and totals."""
    portfolio.refresh_from_db()
    return {
        "transactions": list(
            portfolio.transactions.order_by("executed_at", "id").values_list(
                "kind", "instrument__symbol", "quantity", "price", "fee", "currency", "fx_rate", "executed_at", "note"
            )
        ),
        "holdings": sorted(portfolio.holdings.values_list("instrument__symbol", "quantity", "cost", "cost_base")),
        "cash": sorted(portfolio.cash_balances.values_list("currency", "amount")),
        "totals": (portfolio.realised_pnl, portfolio.dividends, portfolio.interest, portfolio.fees, portfolio.net_deposits),
    }


# A sound start: line 2 deposits, line 3 buys MSFT. The bad row is line 4.
GOOD_START = f"""{HEADER}
2026-01-06T10:00:00Z,deposit,,1000,,,,,
2026-01-06T11:00:00Z,buy,MSFT,1,400,,,,
"""
BAD_ROWS = {
    "bad number": ("2026-01-07T14:30:00Z,buy,AAPL,abc,150,,,,", "line 4, quantity: 'abc' is not a number"),
    "thousands separator": (
        '2026-01-07T14:30:00Z,deposit,,"1,000.50",,,,,',
        "line 4, quantity: '1,000.50' is not a number: write decimals with '.' and no thousands separators",
    ),
    "NaN": ("2026-01-07T14:30:00Z,buy,AAPL,1,NaN,,,,", "line 4, price: 'NaN' is not a number"),
    "Infinity": ("2026-01-07T14:30:00Z,buy,AAPL,1,150,Infinity,,,", "line 4, fee: 'Infinity' is not a number"),
    "underscore digits": ("2026-01-07T14:30:00Z,deposit,,1_000,,,,,", "line 4, quantity: '1_000' is not a number"),
    "too many decimal places": (
        "2026-01-07T14:30:00Z,buy,AAPL,1,150.12345678901,,,,",
        "line 4, price: '150.12345678901' has more than 10 decimal places",
    ),
    "negative quantity": ("2026-01-07T14:30:00Z,buy,AAPL,-5,150,,,,", "line 4, quantity: Quantity must be greater than zero"),
    "negative fee": ("2026-01-07T14:30:00Z,buy,AAPL,5,150,-1,,,", "line 4, fee: Fee must not be negative."),
    "unknown kind": (
        "2026-01-07T14:30:00Z,purchase,AAPL,5,150,,,,",
        "line 4, kind: 'purchase' is not a kind: use one of buy, sell, dividend, interest, fee, deposit, withdrawal, split, "
        "transfer_in, transfer_out",
    ),
    "missing kind": ("2026-01-07T14:30:00Z,,AAPL,5,150,,,,", "line 4, kind: required"),
    "unknown symbol": ("2026-01-07T14:30:00Z,buy,XYZ,5,150,,,,", "line 4, symbol: unknown instrument 'XYZ'"),
    "symbol in the wrong case": (
        "2026-01-07T14:30:00Z,buy,aapl,5,150,,,,",
        "line 4, symbol: unknown instrument 'aapl' (did you mean 'AAPL'?)",
    ),
    "buy without a symbol": ("2026-01-07T14:30:00Z,buy,,5,150,,,,", "line 4, symbol: A buy needs an instrument."),
    "buy without a price": ("2026-01-07T14:30:00Z,buy,AAPL,5,,,,,", "line 4, price: required for a buy: the price per share"),
    "deposit with a symbol": (
        "2026-01-07T14:30:00Z,deposit,AAPL,5,,,,,",
        "line 4, symbol: A deposit moves cash only: leave the instrument empty.",
    ),
    "unknown currency": (
        "2026-01-07T14:30:00Z,deposit,,100,,,ABC,2,",
        "line 4, currency: Unknown currency 'ABC': use an ISO 4217 code such as USD.",
    ),
    "trade in another currency than the instrument's": (
        "2026-01-07T14:30:00Z,buy,AAPL,5,150,,EUR,1.1,",
        "line 4, currency: AAPL trades in USD, so its buy is in USD.",
    ),
    "missing fx_rate for a foreign currency": (
        "2026-01-07T14:30:00Z,buy,SAP,1,230,,,,",
        "line 4, fx_rate: The portfolio is in USD: give the EUR→USD rate at execution.",
    ),
    "naive time": (
        "2026-01-07T14:30:00,buy,AAPL,5,150,,,,",
        "line 4, executed_at: '2026-01-07T14:30:00' needs a timezone: add Z or an offset, "
        "e.g. 2025-03-14T15:30:00Z or 2025-03-14T15:30:00-04:00",
    ),
    "date without a time": (
        "2026-01-07,buy,AAPL,5,150,,,,",
        "line 4, executed_at: '2026-01-07' needs a timezone: add Z or an offset, e.g. 2025-03-14T15:30:00Z or 2025-03-14T15:30:00-04:00",
    ),
    "unparseable time": (
        "07/01/2026 14:30,buy,AAPL,5,150,,,,",
        "line 4, executed_at: '07/01/2026 14:30' is not an ISO 8601 time such as 2025-03-14T15:30:00Z",
    ),
    "future time": ("2099-01-01T00:00:00Z,buy,AAPL,5,150,,,,", "line 4, executed_at: Execution time is in the future."),
    "split ratio 0": ("2026-01-07T14:30:00Z,split,AAPL,0,,,,,", "line 4, quantity: Split ratio must be greater than zero"),
    "sell more than held": (
        "2026-01-07T14:30:00Z,sell,AAPL,11,160,,,,",
        "line 4, quantity: Cannot sell 11 AAPL on 2026-01-07 14:30 UTC: only 10 held at that time.",
    ),
    "back-dated sell before the buy": (
        "2026-01-04T14:30:00Z,sell,AAPL,1,160,,,,",
        "line 4, quantity: Cannot sell 1 AAPL on 2026-01-04 14:30 UTC: only 0 held at that time.",
    ),
    # 5000 − 1501 (the AAPL buy) + 1000 (line 2) − 400 (line 3) = 4099 USD held.
    "withdrawal beyond cash": (
        "2026-01-07T14:30:00Z,withdrawal,,5000,,,,,",
        "line 4, quantity: Cannot withdraw 5000 USD on 2026-01-07 14:30 UTC: only 4099 USD cash held at that time",
    ),
    "too many cells": ("2026-01-07T14:30:00Z,buy,AAPL,5,150,,,,,extra", "line 4: 10 cells, but the header has 9 columns"),
    "too few cells": ("2026-01-07T14:30:00Z,buy,AAPL,5,150", "line 4: 5 cells, but the header has 9 columns"),
    "broken quoting": ('2026-01-07T14:30:00Z,buy,AAPL,5,150,,,,"unclosed', "line 4: not valid CSV: unexpected end of data"),
}


@pytest.mark.parametrize(("row", "message"), BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_a_bad_row_is_reported_with_its_line_and_column_and_nothing_is_imported(ledger: Portfolio, row: str, message: str) -> None:
    before = state(ledger)

    [found] = problems(ledger, GOOD_START + row + "\n")

    # A prefix: the services' own messages may add detail after what they say today.
    assert found.startswith(message), found
    assert state(ledger) == before


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            "executed_at,kind,symbol,price,fee,currency,fx_rate,note",
            "line 1: missing required column quantity",
        ),
        (
            HEADER + ",account",
            f"line 1: unknown column 'account'; the columns are {HEADER}",
        ),
        (
            "executed_at,kind,quantity,quantity",
            "line 1: column quantity appears more than once",
        ),
    ],
    ids=["missing required column", "extra column", "repeated column"],
)
def test_a_bad_header_is_reported_on_line_1_and_nothing_is_imported(ledger: Portfolio, header: str, message: str) -> None:
    before = state(ledger)

    assert problems(ledger, header + "\n2026-01-07T14:30:00Z,deposit,,100,,,,,\n") == [message]

    assert state(ledger) == before


def test_an_empty_file_is_reported(ledger: Portfolio) -> None:
    assert problems(ledger, "") == [f"line 1: the file is empty: the first line must be the header {HEADER}"]


def test_every_problem_in_a_file_is_reported_at_once_in_line_order(ledger: Portfolio) -> None:
    text = f"""{HEADER}
2026-01-06T10:00:00Z,deposit,,abc,,,,,

2026-01-06T11:00:00Z,buy,XYZ,1,400,,,,
2026-01-06T12:00:00Z,buy,SAP,1,230,,,,
2026-01-06T13:00:00,buy,XYZ,1,400,,,,
2026-01-06T14:00:00Z,deposit,,100,,,ABC,1.1,
2026-01-06T15:00:00Z,sell,AAPL,99,160,,,,
"""
    before = state(ledger)

    assert problems(ledger, text) == [
        "line 2, quantity: 'abc' is not a number",
        "line 4, symbol: unknown instrument 'XYZ' (on 2 rows)",
        # Rows that parsed still get the services' own checks...
        "line 5, fx_rate: The portfolio is in USD: give the EUR→USD rate at execution.",
        "line 6, executed_at: '2026-01-06T13:00:00' needs a timezone: add Z or an offset, "
        "e.g. 2025-03-14T15:30:00Z or 2025-03-14T15:30:00-04:00",
        "line 6, symbol: unknown instrument 'XYZ' (on 2 rows)",
        "line 7, currency: Unknown currency 'ABC': use an ISO 4217 code such as USD.",
        # ...and the ledger check runs over the rows without problems, in the same pass (issue 14: one round).
        "line 8, quantity: Cannot sell 99 AAPL on 2026-01-06 15:00 UTC: only 10 held at that time, "
        "checked without the rows that have problems (fixing them may change this).",
    ]
    assert state(ledger) == before


def test_line_numbers_are_physical_lines_across_blank_lines_and_multiline_notes(ledger: Portfolio) -> None:
    text = f'{HEADER}\n\n2026-01-06T10:00:00Z,deposit,,100,,,,,"two\nlines"\n\n,,,,,,,,\n2026-01-07T10:00:00Z,deposit,,x,,,,,\n'

    assert problems(ledger, text) == ["line 7, quantity: 'x' is not a number"]


# --- A sound file -------------------------------------------------------------

EVERY_KIND = f"""{HEADER}
2026-01-02T09:00:00Z,deposit,,10000,,,,,opening deposit
2026-01-02T15:30:00-05:00,buy,AAPL,20,150,1,,,

2026-01-03T10:00:00Z,buy,SAP,10,200,2,EUR,1.1,
2026-01-04T10:00:00Z,sell,AAPL,5,170,1,,,
2026-01-05T10:00:00Z,dividend,AAPL,15,0.25,0.5,,,tax withheld 0.50
2026-01-06T10:00:00Z,split,AAPL,2,,,,,2-for-1
2026-01-07T10:00:00Z,interest,,12.40,,,,,
2026-01-08T10:00:00Z,fee,,15,,,,,custody
2026-01-09T10:00:00Z,withdrawal,,1000,,,,,
2026-01-10T10:00:00Z,transfer_in,MSFT,3,300,,,,"from my old broker, account 2"
2026-01-11T10:00:00Z,transfer_out,MSFT,1,300,,,,
2026-01-12T10:00:00Z,transfer_in,,500,,,,,
2026-01-13T10:00:00Z,transfer_out,,200,,,,,
2026-01-14T10:00:00Z,deposit,,3000,,,EUR,1.1,
"""


def test_a_file_with_every_kind_imports_to_hand_computed_holdings_cash_and_totals(empty: Portfolio) -> None:
    result = import_csv(empty, EVERY_KIND)

    assert result.summary() == (
        '14 rows → 14 transactions in "Bob income" (2 buy, 1 sell, 1 dividend, 1 interest, 1 fee, 2 deposit, 1 withdrawal, '
        "1 split, 2 transfer_in, 2 transfer_out)"
    )
    after = state(empty)
    assert after["holdings"] == [
        # 20 at 150, 5 sold at average cost (750 of cost), then 2-for-1: 30 shares, cost unchanged.
        ("AAPL", D(30), D(2250), D(2250)),
        # 3 arrived at 300 each, 1 left at average cost.
        ("MSFT", D(2), D(600), D(600)),
        # Bought in EUR at 1.1 USD per EUR: the base-currency cost is at that rate; fees are outside the cost.
        ("SAP", D(10), D(2000), D(2200)),
    ]
    assert after["cash"] == [
        ("EUR", D(998)),  # −(10 × 200 + 2) + 3000
        # 10000 − 3001 + (850 − 1) + (3.75 − 0.50) + 12.40 − 15 − 1000 + 500 − 200
        ("USD", D("7148.65")),
    ]
    # realised 850 − 750; dividends 15 × 0.25; interest; fees 1 + 2 × 1.1 + 1 + 0.5 + 15;
    # net deposits 10000 − 1000 + 900 − 300 + 500 − 200 + 3000 × 1.1
    assert after["totals"] == (D(100), D("3.75"), D("12.4"), D("19.7"), D(13200))
    first, buy = after["transactions"][:2]
    assert first == ("deposit", None, D(10000), D(1), D(0), "USD", D(1), T0 - timedelta(days=3, hours=5, minutes=30), "opening deposit")
    assert buy[7] == T0 - timedelta(days=3, hours=-6)  # 15:30 at UTC−5 is 20:30 UTC
    assert after["transactions"][9][8] == "from my old broker, account 2"


def test_the_example_in_the_docs_imports_to_the_holdings_and_cash_the_docs_state(empty: Portfolio) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "csv-format.md").read_text(encoding="utf-8")
    example = doc.split("```csv\n", 1)[1].split("```", 1)[0]

    import_csv(empty, example)

    after = state(empty)
    assert [(symbol, quantity, cost) for symbol, quantity, cost, _ in after["holdings"]] == [
        ("AAPL", D(30), D(2250)),
        ("MSFT", D(3), D(900)),
        ("SAP", D(10), D(2000)),
    ]
    assert after["holdings"][2][3] == D(2200)
    assert after["cash"] == [("EUR", D(-2002)), ("USD", D("7848.65"))]
    assert (after["totals"][0], after["totals"][3]) == (D(100), D("19.7"))


def test_a_utf8_bom_and_columns_in_any_order_are_accepted(empty: Portfolio) -> None:
    text = "\ufeffquantity,kind,executed_at\n250,deposit,2026-01-02T09:00:00Z\n"

    import_csv(empty, text)

    assert state(empty)["cash"] == [("USD", D(250))]


def test_a_file_is_imported_after_the_existing_ledger_and_checked_against_it(ledger: Portfolio) -> None:
    import_csv(ledger, f"{HEADER}\n2026-01-07T14:30:00Z,sell,AAPL,10,160,1,,,\n")

    after = state(ledger)
    assert after["holdings"] == []
    assert after["cash"] == [("USD", D(5098))]  # 5000 − 1501 + 1600 − 1
    assert after["totals"][0] == D(100)


def test_a_dry_run_writes_nothing_and_shows_the_resulting_holdings_and_cash(ledger: Portfolio) -> None:
    before = state(ledger)

    result = import_csv(
        ledger, f"{HEADER}\n2026-01-07T14:30:00Z,buy,AAPL,5,180,,,,\n2026-01-08T14:30:00Z,dividend,AAPL,15,0.2,,,,\n", dry_run=True
    )

    assert state(ledger) == before
    assert (result.dry_run, result.kind_counts()) == (True, "1 buy, 1 dividend")
    assert result.holdings() == [("AAPL", D(15), D(160))]  # (1500 + 900) / 15
    assert result.cash() == [("USD", D(2602))]  # 3499 − 900 + 3


# --- The command ----------------------------------------------------------------


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_transactions", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_imports_a_file_and_ends_with_a_one_line_summary(empty: Portfolio, tmp_path: Any) -> None:
    path = tmp_path / "ledger.csv"
    path.write_text(EVERY_KIND, encoding="utf-8")

    out, err = run(str(path), "--portfolio", str(empty.pk))

    assert err == ""
    [summary] = out.splitlines()
    assert summary.startswith('import_transactions: 14 rows → 14 transactions in "Bob income" (2 buy, 1 sell, ')
    assert summary.endswith(" s; written")
    assert empty.transactions.count() == 14


def test_the_command_prints_every_problem_with_its_line_and_imports_nothing(ledger: Portfolio, tmp_path: Any) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\n2026-01-07T14:30:00Z,buy,AAPL,abc,150,,,,\n2026-01-07T14:30:00Z,buy,XYZ,1,150,,,,\n", encoding="utf-8")
    before = state(ledger)

    with pytest.raises(CommandError, match=r"^import_transactions: 2 problems in .*bad\.csv; nothing imported$"):
        run(str(path), "--portfolio", str(ledger.pk))

    assert state(ledger) == before


def test_the_command_reports_problems_on_stderr(ledger: Portfolio, tmp_path: Any) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\n2026-01-07T14:30:00Z,sell,AAPL,11,150,,,,\n", encoding="utf-8")
    err = io.StringIO()

    with pytest.raises(CommandError):
        call_command("import_transactions", str(path), portfolio=ledger.pk, stderr=err)

    assert err.getvalue() == "line 2, quantity: Cannot sell 11 AAPL on 2026-01-07 14:30 UTC: only 10 held at that time.\n"


def test_the_command_dry_run_writes_nothing_and_previews_counts_holdings_and_cash(ledger: Portfolio, tmp_path: Any) -> None:
    path = tmp_path / "ledger.csv"
    path.write_text(f"{HEADER}\n2026-01-07T14:30:00Z,buy,MSFT,2,400,,,,\n", encoding="utf-8")
    before = state(ledger)

    out, _ = run(str(path), "--portfolio", str(ledger.pk), "--dry-run")

    assert state(ledger) == before
    lines = out.splitlines()
    assert lines[:4] == [
        "Would import: 1 buy",
        "Holdings after the import:",
        f"  {'AAPL':<12} {'10':>20}  average cost 150",
        f"  {'MSFT':<12} {'2':>20}  average cost 400",
    ]
    assert lines[4:6] == ["Cash after the import:", f"  {'USD':<12} {'2699':>20}"]
    assert lines[-1].startswith('import_transactions: 1 row → 1 transaction in "Alice growth" (1 buy) in ')
    assert lines[-1].endswith(" s; dry run: nothing written")


def test_the_command_reads_standard_input_with_a_dash(empty: Portfolio, monkeypatch: pytest.MonkeyPatch) -> None:
    data = f"\ufeff{HEADER}\n2026-01-02T09:00:00Z,deposit,,250,,,,,\n".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="latin-1"))

    run("-", "--portfolio", str(empty.pk))

    assert state(empty)["cash"] == [("USD", D(250))]


def test_the_command_refuses_an_unknown_portfolio_or_a_missing_file(empty: Portfolio, tmp_path: Any) -> None:
    with pytest.raises(CommandError, match=r"^no portfolio with id 999999$"):
        run(str(tmp_path / "x.csv"), "--portfolio", "999999")
    with pytest.raises(CommandError, match=r"^cannot read .*missing\.csv: No such file or directory$"):
        run(str(tmp_path / "missing.csv"), "--portfolio", str(empty.pk))


def test_ctrl_c_during_the_import_stops_cleanly_with_nothing_written(
    ledger: Portfolio, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.csv"
    path.write_text(f"{HEADER}\n2026-01-07T14:30:00Z,buy,MSFT,2,400,,,,\n", encoding="utf-8")
    before = state(ledger)
    real_rebuild = services.portfolio_rebuild

    def interrupted_rebuild(**kwargs: Any) -> Any:
        real_rebuild(**kwargs)  # the rows are written by now, inside the still-open transaction
        raise KeyboardInterrupt

    monkeypatch.setattr(services, "portfolio_rebuild", interrupted_rebuild)

    with pytest.raises(CommandError, match=r"^import_transactions: interrupted; nothing written$") as exc:
        run(str(path), "--portfolio", str(ledger.pk))

    assert exc.value.returncode == 130
    assert state(ledger) == before


@pytest.mark.timeout(60)
def test_a_10000_row_file_imports(empty: Portfolio, instruments: dict[str, Instrument]) -> None:
    result = import_csv(empty, ledger_csv(10_000))

    assert (result.rows, empty.transactions.count()) == (10_000, 10_000)
    assert result.kind_counts() == "8899 buy, 1000 sell, 100 dividend, 1 deposit"
    # AAPL: 4499 buys of 2, 500 sells of 1; MSFT: 4400 buys of 2 (its blocks hold the dividends), 500 sells of 1.
    assert sorted(empty.holdings.values_list("instrument__symbol", "quantity")) == [("AAPL", D(8498)), ("MSFT", D(8300))]


# --- The admin page ---------------------------------------------------------------


def import_url(portfolio: Portfolio) -> str:
    return f"/admin/portfolio/portfolio/{portfolio.pk}/import/"


def upload(text: str | bytes, name: str = "ledger.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode() if isinstance(text, str) else text, content_type="text/csv")


@pytest.fixture
def staff_client(client: Client, django_user_model: Any) -> Client:
    """A staff member allowed to view and change portfolios, and nothing more."""
    user = django_user_model.objects.create_user("dora", password="dora-pass-123", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_portfolio", "change_portfolio"]))
    client.force_login(user)
    return client


def test_the_admin_import_page_lists_every_problem_with_its_line_and_imports_nothing(staff_client: Client, ledger: Portfolio) -> None:
    before = state(ledger)
    text = f"{HEADER}\n2026-01-07T14:30:00Z,buy,AAPL,abc,150,,,,\n2026-01-07T14:30:00Z,buy,XYZ,1,150,,,,\n"

    response = staff_client.post(import_url(ledger), {"file": upload(text), "dry_run": ""})

    assert response.status_code == 200
    assert response.context["problems"] == ["line 2, quantity: 'abc' is not a number", "line 3, symbol: unknown instrument 'XYZ'"]
    html = response.content.decode()
    assert "2 problems found; nothing was imported." in html
    assert "<li>line 2, quantity: &#x27;abc&#x27; is not a number</li>" in html
    assert state(ledger) == before


def test_the_admin_import_page_previews_a_dry_run_without_writing(staff_client: Client, ledger: Portfolio) -> None:
    before = state(ledger)
    text = f"{HEADER}\n2026-01-07T14:30:00Z,buy,MSFT,2,400,,,,\n"

    response = staff_client.post(import_url(ledger), {"file": upload(text), "dry_run": "on"})

    assert response.status_code == 200
    preview = response.context["preview"]
    assert (preview.summary(), preview.holdings(), preview.cash()) == (
        '1 row → 1 transaction in "Alice growth" (1 buy)',
        [("AAPL", D(10), D(150)), ("MSFT", D(2), D(400))],
        [("USD", D(2699))],
    )
    html = response.content.decode()
    assert "Dry run: nothing written" in html
    assert "<tr><td>MSFT</td><td>2</td><td>400</td></tr>" in html
    assert "<tr><td>USD</td><td>2699</td></tr>" in html
    assert state(ledger) == before


def test_the_admin_import_page_imports_a_sound_file_and_returns_to_the_portfolio(staff_client: Client, empty: Portfolio) -> None:
    response = staff_client.post(import_url(empty), {"file": upload(EVERY_KIND)}, follow=True)

    assert response.redirect_chain == [(f"/admin/portfolio/portfolio/{empty.pk}/change/", 302)]
    [message] = [str(m) for m in response.context["messages"]]
    assert message.startswith('Imported 14 rows → 14 transactions in "Bob income" (2 buy, 1 sell, ')
    assert empty.transactions.count() == 14
    assert state(empty)["cash"] == [("EUR", D(998)), ("USD", D("7148.65"))]


def test_the_admin_import_page_refuses_a_file_over_the_size_limit(staff_client: Client, ledger: Portfolio, settings: Any) -> None:
    settings.PORTFOLIO_IMPORT_MAX_BYTES = 1024 * 1024
    before = state(ledger)

    response = staff_client.post(import_url(ledger), {"file": upload(b"x" * (1024 * 1024 + 1))})

    assert response.context["form"].errors == {
        "file": ["The file is 1.0 MB; the limit is 1 MB. Split it, or import it with manage.py import_transactions."]
    }
    assert state(ledger) == before


def test_the_admin_import_page_refuses_a_file_that_is_not_utf8(staff_client: Client, ledger: Portfolio) -> None:
    response = staff_client.post(
        import_url(ledger), {"file": upload(f"{HEADER}\n2026-01-07T14:30:00Z,deposit,,1,,,,,caf\xe9\n".encode("latin-1"))}
    )

    assert response.context["form"].errors == {"file": ["The file is not UTF-8 text: save it as “CSV UTF-8”."]}
    assert not ledger.transactions.filter(kind="deposit", quantity=1).exists()


def test_the_admin_import_page_needs_a_csrf_token(ledger: Portfolio, admin_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    response = client.post(import_url(ledger), {"file": upload(f"{HEADER}\n2026-01-07T14:30:00Z,deposit,,1,,,,,\n")})

    assert response.status_code == 403
    assert ledger.transactions.count() == 2


def test_staff_without_change_permission_cannot_import(client: Client, django_user_model: Any, ledger: Portfolio) -> None:
    viewer = django_user_model.objects.create_user("vic", password="vic-pass-123", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_portfolio"))
    client.force_login(viewer)

    assert client.get(import_url(ledger)).status_code == 403
    assert client.post(import_url(ledger), {"file": upload(f"{HEADER}\n2026-01-07T14:30:00Z,deposit,,1,,,,,\n")}).status_code == 403
    assert ledger.transactions.count() == 2
    assert client.get(f"/admin/portfolio/portfolio/{ledger.pk}/export/").status_code == 200  # viewing is enough to export


def test_a_non_staff_user_is_sent_to_the_admin_login(client: Client, alice: Any, ledger: Portfolio) -> None:
    client.force_login(alice)

    for url in [import_url(ledger), f"/admin/portfolio/portfolio/{ledger.pk}/export/"]:
        response = client.post(url, {"file": upload(f"{HEADER}\n2026-01-07T14:30:00Z,deposit,,1,,,,,\n")})
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/?next=/admin/portfolio/portfolio/"), url
    assert ledger.transactions.count() == 2


def test_the_portfolio_page_links_to_import_and_export_and_the_export_downloads_the_ledger(admin_client: Client, ledger: Portfolio) -> None:
    page = admin_client.get(f"/admin/portfolio/portfolio/{ledger.pk}/change/").content.decode()
    assert f'<a href="{import_url(ledger)}">Import transactions (CSV)</a>' in page
    export_url = f"/admin/portfolio/portfolio/{ledger.pk}/export/"
    assert f'<a href="{export_url}">Export CSV</a>' in page

    form = admin_client.get(import_url(ledger))
    assert form.status_code == 200
    assert '<div class="breadcrumbs">' in form.content.decode()
    assert f'<a href="/admin/portfolio/portfolio/{ledger.pk}/change/">Alice growth</a>' in form.content.decode()

    download = admin_client.get(export_url)
    assert download["Content-Type"] == "text/csv; charset=utf-8"
    assert download["Content-Disposition"] == 'attachment; filename="alice-growth-transactions.csv"'
    assert download.content.decode() == (f"{HEADER}\n2026-01-04T14:30:00Z,deposit,,5000,,,,,\n2026-01-05T14:30:00Z,buy,AAPL,10,150,1,,,\n")


# --- Streaming: memory does not grow with the file --------------------------------


@pytest.mark.timeout(120)
def test_a_100000_row_dry_run_holds_a_bounded_amount_of_memory(empty: Portfolio, monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs of 2,000 rows spill to disk, so what is held is a few runs, not the file: the whole import of 100,000 rows
    # allocates at most 8 MB at its peak (traced by Python's own allocator, so the figure does not depend on the machine).
    # Reading the whole file, as the import did before, held about 1.3 KB per row: 130 MB here.
    monkeypatch.setattr(services, "_RUN", 1000, raising=False)  # not there before streaming
    lines = ledger_lines(30_000)
    tracemalloc.start()
    try:
        result = csvio.csv_import(portfolio=empty, lines=lines, dry_run=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    print(f"FIGURE 30,000-row dry run: traced peak {peak / 2**20:.1f} MB")
    assert result.rows == 30_000
    # The same figures as the import before streaming gave for this file.
    assert result.holdings() == [("AAPL", D(25498), D("103.2494095468")), ("MSFT", D(24900), D("103.2508206400"))]
    assert result.cash() == [("USD", D("24788451.5"))]
    assert peak < 8 * 2**20


def test_rows_out_of_time_order_spilled_in_runs_are_checked_in_execution_order_like_one_sort(
    ledger: Portfolio, empty: Portfolio, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs of 3 rows: the file's 10 rows spill to 3 temporary files plus one in memory, and are merged back with the
    # existing ledger. Rows at one time keep their file order, after the existing entry at that time (T0, the AAPL buy).
    monkeypatch.setattr(services, "_RUN", 3)
    text = f"""{HEADER}
2026-01-09T10:00:00Z,sell,AAPL,4,170,,,,
2026-01-03T10:00:00Z,deposit,,100,,,,,
2026-01-05T14:30:00Z,buy,AAPL,1,150,,,,at T0: after the existing buy
2026-01-05T14:30:00Z,sell,AAPL,11,160,,,,sells what the two buys hold
2026-01-08T10:00:00Z,buy,AAPL,5,180,,,,
2026-01-02T10:00:00Z,deposit,,50,,,,,
2026-01-09T10:00:00Z,sell,AAPL,1,170,,,,
2026-01-07T10:00:00Z,buy,MSFT,2,400,,,,
2026-01-05T14:30:00Z,buy,AAPL,3,140,,,,
2026-01-06T10:00:00Z,dividend,AAPL,3,,,,,
"""

    result = import_csv(ledger, text)

    assert result.rows == 10
    # At T0 the existing 10 and line 4's 1 are sold (line 5), then line 10 buys 3 at 140; with line 6's 5 at 180,
    # 8 cost 1320; lines 2 and 8 sell 5 at average cost: 3 left at 1320 × 3 / 8. (Line 10 before the sell: 443.57...)
    assert state(ledger)["holdings"] == [("AAPL", D(3), D(495), D(495)), ("MSFT", D(2), D(800), D(800))]
    # 5000 − 1501 + 100 + 50 − 150 + 1760 − 420 + 3 − 800 − 900 + 850
    assert state(ledger)["cash"] == [("USD", D(3992))]


def test_a_sell_that_only_an_out_of_order_row_makes_possible_is_checked_at_its_time(
    ledger: Portfolio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "_RUN", 2)
    before = state(ledger)
    text = f"{HEADER}\n2026-01-08T10:00:00Z,buy,MSFT,1,400,,,,\n2026-01-09T10:00:00Z,deposit,,1,,,,,\n2026-01-07T10:00:00Z,sell,MSFT,1,400,,,,\n"

    assert problems(ledger, text) == ["line 4, quantity: Cannot sell 1 MSFT on 2026-01-07 10:00 UTC: only 0 held at that time."]
    assert state(ledger) == before


def test_a_file_with_thousands_of_bad_rows_lists_the_first_500_problems_and_counts_them_all(ledger: Portfolio) -> None:
    bad = "".join(f"2026-01-07T14:30:00Z,buy,XYZ,{i},150,,,,\n2026-01-07T14:30:00Z,buy,AAPL,x{i},150,,,,\n" for i in range(1500))
    before = state(ledger)

    with pytest.raises(LedgerProblems) as exc:
        import_csv(ledger, f"{HEADER}\n{bad}2026-01-07T14:30:00Z,buy,QQQ,1,150,,,,\n")

    listed = [csvio.describe(p) for p in exc.value.problems]
    assert (len(listed), exc.value.total) == (csvio.MAX_PROBLEMS, 3001)
    # The count of rows with an unknown symbol covers the whole file, not just the listed part.
    assert listed[:3] == [
        "line 2, symbol: unknown instrument 'XYZ' (on 1500 rows)",
        "line 3, quantity: 'x0' is not a number",
        "line 4, symbol: unknown instrument 'XYZ' (on 1500 rows)",
    ]
    assert listed[-1] == "line 501, quantity: 'x249' is not a number"
    assert state(ledger) == before


def test_an_admin_upload_spooled_to_disk_is_imported_line_by_line(staff_client: Client, empty: Portfolio, settings: Any) -> None:
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 100  # every upload here goes to a temporary file, as a big one would

    response = staff_client.post(import_url(empty), {"file": upload("\ufeff" + EVERY_KIND)}, follow=True)

    assert response.redirect_chain == [(f"/admin/portfolio/portfolio/{empty.pk}/change/", 302)]
    assert empty.transactions.count() == 14
    assert state(empty)["cash"] == [("EUR", D(998)), ("USD", D("7148.65"))]


def test_an_admin_upload_spooled_to_disk_that_is_not_utf8_is_refused(staff_client: Client, ledger: Portfolio, settings: Any) -> None:
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 100
    text = f"{HEADER}\n" + "2026-01-07T14:30:00Z,deposit,,1,,,,,cafe\n" * 5000 + "2026-01-07T14:30:00Z,deposit,,1,,,,,caf\xe9\n"

    response = staff_client.post(import_url(ledger), {"file": upload(text.encode("latin-1"))})

    assert response.context["form"].errors == {"file": ["The file is not UTF-8 text: save it as “CSV UTF-8”."]}
    assert ledger.transactions.count() == 2


def test_the_admin_import_page_lists_the_first_problems_and_counts_the_rest(staff_client: Client, ledger: Portfolio) -> None:
    text = f"{HEADER}\n" + "2026-01-07T14:30:00Z,buy,AAPL,abc,150,,,,\n" * 600

    response = staff_client.post(import_url(ledger), {"file": upload(text), "dry_run": "on"})

    html = response.content.decode()
    assert "600 problems found; nothing was imported." in html
    assert html.count("is not a number</li>") == csvio.MAX_PROBLEMS
    assert "… and 100 more problems, not listed: fix these first." in html
    assert ledger.transactions.count() == 2


def test_the_command_lists_the_first_problems_and_counts_them_all(ledger: Portfolio, tmp_path: Any) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\n" + "2026-01-07T14:30:00Z,buy,AAPL,abc,150,,,,\n" * 501, encoding="utf-8")
    err = io.StringIO()

    with pytest.raises(CommandError, match=r"^import_transactions: 501 problems in .*bad\.csv; nothing imported$"):
        call_command("import_transactions", str(path), portfolio=ledger.pk, stderr=err)

    lines = err.getvalue().splitlines()
    assert len(lines) == csvio.MAX_PROBLEMS + 1
    assert lines[-2:] == ["line 501, quantity: 'abc' is not a number", "... and 1 more problem (the first 500 are listed)"]


def test_a_real_import_with_debug_on_keeps_no_log_of_its_inserts(empty: Portfolio, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # DEBUG keeps the SQL of the last 9,000 queries: a million rows' INSERTs were over 100 MB of it.
    settings.DEBUG = True
    monkeypatch.setattr(services, "_WRITE_BATCH", 100)
    connection.queries_log.clear()

    result = import_csv(empty, ledger_csv(5_000))

    assert (result.rows, empty.transactions.count()) == (5_000, 5_000)
    inserts = [q for q in connection.queries if q["sql"].startswith('INSERT INTO "portfolio_transaction"')]
    assert len(inserts) <= 1  # at most the last, short batch


def test_a_bad_date_and_an_oversell_are_reported_in_one_pass_by_line(ledger: Portfolio) -> None:
    # Issue 14: format problems used to hide the ledger's; the oversell showed only once the date was fixed.
    text = f"""{HEADER}
2026-01-06T10:00:00Z,deposit,,100,,,,,
2026-13-45T10:00:00Z,buy,AAPL,1,150,,,,
2026-01-06T11:00:00Z,buy,MSFT,2,300,,,,

2026-01-06T12:00:00Z,fee,,1,,,,,
2026-01-06T13:00:00Z,sell,AAPL,25,160,,,,
"""
    before = state(ledger)
    with pytest.raises(LedgerProblems) as exc:
        csvio.csv_import(portfolio=ledger, lines=io.StringIO(text, newline=""))
    assert [csvio.describe(p) for p in exc.value.problems] == [
        "line 3, executed_at: '2026-13-45T10:00:00Z' is not an ISO 8601 time such as 2025-03-14T15:30:00Z",
        "line 7, quantity: Cannot sell 25 AAPL on 2026-01-06 13:00 UTC: only 10 held at that time, "
        "checked without the rows that have problems (fixing them may change this).",
    ]
    assert exc.value.total == 2
    assert state(ledger) == before


@pytest.mark.timeout(120)
def test_checking_a_30000_row_file_with_a_bad_row_holds_a_bounded_amount_of_memory_and_still_folds(
    empty: Portfolio, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a problem the rows are still folded (to list ledger problems in the same pass): they spill like a sound file's.
    monkeypatch.setattr(services, "_RUN", 1000)

    def with_a_bad_row() -> Any:
        for number, line in enumerate(ledger_lines(30_000), start=1):
            yield line.replace("2025-01-01", "2025-13-01", 1) if number == 3 else line
        yield "2025-02-01T00:00:00Z,sell,AAPL,1000000,1,,,,more than held\n"  # line 30,002

    tracemalloc.start()
    try:
        with pytest.raises(LedgerProblems) as exc:
            csvio.csv_import(portfolio=empty, lines=with_a_bad_row(), dry_run=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    print(f"FIGURE 30,000-row check with a bad row: traced peak {peak / 2**20:.1f} MB")
    assert [(p.ref, p.field) for p in exc.value.problems] == [(3, "executed_at"), (30_002, "quantity")]
    assert peak < 8 * 2**20
