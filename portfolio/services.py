"""Writes to portfolios. Every ledger change goes through here.

A change is first described as `Draft`s and checked (`drafts_check`): each
draft's own fields, then the whole ledger with the drafts folded in, in
execution order, so a back-dated entry is checked against what was held then.
Writers (`transaction_record`, `transfer_record`, `transactions_import`,
`transaction_delete`) re-check under a lock on the portfolio row, write, rebuild
the derived rows (holdings, cash, totals) in the same database transaction, and
tell the owner's live connections after commit.
"""

from __future__ import annotations

import heapq
import pickle
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import IO, Any

import pycountry
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import connection as db_connection
from django.db import transaction as db_transaction
from django.db.models import Max
from django.utils import timezone

from marketdata.delivery import streams
from marketdata.events import to_epoch_ms
from marketdata.groups import ALERT_FIRED_EVENT, PORTFOLIO_RELOAD_EVENT
from marketdata.models import Instrument
from portfolio.ledger import NEEDS_INSTRUMENT, ONE, ZERO, Book, Entry, LedgerError, book_from_ledger, plain
from portfolio.models import (
    PORTFOLIO_ALERT_KINDS,
    Alert,
    AlertKind,
    CashBalance,
    Holding,
    Kind,
    Notification,
    Portfolio,
    Transaction,
    WatchlistItem,
)
from portfolio.performance import daily_values_rebuild_on_commit

# Clocks disagree a little; a trade stamped a minute ahead is still "now".
_FUTURE_TOLERANCE = timedelta(minutes=1)
_PLACES = Decimal("1e-10")  # decimal_field's places
_KINDS = frozenset(Kind.values)
_CASH_ONLY = frozenset({Kind.DEPOSIT, Kind.WITHDRAWAL})
_SHARES = frozenset({Kind.BUY, Kind.SELL, Kind.SPLIT, Kind.TRANSFER_IN, Kind.TRANSFER_OUT})


@dataclass(frozen=True)
class Draft:
    """A ledger entry not yet written. `fx_rate=None` means "not given"."""

    kind: str
    executed_at: datetime
    quantity: Decimal
    instrument: Instrument | None = None
    currency: str = ""  # default: the instrument's currency, else the portfolio's base currency
    price: Decimal = ONE
    fee: Decimal = ZERO
    fx_rate: Decimal | None = None
    note: str = ""
    ref: object = None  # where it came from (a CSV line number), echoed in problems


@dataclass(frozen=True)
class Problem:
    ref: object
    field: str
    message: str


class LedgerProblems(ValidationError):
    def __init__(self, problems: list[Problem], *, total: int | None = None) -> None:
        super().__init__([p.message for p in problems])
        self.problems = problems
        self.total = len(problems) if total is None else total  # more than listed when a long list was cut


class ProblemLog:
    """Problems as a stream finds them: the first `limit` kept in order, every one counted.

    A file with a million bad rows must not hold a million messages; `order`
    sorts each row's own problems (e.g. by column) before they are kept.
    """

    def __init__(self, *, limit: int, order: Callable[[Problem], tuple[int, int]] | None = None) -> None:
        self.limit, self.order = limit, order
        self.kept: list[Problem] = []
        self.total = 0

    def add(self, found: Sequence[Problem]) -> range:
        """Record one row's problems; returns the indexes in `kept` of those kept."""
        start = len(self.kept)
        self.total += len(found)
        room = max(0, self.limit - start)
        self.kept.extend(sorted(found, key=self.order)[:room] if self.order else found[:room])
        return range(start, len(self.kept))

    def error(self) -> LedgerProblems:
        return LedgerProblems(self.kept, total=self.total)


@cache
def _iso_currencies() -> frozenset[str]:
    return frozenset(c.alpha_3 for c in pycountry.currencies)


def known_currencies() -> frozenset[str]:
    """ISO 4217 codes, plus any currency an instrument is quoted in."""
    return _iso_currencies() | set(Instrument.objects.values_list("quote_currency", flat=True).distinct())


def _stored(value: Decimal) -> Decimal:
    """The value as the database will keep it (ten places), so what is checked is what a rebuild will read."""
    return value.quantize(_PLACES) if value.is_finite() else value


def _complete(draft: Draft, *, portfolio: Portfolio) -> Draft:
    """Fill the defaults that depend on the portfolio and the instrument."""
    currency = draft.currency or (draft.instrument.quote_currency if draft.instrument else portfolio.base_currency)
    fx_rate = draft.fx_rate
    if fx_rate is None and currency == portfolio.base_currency:
        fx_rate = ONE
    return replace(
        draft,
        currency=currency,
        quantity=_stored(draft.quantity),
        price=_stored(draft.price),
        fee=_stored(draft.fee),
        fx_rate=None if fx_rate is None else _stored(fx_rate),
    )


