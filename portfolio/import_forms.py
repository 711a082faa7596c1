"""The import wizard's forms: the upload, the format (with a column mapping), the rows fixed in the browser."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile

from portfolio import csvio, wizard
from portfolio.brokers import PRESETS, ColumnMapping, MappingError
from portfolio.brokers.generic import OUR_COLUMNS, REQUIRED
from portfolio.forms import csv_upload_checked, megabytes
from portfolio.models import Kind

DATE_FORMATS = (
    ("", "ISO 8601 with an offset or Z (2025-03-14T15:30:00Z)"),
    ("%Y-%m-%d %H:%M:%S", "2025-03-14 15:30:00"),
    ("%Y-%m-%d %H:%M", "2025-03-14 15:30"),
    ("%Y-%m-%d", "2025-03-14"),
    ("%d/%m/%Y %H:%M", "14/03/2025 15:30"),
    ("%d/%m/%Y", "14/03/2025"),
    ("%m/%d/%Y %H:%M", "03/14/2025 15:30"),
    ("%m/%d/%Y", "03/14/2025"),
    ("%d.%m.%Y %H:%M", "14.03.2025 15:30"),
    ("%d.%m.%Y", "14.03.2025"),
    ("%d-%m-%Y", "14-03-2025"),
)
COLUMN_HELP = {
    "executed_at": "When it happened",
    "kind": "buy, sell, deposit, …",
    "symbol": "The instrument",
    "quantity": "Shares, or the amount of cash",
    "price": "Per share",
    "fee": "In the row's currency",
    "currency": "ISO code",
    "fx_rate": "Base currency per unit",
    "note": "Free text",
}


class UploadForm(forms.Form):
    file = forms.FileField(label="CSV file")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["file"].help_text = (
            f"Livefolio's own CSV, a broker's export, or any CSV whose columns you map. UTF-8, at most "
            f"{megabytes(settings.PORTFOLIO_IMPORT_MAX_BYTES)} MB."
        )
        self.fields["file"].widget.attrs["accept"] = ".csv,text/csv,text/plain"

    def clean_file(self) -> UploadedFile:
        return csv_upload_checked(
            self.cleaned_data["file"], too_big="Split it, or ask staff to import it with manage.py import_transactions."
        )


class FormatForm(forms.Form):
    """Which format the file is read as; when "map the columns myself", the mapping (checked by ColumnMapping)."""

    format = forms.ChoiceField(label="Read the file as", widget=forms.RadioSelect)
    date_format = forms.ChoiceField(label="Dates look like", choices=DATE_FORMATS, required=False)
    timezone = forms.CharField(label="Time zone of times without an offset", max_length=64, required=False)
    decimal = forms.ChoiceField(label="Decimal point", choices=((".", "1234.56"), (",", "1234,56")), initial=".")
    thousands = forms.ChoiceField(
        label="Thousands separator", choices=(("", "none"), (",", "1,234"), (".", "1.234"), (" ", "1 234"), ("'", "1'234")), required=False
    )
    kinds = forms.CharField(
        label="Their kinds → ours",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=f"One per line, e.g. “Kauf = buy”. Ours: {', '.join(Kind.values)}. Values already ours need no line.",
    )

    def __init__(self, *args: Any, detected: wizard.Detected, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.detected = detected
        choices = []
        if detected.ours:
            choices.append((wizard.OURS, "Livefolio CSV (detected)"))
        found = {p.name for p in detected.presets}
        for preset in sorted(PRESETS.values(), key=lambda p: p.name not in found):
            choices.append((preset.name, f"{preset.label}{' (detected)' if preset.name in found else ''}"))
        remembered = " (your saved mapping for this header)" if detected.saved else ""
        choices.append((wizard.MAPPED, f"Map the columns myself{remembered}"))
        format_field = self.fields["format"]
        assert isinstance(format_field, forms.ChoiceField)
        format_field.choices = choices
        options = [("", "—")] + [(h, h) for h in detected.header if h]
        for column in OUR_COLUMNS:
            label = f"{column}{' *' if column in REQUIRED else ''}"
            self.fields[f"col_{column}"] = forms.ChoiceField(label=label, choices=options, required=False, help_text=COLUMN_HELP[column])

    def column_fields(self) -> list[forms.BoundField]:
        return [self[f"col_{c}"] for c in OUR_COLUMNS]

    def clean_kinds(self) -> dict[str, str]:
        kinds: dict[str, str] = {}
        for number, line in enumerate(str(self.cleaned_data.get("kinds") or "").splitlines(), start=1):
            if not line.strip():
                continue
            theirs, sep, ours = line.partition("=")
            if not sep or not theirs.strip() or not ours.strip():
                raise ValidationError(f"Line {number}: write “their value = our kind”.")
            kinds[theirs.strip()] = ours.strip().lower()
        return kinds

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        self.mapping: ColumnMapping | None = None
        if data.get("format") == wizard.MAPPED and not self.errors:
            try:
                self.mapping = ColumnMapping.from_dict(
                    {
                        "columns": {c: data.get(f"col_{c}") or "" for c in OUR_COLUMNS},
                        "date_format": data.get("date_format") or "",
                        "timezone": data.get("timezone") or "UTC",
                        "decimal": data.get("decimal") or ".",
                        "thousands": data.get("thousands") or "",
                        "kinds": data.get("kinds") or {},
                        "delimiter": self.detected.delimiter,
                    }
                )
            except MappingError as exc:
                raise ValidationError(f"The mapping cannot be used: {exc}.") from None
        return data

    @staticmethod
    def initial_for(mapping: dict[str, Any], *, time_zone: str) -> dict[str, Any]:
        """The form's fields from a stored mapping (or none)."""
        columns = mapping.get("columns") or {}
        initial = {f"col_{c}": columns.get(c, "") for c in OUR_COLUMNS}
        initial.update(
            date_format=mapping.get("date_format", ""),
            timezone=mapping.get("timezone") or time_zone,
            decimal=mapping.get("decimal", "."),
            thousands=mapping.get("thousands", ""),
            # Sorted: a JSON column keeps no key order on PostgreSQL (jsonb), so the order typed in is not kept anyway.
            kinds="\n".join(f"{k} = {v}" for k, v in sorted((mapping.get("kinds") or {}).items())),
        )
        return initial

    @staticmethod
    def guessed(header: list[str]) -> dict[str, str]:
        """Columns named like ours (any case, spaces or underscores) mapped to them."""
        by_name = {h.strip().lower().replace(" ", "_"): h for h in header}
        aliases = {"executed_at": ("date", "time", "datetime", "executed"), "kind": ("type", "action"), "quantity": ("shares", "qty")}
        guess = {}
        for column in csvio.COLUMNS:
            for name in (column, *aliases.get(column, ())):
                if name in by_name:
                    guess[f"col_{column}"] = by_name[name]
                    break
        return guess
