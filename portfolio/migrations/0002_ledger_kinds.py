"""Buy/sell sides become ledger kinds with a currency; holdings keep total cost instead of an average."""

from django.db import migrations, models

import marketdata.models


def sides_to_kinds(apps, schema_editor):
    Transaction = apps.get_model("portfolio", "Transaction")
    for entry in Transaction.objects.select_related("instrument"):
        entry.kind = entry.side
        entry.currency = entry.instrument.quote_currency
        entry.save(update_fields=["kind", "currency"])


class Migration(migrations.Migration):
    dependencies = [("portfolio", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="transaction",
            name="kind",
            field=models.CharField(default="buy", max_length=16),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="transaction",
            name="currency",
            field=models.CharField(default="", max_length=3, validators=[marketdata.models.currency_code]),
            preserve_default=False,
        ),
        migrations.RunPython(sides_to_kinds, migrations.RunPython.noop),
        migrations.RemoveField(model_name="transaction", name="side"),
        # Holdings are derived: 0003 rebuilds them from the ledger.
        migrations.RemoveField(model_name="holding", name="average_cost"),
        migrations.AddField(
            model_name="holding", name="cost", field=marketdata.models.decimal_field(default=0), preserve_default=False
        ),
        migrations.AddField(
            model_name="holding", name="cost_base", field=marketdata.models.decimal_field(default=0), preserve_default=False
        ),
    ]
