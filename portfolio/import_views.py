"""The import wizard's pages: upload → format (a preset, our own CSV, or a column mapping) → preview (every problem at
once, rows fixed in the browser) → import, all or nothing.

Only the portfolio's owner reaches them (another user's portfolio or upload is a
404); every write is a POST behind Django's CSRF check. The work is in
`portfolio.wizard`; the upload waits between steps in an `ImportUpload` row.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction as db_transaction
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from portfolio import wizard
from portfolio.brokers import MappingError
from portfolio.import_forms import FormatForm, UploadForm
from portfolio.models import ImportUpload, Portfolio
from portfolio.views import SignedInRequest, _own


def _upload(request: SignedInRequest, portfolio: Portfolio, upload_id: int) -> ImportUpload:
    wizard.uploads_expire()
    return get_object_or_404(ImportUpload.objects.filter(owner=request.user, portfolio=portfolio), pk=upload_id)


@login_required
def import_upload(request: SignedInRequest, portfolio_id: int) -> HttpResponse:
    portfolio = _own(request, portfolio_id)
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        file = form.cleaned_data["file"]
        with db_transaction.atomic():
            # One upload per user waits in the wizard: a new one replaces it.
            ImportUpload.objects.filter(owner=request.user).delete()
            upload = ImportUpload.objects.create(
                owner=request.user, portfolio=portfolio, name=(file.name or "upload.csv")[:200], data=file.read(), size=file.size or 0
            )
        wizard.uploads_expire()
        return redirect("portfolio:import_format", portfolio_id=portfolio.pk, upload_id=upload.pk)
    waiting = ImportUpload.objects.filter(owner=request.user, portfolio=portfolio).only("pk", "name", "created_at").first()
    return render(request, "portfolio/import_upload.html", {"portfolio": portfolio, "form": form, "waiting": waiting, "step": 1})


@login_required
def import_format(request: SignedInRequest, portfolio_id: int, upload_id: int) -> HttpResponse:
    portfolio = _own(request, portfolio_id)
    upload = _upload(request, portfolio, upload_id)
    detected = wizard.detect(upload)
    if request.method == "POST":
        form = FormatForm(request.POST, detected=detected)
        if form.is_valid():
            upload.format = form.cleaned_data["format"]
            upload.mapping = form.mapping.to_dict() if form.mapping else {}
            upload.edits = {}  # fixes were made to rows as another format read them
            upload.save(update_fields=["format", "mapping", "edits"])
            if form.mapping is not None:
                wizard.mapping_remember(upload=upload, detected=detected, mapping=form.mapping)
            return redirect("portfolio:import_preview", portfolio_id=portfolio.pk, upload_id=upload.pk)
    else:
        if upload.format == wizard.MAPPED and upload.mapping:
            stored: dict[str, Any] = upload.mapping
        elif detected.saved is not None:
            stored = detected.saved.mapping
        else:
            stored = {}
        initial = FormatForm.initial_for(stored, time_zone=portfolio.time_zone)
        if not stored:
            initial.update(FormatForm.guessed(detected.header))
        initial["format"] = upload.format or detected.suggested
        form = FormatForm(initial=initial, detected=detected)
    return render(
        request,
        "portfolio/import_format.html",
        {"portfolio": portfolio, "upload": upload, "form": form, "detected": detected, "step": 2},
    )


@login_required
def import_preview(request: SignedInRequest, portfolio_id: int, upload_id: int) -> HttpResponse:
    portfolio = _own(request, portfolio_id)
    upload = _upload(request, portfolio, upload_id)
    if not upload.format:
        return redirect("portfolio:import_format", portfolio_id=portfolio.pk, upload_id=upload.pk)
    try:
        outcome = wizard.check(upload=upload, portfolio=portfolio, dry_run=True)
    except MappingError as exc:  # a mapping stored by an older version
        messages.error(request, f"The column mapping cannot be used: {exc}.")
        return redirect("portfolio:import_format", portfolio_id=portfolio.pk, upload_id=upload.pk)
    return _preview_page(request, portfolio, upload, outcome)


def _preview_page(request: SignedInRequest, portfolio: Portfolio, upload: ImportUpload, outcome: wizard.Outcome) -> HttpResponse:
    header_line, header = wizard.header_record(upload)
    fix_lines = [line for line in outcome.lines() if line != header_line][: wizard.FIX_ROWS]
    cells = wizard.rows_at(upload, fix_lines)
    by_line: dict[int, list[str]] = {}
    for problem in outcome.problems:
        if isinstance(problem.ref, int):
            by_line.setdefault(problem.ref, []).append(problem.field)
    fixes = []
    for line in fix_lines:
        if line not in cells:
            continue
        row = cells[line]
        width = max(len(header), len(row))
        names = [header[i] if i < len(header) and header[i] else f"column {i + 1}" for i in range(width)]
        fixes.append(
            {
                "line": line,
                "cells": [
                    {"index": i, "name": names[i], "value": row[i] if i < len(row) else "", "bad": names[i] in by_line.get(line, [])}
                    for i in range(width)
                ],
            }
        )
    return render(
        request,
        "portfolio/import_preview.html",
        {
            "portfolio": portfolio,
            "upload": upload,
            "label": wizard.label_of(upload),
            "outcome": outcome,
            "problems": outcome.messages(),
            "unlisted": outcome.total - len(outcome.problems),
            "fixes": fixes,
            "edited": len(upload.edits or {}),
            "step": 3,
        },
    )


@login_required
@require_POST
def import_fix(request: SignedInRequest, portfolio_id: int, upload_id: int) -> HttpResponse:
    portfolio = _own(request, portfolio_id)
    upload = _upload(request, portfolio, upload_id)
    changes: dict[int, dict[str, Any]] = {}
    for value in request.POST.getlist("line")[: wizard.FIX_ROWS]:
        if not value.isdigit():
            continue
        line = int(value)
        if request.POST.get(f"skip-{line}"):
            changes[line] = {"skip": True}
            continue
        width = sum(1 for key in request.POST if key.startswith(f"c-{line}-"))
        cells = [request.POST.get(f"c-{line}-{i}", "") for i in range(min(width, 500))]
        if cells:
            changes[line] = {"cells": cells}
    current = wizard.rows_at(upload, changes)
    changed = {line: c for line, c in changes.items() if c.get("skip") or c.get("cells") != current.get(line)}
    count = wizard.edits_apply(upload=upload, changes=changed)
    messages.info(request, f"Fixed {count} row{'s' if count != 1 else ''}; checked again." if count else "Nothing changed; checked again.")
    return redirect("portfolio:import_preview", portfolio_id=portfolio.pk, upload_id=upload.pk)


@login_required
@require_POST
def import_run(request: SignedInRequest, portfolio_id: int, upload_id: int) -> HttpResponse:
    portfolio = _own(request, portfolio_id)
    upload = _upload(request, portfolio, upload_id)
    if not upload.format:
        return redirect("portfolio:import_format", portfolio_id=portfolio.pk, upload_id=upload.pk)
    outcome = wizard.check(upload=upload, portfolio=portfolio, dry_run=False)
    if not outcome.ok:  # the ledger changed since the preview, or the file was never sound: nothing was written
        messages.error(request, f"Nothing was imported: {outcome.total} problem{'s' if outcome.total != 1 else ''} to fix first.")
        return _preview_page(request, portfolio, upload, outcome)
    upload.delete()
    messages.success(request, f"Imported {outcome.summary}; holdings and cash were rebuilt.")
    return redirect("portfolio:transactions", portfolio_id=portfolio.pk)


@login_required
@require_POST
def import_cancel(request: SignedInRequest, portfolio_id: int, upload_id: int) -> HttpResponse:
    portfolio = _own(request, portfolio_id)
    _upload(request, portfolio, upload_id).delete()
    messages.info(request, "Import cancelled; the file was deleted.")
    return redirect("portfolio:transactions", portfolio_id=portfolio.pk)