def draft_problems(
    draft: Draft, *, portfolio: Portfolio, currencies: frozenset[str] | set[str], now: datetime | None = None
) -> list[Problem]:
    """Everything wrong with one (completed) draft on its own; `now` (default: the clock) bounds its execution time."""
    found: list[Problem] = []

    def problem(field: str, message: str) -> None:
        found.append(Problem(draft.ref, field, message))

    instrument, kind = draft.instrument, draft.kind
    if kind not in _KINDS:
        problem("kind", f"Unknown kind {kind!r}: use one of {', '.join(Kind.values)}.")
    elif kind in NEEDS_INSTRUMENT and instrument is None:
        problem("instrument", f"A {kind} needs an instrument.")
    elif kind in _CASH_ONLY and instrument is not None:
        problem("instrument", f"A {kind} moves cash only: leave the instrument empty.")
    if draft.currency not in currencies:
        problem("currency", f"Unknown currency {draft.currency!r}: use an ISO 4217 code such as USD.")
    elif instrument is not None and kind in _SHARES and draft.currency != instrument.quote_currency:
        problem("currency", f"{instrument.symbol} trades in {instrument.quote_currency}, so its {kind} is in {instrument.quote_currency}.")
    if instrument is not None and not instrument.is_active and kind in (Kind.BUY, Kind.TRANSFER_IN):
        problem("instrument", f"{instrument.symbol} is inactive: it takes no new buys.")
    if not draft.quantity.is_finite() or draft.quantity <= 0:
        what = "Split ratio" if kind == Kind.SPLIT else "Quantity"
        problem("quantity", f"{what} must be greater than zero, not {plain(draft.quantity)}.")
    if not draft.price.is_finite() or draft.price < 0:
        problem("price", "Price must not be negative.")
    if not draft.fee.is_finite() or draft.fee < 0:
        problem("fee", "Fee must not be negative.")
    if draft.fx_rate is None:
        problem(
            "fx_rate",
            f"The portfolio is in {portfolio.base_currency}: give the {draft.currency}→{portfolio.base_currency} rate at execution.",
        )
    elif not draft.fx_rate.is_finite() or draft.fx_rate <= 0:
        problem("fx_rate", "FX rate must be greater than zero.")
    elif draft.currency == portfolio.base_currency and draft.fx_rate != ONE:
        problem("fx_rate", f"{draft.currency} is the base currency: its FX rate is 1.")
    if timezone.is_naive(draft.executed_at):
        problem("executed_at", "Execution time must carry a timezone.")
    elif draft.executed_at > (now or timezone.now()) + _FUTURE_TOLERANCE:
        problem("executed_at", "Execution time is in the future.")
    return found


def drafts_problems(*, portfolio: Portfolio, drafts: Sequence[Draft]) -> tuple[list[Draft], list[Problem]]:
    """Complete each draft with its defaults and list everything wrong with each on its own (no ledger fold)."""
    currencies = known_currencies()
    completed = [_complete(d, portfolio=portfolio) for d in drafts]
    return completed, [p for d in completed for p in draft_problems(d, portfolio=portfolio, currencies=currencies)]


def _entry(draft: Draft) -> Entry:
    return Entry(
        kind=draft.kind,
        executed_at=draft.executed_at,
        currency=draft.currency,
        symbol=draft.instrument.symbol if draft.instrument else "",
        quantity=draft.quantity,
        price=draft.price,
        fee=draft.fee,
        fx_rate=draft.fx_rate or ONE,
        ref=draft.ref,
    )


def _ledger(portfolio: Portfolio, *, exclude: Iterable[int] = ()) -> list[Entry]:
    rows = (
        Transaction.objects.filter(portfolio=portfolio)
        .exclude(pk__in=list(exclude))
        .order_by("executed_at", "id")
        .values_list("kind", "executed_at", "currency", "instrument__symbol", "quantity", "price", "fee", "fx_rate", "id")
    )
    return [Entry(k, at, ccy, sym or "", q, p, f, fx, ref=pk) for k, at, ccy, sym, q, p, f, fx, pk in rows]


def _fold(portfolio: Portfolio, entries: Iterable[Entry]) -> Book:
    try:
        return book_from_ledger(entries, allow_negative_cash=portfolio.allow_negative_cash)
    except LedgerError as exc:
        raise LedgerProblems([Problem(exc.ref, "quantity", str(exc))]) from None


def drafts_check(*, portfolio: Portfolio, drafts: Sequence[Draft]) -> tuple[list[Draft], Book]:
    """Complete and validate drafts against the portfolio's ledger; raises LedgerProblems listing every problem found.

    Row problems are all collected first; the ledger is folded only when every
    row is sound, and stops at its first break (later ones may depend on it).
    """
    completed, problems = drafts_problems(portfolio=portfolio, drafts=drafts)
    if problems:
        raise LedgerProblems(problems)
    # Stable sort: a new entry at the same time as an existing one comes after it, as its id would.
    entries = sorted([*_ledger(portfolio), *map(_entry, completed)], key=lambda e: e.executed_at)
    return completed, _fold(portfolio, entries)


