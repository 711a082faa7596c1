"""Price marks become one-minute candles (OHLCV); symbol aliases; feeds configured in the admin.

Existing marks keep their price as the close, and open/high/low start equal to
it (a mark knew only the minute's last price). A synthetic feed is created so
`run_feeds` keeps doing what it did before feeds were configurable.
"""

import django.db.models.deletion
from django.db import migrations, models


def marks_to_candles(apps, schema_editor):
    Candle = apps.get_model("marketdata", "Candle")
    Candle.objects.update(open=models.F("close"), high=models.F("close"), low=models.F("close"))


def synthetic_feed(apps, schema_editor):
    Feed = apps.get_model("marketdata", "Feed")
    Feed.objects.get_or_create(name="synthetic", defaults={"kind": "synthetic", "options": {}, "enabled": True})


def decimal(**kwargs):
    return models.DecimalField(decimal_places=10, max_digits=28, **kwargs)


class Migration(migrations.Migration):
    dependencies = [
        ("marketdata", "0002_day_change_references"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="pricemark", name="marketdata_pricemark_one_per_minute"),
        migrations.RemoveIndex(model_name="pricemark", name="marketdata_pricemark_minute"),
        migrations.RenameModel(old_name="PriceMark", new_name="Candle"),
        migrations.RenameField(model_name="candle", old_name="minute", new_name="start"),
        migrations.RenameField(model_name="candle", old_name="price", new_name="close"),
        migrations.AlterField(
            model_name="candle",
            name="instrument",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="candles", to="marketdata.instrument"),
        ),
        migrations.AlterField(model_name="candle", name="close", field=decimal(help_text="Last price in that minute.")),
        migrations.AddField(model_name="candle", name="open", field=decimal(null=True)),
        migrations.AddField(model_name="candle", name="high", field=decimal(null=True)),
        migrations.AddField(model_name="candle", name="low", field=decimal(null=True)),
        migrations.RunPython(marks_to_candles, migrations.RunPython.noop),
        migrations.AlterField(model_name="candle", name="open", field=decimal()),
        migrations.AlterField(model_name="candle", name="high", field=decimal()),
        migrations.AlterField(model_name="candle", name="low", field=decimal()),
        migrations.AddField(
            model_name="candle",
            name="volume",
            field=decimal(default=0, help_text="Traded quantity (0 for quote-only markets)."),
        ),
        migrations.AddField(
            model_name="candle",
            name="trades",
            field=models.PositiveIntegerField(default=0, help_text="Number of trades."),
        ),
        migrations.AlterModelOptions(name="candle", options={"ordering": ["start"]}),
        migrations.AddIndex(model_name="candle", index=models.Index(fields=["start"], name="marketdata_candle_start")),
        migrations.AddConstraint(
            model_name="candle",
            constraint=models.UniqueConstraint(fields=("instrument", "start"), name="marketdata_candle_one_per_minute"),
        ),
        migrations.CreateModel(
            name="SymbolAlias",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("alias", models.CharField(help_text="The symbol as the file or exchange writes it, e.g. BTCUSDT.", max_length=64)),
                (
                    "source",
                    models.CharField(
                        blank=True,
                        help_text="Only for this source (binance, coinbase, histdata, csv, ...); empty for every source.",
                        max_length=32,
                    ),
                ),
                (
                    "instrument",
                    models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="aliases", to="marketdata.instrument"),
                ),
            ],
            options={
                "ordering": ["alias", "source"],
                "verbose_name_plural": "symbol aliases",
                "constraints": [models.UniqueConstraint(fields=("alias", "source"), name="marketdata_symbolalias_unique")],
            },
        ),
        migrations.CreateModel(
            name="Feed",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=64, unique=True)),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("synthetic", "Synthetic random walk"),
                            ("binance", "Binance spot (live)"),
                            ("coinbase", "Coinbase Advanced Trade (live)"),
                            ("replay", "Recorded files (replay)"),
                        ],
                        max_length=16,
                    ),
                ),
                ("options", models.JSONField(blank=True, default=dict, help_text="Settings of this kind of feed; see docs/feeds.md.")),
                (
                    "symbols",
                    models.TextField(
                        blank=True,
                        help_text="Symbols to take, as the source spells them, separated by spaces or commas (e.g. BTCUSDT ETHUSDT for Binance). Empty: every active instrument (synthetic) or everything in the files (replay).",
                    ),
                ),
                ("enabled", models.BooleanField(default=True)),
            ],
            options={"ordering": ["name"]},
        ),
        migrations.RunPython(synthetic_feed, migrations.RunPython.noop),
    ]