def _as_field_errors(exc: LedgerProblems) -> ValidationError:
    errors: dict[str, list[str]] = {}
    for problem in exc.problems:
        errors.setdefault(problem.field, []).append(problem.message)
    return ValidationError(errors)


def transaction_check(*, portfolio: Portfolio, draft: Draft) -> Book:
    """Validate one new entry; returns the resulting book or raises ValidationError by field."""
    try:
        return drafts_check(portfolio=portfolio, drafts=[draft])[1]
    except LedgerProblems as exc:
        raise _as_field_errors(exc) from None


def _lock(*portfolios: Portfolio) -> list[Portfolio]:
    # Serialise ledger writes per portfolio (in id order, so two transfers cannot deadlock).
    locked = {p.pk: p for p in Portfolio.objects.select_for_update().filter(pk__in=[p.pk for p in portfolios]).order_by("pk")}
    return [locked[p.pk] for p in portfolios]


def _row(portfolio: Portfolio, draft: Draft) -> Transaction:
    return Transaction(
        portfolio=portfolio,
        kind=draft.kind,
        instrument=draft.instrument,
        quantity=draft.quantity,
        price=draft.price,
        fee=draft.fee,
        currency=draft.currency,
        fx_rate=draft.fx_rate or ONE,
        executed_at=draft.executed_at,
        note=draft.note,
    )


def transaction_record(*, portfolio: Portfolio, draft: Draft) -> Transaction:
    """Record one entry; raises ValidationError by field."""
    with db_transaction.atomic():
        (portfolio,) = _lock(portfolio)
        try:
            (draft,), book = drafts_check(portfolio=portfolio, drafts=[draft])
        except LedgerProblems as exc:
            raise _as_field_errors(exc) from None
        entry = _row(portfolio, draft)
        entry.save()
        portfolio_rebuild(portfolio=portfolio, book=book)
    return entry


@dataclass(frozen=True)
class ImportResult:
    created: int
    dry_run: bool
    book: Book


def transactions_import(*, portfolio: Portfolio, drafts: Sequence[Draft], dry_run: bool = False) -> ImportResult:
    """All or nothing: every draft is checked first; raises LedgerProblems (refs are the drafts') when any is wrong."""
    with db_transaction.atomic():
        (portfolio,) = _lock(portfolio)
        completed, book = drafts_check(portfolio=portfolio, drafts=drafts)
        if not dry_run:
            Transaction.objects.bulk_create([_row(portfolio, d) for d in completed], batch_size=1000)
            portfolio_rebuild(portfolio=portfolio, book=book)
    return ImportResult(created=len(completed), dry_run=dry_run, book=book)


# --- Importing a stream of drafts with bounded memory -----------------------------

_RUN = 20_000  # entries sorted in memory before they spill, sorted, to a temporary file
_SPILL_CHUNK = 256  # entries per pickle in a spilled run: what a merge holds per run
_WRITE_BATCH = 1000  # rows per INSERT


def _at(entry: Entry) -> datetime:
    return entry.executed_at


class _Runs:
    """Entries in file order in, entries in execution order out, holding at most `_RUN` of them in memory.

    Each full run is sorted (stably) and spilled to an anonymous temporary file;
    `merged` merges the runs lazily. `heapq.merge` puts equal keys from earlier
    iterables first, so at one time the existing ledger comes before the file,
    and the file's rows keep their order: the same order as one stable sort.
    """

    def __init__(self, files: ExitStack) -> None:
        self.files = files
        self.spilled: list[IO[bytes]] = []
        self.run: list[Entry] = []

    def add(self, entry: Entry) -> None:
        self.run.append(entry)
        if len(self.run) >= _RUN:
            self.run.sort(key=_at)
            file = self.files.enter_context(tempfile.TemporaryFile())
            for i in range(0, len(self.run), _SPILL_CHUNK):
                # Plain tuples: a dataclass pickles through its fields one by one, several times slower.
                chunk = [
                    (e.kind, e.executed_at, e.currency, e.symbol, e.quantity, e.price, e.fee, e.fx_rate, e.ref)
                    for e in self.run[i : i + _SPILL_CHUNK]
                ]
                pickle.dump(chunk, file, protocol=pickle.HIGHEST_PROTOCOL)
            file.seek(0)
            self.spilled.append(file)
            self.run = []

    def merged(self, ledger: Iterable[Entry]) -> Iterator[Entry]:
        self.run.sort(key=_at)
        return heapq.merge(ledger, *map(self._read, self.spilled), self.run, key=_at)

    @staticmethod
    def _read(file: IO[bytes]) -> Iterator[Entry]:
        while True:
            try:
                chunk: list[tuple[Any, ...]] = pickle.load(file)  # noqa: S301 - our own file, written just above
            except EOFError:
                return
            for fields in chunk:
                yield Entry(*fields)


def _ledger_stream(portfolio: Portfolio, *, last_pk: int | None) -> Generator[Entry, None, None]:
    """The portfolio's ledger in execution order, read in chunks; only rows up to `last_pk` (None: none at all)."""
    if last_pk is None:
        return
    rows = (
        Transaction.objects.filter(portfolio=portfolio, pk__lte=last_pk)
        .order_by("executed_at", "id")
        .values_list("kind", "executed_at", "currency", "instrument__symbol", "quantity", "price", "fee", "fx_rate", "id")
        .iterator(chunk_size=2000)
    )
    try:
        for k, at, ccy, sym, q, p, f, fx, pk in rows:
            yield Entry(k, at, ccy, sym or "", q, p, f, fx, ref=pk)
    finally:
        # A fold that stops at a break leaves the rest unread: close PostgreSQL's server-side cursor now, inside the
        # transaction, not whenever the garbage collector gets to it (by then the cursor is gone: the next query fails).
        rows.close()  # type: ignore[attr-defined]


def _last_pk(portfolio: Portfolio) -> int | None:
    last: int | None = Transaction.objects.filter(portfolio=portfolio).aggregate(last=Max("pk"))["last"]
    return last


def transactions_import_stream(
    *, portfolio: Portfolio, drafts: Iterable[Draft], problems: ProblemLog, dry_run: bool = False
) -> ImportResult:
    """`transactions_import` for a stream of drafts of any length, in bounded memory; all or nothing.

    Each draft is completed and checked on its own as it comes, its problems
    going to `problems` (which the caller's parser may feed too). While none
    has been found, a real import writes rows in batches inside the one
    database transaction (the portfolio locked throughout, so nothing else
    changes its ledger). At the end the whole ledger (existing rows and the
    stream's, in execution order) is folded once, stopping at its first break;
    any problem raises LedgerProblems and rolls every row back.

    The fold runs even when rows had problems, over the rows without any, so
    that one pass lists format and ledger problems together (in `ref` order):
    a break found so says that it was checked without the rows with problems
    (a missing buy reads as an oversell later on).
    """
    with db_transaction.atomic(), ExitStack() as files:
        if not dry_run:
            (portfolio,) = _lock(portfolio)
            # Rows written below get higher ids (SQLite AUTOINCREMENT, PostgreSQL sequences): the existing ledger ends here.
            last_pk = _last_pk(portfolio)
        currencies = known_currencies()
        # One clock reading for the whole file ("in the future" = after the import began): read per row, with the
        # settings lookup inside it, it took ~5% of a 10 MB dry run's CPU (py-spy).
        now = timezone.now()
        runs, batch, created = _Runs(files), list[Transaction](), 0
        for draft in drafts:
            completed = _complete(draft, portfolio=portfolio)
            if found := draft_problems(completed, portfolio=portfolio, currencies=currencies, now=now):
                problems.add(found)
                continue  # left out of the fold: its own problems are listed
            runs.add(_entry(completed))  # spills to disk past _RUN rows, so checking a bad file stays bounded too
            if problems.total:
                continue  # from the first problem on, nothing is written: rows are only checked, to list every problem
            created += 1
            if not dry_run:
                batch.append(_row(portfolio, completed))
                if len(batch) >= _WRITE_BATCH:
                    Transaction.objects.bulk_create(batch)
                    batch.clear()
                    # With DEBUG on, Django keeps the last 9,000 queries' SQL: 9,000 INSERTs of 1,000 rows would be ~1 GB.
                    db_connection.queries_log.clear()
        if batch and not problems.total:
            Transaction.objects.bulk_create(batch)
        if dry_run:  # nothing written: the lock is needed only while the ledger is read
            (portfolio,) = _lock(portfolio)
            last_pk = _last_pk(portfolio)
        ledger = files.enter_context(closing(_ledger_stream(portfolio, last_pk=last_pk)))
        if problems.total:
            raise _with_ledger_break(problems.error(), portfolio, runs.merged(ledger), problems.limit)
        book = _fold(portfolio, runs.merged(ledger))
        if not dry_run:
            portfolio_rebuild(portfolio=portfolio, book=book)
    return ImportResult(created=created, dry_run=dry_run, book=book)


def _without_bad_rows(message: str) -> str:
    return f"{message.removesuffix('.')}, checked without the rows that have problems (fixing them may change this)."


def _with_ledger_break(error: LedgerProblems, portfolio: Portfolio, entries: Iterable[Entry], limit: int) -> LedgerProblems:
    """`error` (the rows' own problems) plus the ledger's first break among the rows without any, in `ref` order."""
    try:
        _fold(portfolio, entries)
    except LedgerProblems as exc:
        found = [Problem(p.ref, p.field, _without_bad_rows(p.message)) for p in exc.problems]
        merged = sorted([*error.problems, *found], key=lambda p: p.ref if isinstance(p.ref, int) else 0)  # stable: a row's own first
        return LedgerProblems(merged[:limit], total=error.total + len(found))
    return error


def transfer_record(
    *,
    source: Portfolio,
    destination: Portfolio,
    executed_at: datetime,
    quantity: Decimal,
    instrument: Instrument | None = None,
    currency: str = "",
    source_fx_rate: Decimal | None = None,
    destination_fx_rate: Decimal | None = None,
    note: str = "",
) -> tuple[Transaction, Transaction]:
    """Move cash (`quantity` units of `currency`) or shares of `instrument` between two portfolios of one owner.

    Shares leave at their average cost at that time and arrive at the same
    cost, so a transfer realises nothing. Between portfolios with the same base
    currency the base-currency cost carries over too; otherwise the
    destination's FX rate prices it.
    """
    if source.owner_id != destination.owner_id:
        raise ValidationError("Transfers are only between portfolios of the same owner.")
    if source.pk == destination.pk:
        raise ValidationError("A transfer needs two different portfolios.")
    with db_transaction.atomic():
        source, destination = _lock(source, destination)
        price, out_fx, in_fx = ONE, source_fx_rate, destination_fx_rate
        currency = currency or source.base_currency
        if instrument is not None:
            currency = instrument.quote_currency
            held = _fold(source, [e for e in _ledger(source) if e.executed_at <= executed_at]).positions.get(instrument.symbol)
            if held is None or not held.quantity:
                when = f"{executed_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
                raise ValidationError({"quantity": f"{source.name} holds no {instrument.symbol} on {when}."})
            price = held.cost / held.quantity
            # The rate at which the shares' base-currency cost was paid, averaged: it carries that cost across.
            effective = held.cost_base / held.cost if held.cost else ONE
            if currency != source.base_currency:
                out_fx = effective
            if currency != destination.base_currency and destination.base_currency == source.base_currency:
                in_fx = effective
        out = Draft(Kind.TRANSFER_OUT, executed_at, quantity, instrument, currency, price, fx_rate=out_fx, note=note)
        inbound = Draft(Kind.TRANSFER_IN, executed_at, quantity, instrument, currency, price, fx_rate=in_fx, note=note)
        try:
            (out,), source_book = drafts_check(portfolio=source, drafts=[out])
            (inbound,), destination_book = drafts_check(portfolio=destination, drafts=[inbound])
        except LedgerProblems as exc:
            raise _as_field_errors(exc) from None
        sent, received = _row(source, out), _row(destination, inbound)
        sent.save()
        received.counterpart = sent
        received.save()
        sent.counterpart = received
        sent.save(update_fields=["counterpart"])
        portfolio_rebuild(portfolio=source, book=source_book)
        portfolio_rebuild(portfolio=destination, book=destination_book)
    return sent, received


def transaction_delete(*, transaction: Transaction) -> None:
    """Remove a ledger entry (both sides of a transfer), unless a later entry depends on it."""
    with db_transaction.atomic():
        pairs = [transaction] + ([transaction.counterpart] if transaction.counterpart else [])
        portfolios = _lock(*(Portfolio(pk=t.portfolio_id) for t in pairs))
        books = []
        for portfolio in portfolios:
            try:
                books.append(_fold(portfolio, _ledger(portfolio, exclude=[t.pk for t in pairs])))
            except LedgerProblems as exc:
                raise ValidationError(f"Deleting this entry would break a later one. {exc.problems[0].message}") from None
        Transaction.objects.filter(pk__in=[t.pk for t in pairs]).delete()
        for portfolio, book in zip(portfolios, books, strict=True):
            portfolio_rebuild(portfolio=portfolio, book=book)


def portfolio_rebuild(*, portfolio: Portfolio, book: Book | None = None) -> Book:
    """Write the derived rows (holdings, cash balances, totals) from the ledger, and tell the owner's live pages."""
    if book is None:
        book = _fold(portfolio, _ledger(portfolio))
    positions = book.open_positions()
    instruments = dict(Instrument.objects.filter(symbol__in=positions).values_list("symbol", "id"))
    Holding.objects.filter(portfolio=portfolio).delete()
    Holding.objects.bulk_create(
        Holding(portfolio=portfolio, instrument_id=instruments[s], quantity=p.quantity, cost=p.cost, cost_base=p.cost_base)
        for s, p in positions.items()
    )
    CashBalance.objects.filter(portfolio=portfolio).delete()
    CashBalance.objects.bulk_create(CashBalance(portfolio=portfolio, currency=c, amount=a) for c, a in book.cash_balances().items())
    Portfolio.objects.filter(pk=portfolio.pk).update(
        realised_pnl=book.realised, dividends=book.dividends, interest=book.interest, fees=book.fees, net_deposits=book.net_deposits
    )
    _announce(portfolio)
    # The daily value history replays the whole ledger: after commit, off the writer's lock (portfolio/performance.py).
    daily_values_rebuild_on_commit(portfolio=portfolio)
    return book


def _announce(portfolio: Portfolio) -> None:
    streams.notify_user_on_commit(portfolio.owner_id, {"type": PORTFOLIO_RELOAD_EVENT, "portfolio_id": portfolio.pk})
    if Alert.objects.filter(portfolio=portfolio, active=True).exists():
        # The feed workers hold this portfolio's book for its alerts: they load it again.
        streams.alerts_changed_on_commit()


def portfolio_delete(*, portfolio: Portfolio) -> None:
    """Remove a portfolio with its ledger and holdings; the owner's live pages reload without it."""
    with db_transaction.atomic():
        _announce(portfolio)
        portfolio.delete()


def portfolio_create(
    *, owner_id: int, name: str, base_currency: str = "USD", allow_negative_cash: bool = False, time_zone: str = ""
) -> Portfolio:
    if base_currency not in known_currencies():
        raise ValidationError({"base_currency": f"Unknown currency {base_currency!r}: use an ISO 4217 code such as USD."})
    portfolio = Portfolio(owner_id=owner_id, name=name, base_currency=base_currency, allow_negative_cash=allow_negative_cash)
    if time_zone:
        portfolio.time_zone = time_zone
    portfolio.full_clean()
    portfolio.save()
    _announce(portfolio)
    return portfolio


def portfolio_update(
    *, portfolio: Portfolio, name: str, time_zone: str, allow_negative_cash: bool, base_currency: str | None = None
) -> Portfolio:
    """Rename a portfolio or change its settings; the ledger is checked again when a setting makes its rules stricter.

    The base currency changes only while the ledger is empty: every entry's FX rate is a rate to it.
    """
    with db_transaction.atomic():
        (portfolio,) = _lock(portfolio)
        if base_currency is not None and base_currency != portfolio.base_currency:
            if base_currency not in known_currencies():
                raise ValidationError({"base_currency": f"Unknown currency {base_currency!r}: use an ISO 4217 code such as USD."})
            if Transaction.objects.filter(portfolio=portfolio).exists():
                raise ValidationError(
                    {"base_currency": "The base currency can change only while the ledger is empty: every entry's FX rate is to it."}
                )
            portfolio.base_currency = base_currency
        stricter = portfolio.allow_negative_cash and not allow_negative_cash
        portfolio.name, portfolio.time_zone, portfolio.allow_negative_cash = name, time_zone, allow_negative_cash
        portfolio.full_clean()
        portfolio.save()
        if stricter:
            try:
                portfolio_rebuild(portfolio=portfolio)
            except LedgerProblems as exc:
                raise ValidationError({"allow_negative_cash": f"The ledger needs negative cash. {exc.problems[0].message}"}) from None
        else:
            _announce(portfolio)
    return portfolio


def portfolio_archive(*, portfolio: Portfolio, archived: bool = True) -> Portfolio:
    """Archive (or bring back) a portfolio: its ledger is kept, but it leaves the dashboard and the live API."""
    with db_transaction.atomic():
        portfolio.archived_at = timezone.now() if archived else None
        Portfolio.objects.filter(pk=portfolio.pk).update(archived_at=portfolio.archived_at)
        _announce(portfolio)
    return portfolio


def entry_record(*, portfolio: Portfolio, draft: Draft, counterparty: Portfolio | None = None) -> Transaction:
    """Record `draft` in `portfolio`: as one entry, or, with a `counterparty`, as a transfer with it (this side returned)."""
    if counterparty is None:
        return transaction_record(portfolio=portfolio, draft=draft)
    outgoing = draft.kind == Kind.TRANSFER_OUT
    source, destination = (portfolio, counterparty) if outgoing else (counterparty, portfolio)
    sent, received = transfer_record(
        source=source,
        destination=destination,
        executed_at=draft.executed_at,
        quantity=draft.quantity,
        instrument=draft.instrument,
        currency=draft.currency,
        source_fx_rate=draft.fx_rate if outgoing else None,
        destination_fx_rate=None if outgoing else draft.fx_rate,
        note=draft.note,
    )
    return sent if outgoing else received


def transaction_replace(*, transaction: Transaction, draft: Draft, counterparty: Portfolio | None = None) -> Transaction:
    """Edit a ledger entry: delete it and record `draft` in its place, in one database transaction.

    The ledger is checked as it stands with the new entry instead of the old
    one, so a correction that later entries depend on is judged with the
    correction in place. When the new entry is refused, the error is the one
    recording it would give and nothing has changed (the delete rolls back).
    A linked transfer is replaced on both sides; `counterparty` makes the new
    entry a transfer with that portfolio (as `transfer_record`).
    """
    with db_transaction.atomic():
        old = [transaction] + ([transaction.counterpart] if transaction.counterpart else [])
        _lock(*(Portfolio(pk=t.portfolio_id) for t in old))
        portfolio = Portfolio.objects.get(pk=transaction.portfolio_id)
        Transaction.objects.filter(pk__in=[t.pk for t in old]).delete()
        saved = entry_record(portfolio=portfolio, draft=draft, counterparty=counterparty)
        rebuilt = {portfolio.pk} | ({counterparty.pk} if counterparty is not None else set())
        for other in {t.portfolio_id for t in old} - rebuilt:  # a transfer's old other side, no longer part of it
            try:
                portfolio_rebuild(portfolio=Portfolio.objects.get(pk=other))
            except LedgerProblems as exc:
                raise ValidationError(f"Deleting this entry would break a later one. {exc.problems[0].message}") from None
    return saved


# ---------------------------------------------------------------- watchlist and alerts


def watchlist_changed(*, user_id: int) -> None:
    """The user's open dashboards read the watchlist again after commit (with the books: `portfolio.reload`)."""
    streams.notify_user_on_commit(user_id, {"type": PORTFOLIO_RELOAD_EVENT})


def watchlist_add(*, user: Any, instrument: Instrument) -> WatchlistItem:
    """Follow an instrument on the dashboard (again: nothing changes); the user's open dashboards reload."""
    item, created = WatchlistItem.objects.get_or_create(user=user, instrument=instrument)
    if created:
        watchlist_changed(user_id=user.pk)
    return item


def watchlist_remove(*, user: Any, instrument_id: int) -> bool:
    """Stop following an instrument; False when it was not on the user's watchlist."""
    deleted, _ = WatchlistItem.objects.filter(user=user, instrument_id=instrument_id).delete()
    if deleted:
        watchlist_changed(user_id=user.pk)
    return bool(deleted)


def alert_check(
    *,
    kind: str,
    threshold: Decimal,
    window_minutes: int = 0,
    hysteresis: Decimal = ZERO,
    instrument: Instrument | None = None,
    portfolio: Portfolio | None = None,
    user_id: int | None = None,
) -> None:
    """Raise ValidationError (by field) unless these make an alert the feed worker can evaluate: a price or a move on
    an instrument, or a value or a day change of one of the user's portfolios."""
    errors: dict[str, str] = {}
    on_portfolio = kind in PORTFOLIO_ALERT_KINDS
    if kind not in AlertKind.values:
        errors["kind"] = f"Unknown kind {kind!r}: one of {', '.join(AlertKind.values)}."
    elif on_portfolio:
        if portfolio is None:
            errors["portfolio"] = "Choose the portfolio this alert watches."
        elif user_id is not None and portfolio.owner_id != user_id:
            errors["portfolio"] = "That portfolio is not the alert owner's."
        if instrument is not None:
            errors["instrument"] = "A portfolio alert watches a portfolio, not an instrument: leave the instrument empty."
    else:
        if instrument is None:
            errors["instrument"] = "Choose the instrument this alert watches."
        if portfolio is not None:
            errors["portfolio"] = "A price or move alert watches an instrument: leave the portfolio empty."
    if kind in (AlertKind.MOVE_PCT, AlertKind.DAY_CHANGE_PCT):
        if threshold == 0:
            errors["threshold"] = "A percentage other than 0 is needed (5 = up by 5 %, -5 = down by 5 %)."
        if kind == AlertKind.MOVE_PCT and window_minutes < 1:
            errors["window_minutes"] = "A move is measured over at least one minute."
    elif kind in AlertKind.values and threshold <= 0:
        errors["threshold"] = "A value threshold must be above 0." if on_portfolio else "A price threshold must be above 0."
    if hysteresis < 0:
        errors["hysteresis"] = "Hysteresis cannot be negative."
    if errors:
        raise ValidationError(errors)


# An alert's hysteresis when none is given: a fraction of its threshold (0.5 % of a price; 0.5 points of a 5 % move),
# so a price hovering at the threshold fires it once, not at every tick that crosses back.
DEFAULT_HYSTERESIS = Decimal("0.005")
DEFAULT_MOVE_HYSTERESIS = Decimal("0.1")


def alert_hysteresis_default(*, kind: str, threshold: Decimal) -> Decimal:
    share = DEFAULT_MOVE_HYSTERESIS if kind in (AlertKind.MOVE_PCT, AlertKind.DAY_CHANGE_PCT) else DEFAULT_HYSTERESIS
    return (abs(threshold) * share).quantize(_PLACES)


def alert_create(
    *,
    user: Any,
    kind: str,
    threshold: Decimal,
    instrument: Instrument | None = None,
    portfolio: Portfolio | None = None,
    window_minutes: int = 0,
    hysteresis: Decimal | None = None,
    email: bool = False,
) -> Alert:
    """A new, armed alert on an instrument or on one of the user's portfolios; the feed workers reload their alert
    index after commit. `hysteresis` None: the default (`alert_hysteresis_default`); 0 re-arms as soon as the value is
    back on the other side."""
    if hysteresis is None:
        hysteresis = alert_hysteresis_default(kind=kind, threshold=threshold)
    alert_check(
        kind=kind,
        threshold=threshold,
        window_minutes=window_minutes,
        hysteresis=hysteresis,
        instrument=instrument,
        portfolio=portfolio,
        user_id=user.pk,
    )
    alert = Alert.objects.create(
        user=user,
        instrument=instrument,
        portfolio=portfolio,
        kind=kind,
        threshold=threshold,
        window_minutes=window_minutes if kind == AlertKind.MOVE_PCT else 0,
        hysteresis=hysteresis,
        email=email,
    )
    streams.alerts_changed_on_commit()
    return alert


def alert_saved(*, alert: Alert) -> None:
    """After the admin saved an alert: the feed workers reload (an admin edit is a change like any other)."""
    streams.alerts_changed_on_commit()


def alert_set_active(*, alert: Alert, active: bool) -> Alert:
    """Pause or resume an alert (resumed armed: it fires at the next crossing)."""
    alert.active = active
    if active:
        alert.armed = True
    alert.save(update_fields=["active", "armed"])
    streams.alerts_changed_on_commit()
    return alert


def alert_delete(*, alert: Alert) -> None:
    alert.delete()
    streams.alerts_changed_on_commit()


def notification_wire(notification: Notification, *, symbol: str = "") -> dict[str, Any]:
    """A notification as the `alert` frame of /ws/portfolio/ carries it (docs/websocket-api.md): money as strings."""
    return {
        "id": notification.pk,
        "alert_id": notification.alert_id,
        "symbol": symbol,
        "message": notification.message,
        "value": plain(notification.value),
        "fired_at": to_epoch_ms(notification.fired_at),
        "read": notification.read_at is not None,
    }


def _alert_message(alert: Alert, value: Decimal) -> str:
    if alert.kind == AlertKind.MOVE_PCT:
        return f"{alert.describe()}: moved {value.normalize():+f}%"
    if alert.kind == AlertKind.DAY_CHANGE_PCT:
        return f"{alert.describe()}: {value.normalize():+f}% today"
    if alert.portfolio is not None:
        return f"{alert.describe()}: now {value.quantize(Decimal('0.01')):f} {alert.portfolio.base_currency}"
    return f"{alert.describe()}: now {value.normalize():f}"


def alert_fire(*, alert_id: int, value: Decimal, fired_at: datetime) -> Notification | None:
    """Record one firing, once: only an alert still armed and active fires (a conditional UPDATE, so two workers, a
    reload racing a firing, or a restart never fire it twice). The notification goes to the user's open dashboards
    after commit. None when it had fired already (or was paused or deleted meanwhile)."""
    with db_transaction.atomic():
        if not Alert.objects.filter(pk=alert_id, armed=True, active=True).update(armed=False, fired_at=fired_at):
            return None
        alert = Alert.objects.select_related("instrument", "portfolio").get(pk=alert_id)
        notification = Notification.objects.create(
            user_id=alert.user_id, alert=alert, fired_at=fired_at, message=_alert_message(alert, value)[:200], value=value
        )
        wire = notification_wire(notification, symbol=alert.instrument.symbol if alert.instrument is not None else "")
        streams.notify_user_on_commit(alert.user_id, {"type": ALERT_FIRED_EVENT, "notification": wire})
    return notification


def alert_rearm(*, alert_id: int) -> bool:
    """The value moved back past the threshold by the hysteresis: the alert may fire again."""
    return bool(Alert.objects.filter(pk=alert_id, armed=False, active=True).update(armed=True))


def notification_email_send(*, notification_id: int) -> bool:
    """Email a notification to its user through Django's email backend (EMAIL_BACKEND), once; False when there is
    nothing to send (no address, alert without email, sent already). Raises what the backend raises (the caller retries)."""
    notification = Notification.objects.select_related("user", "alert").get(pk=notification_id)
    address = getattr(notification.user, "email", "")
    if notification.emailed or notification.alert is None or not notification.alert.email or not address:
        return False
    send_mail(
        subject=f"Livefolio alert: {notification.message}"[:150],
        message=f"{notification.message}\n\nFired at {notification.fired_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC.\n",
        from_email=None,
        recipient_list=[address],
    )
    Notification.objects.filter(pk=notification_id).update(emailed=True)
    return True


def notifications_mark_read(*, user: Any, ids: Iterable[int] | None = None) -> int:
    """Mark the user's notifications read (these, or all); how many changed."""
    rows = Notification.objects.filter(user=user, read_at=None)
    if ids is not None:
        rows = rows.filter(pk__in=list(ids))
    return rows.update(read_at=timezone.now())
