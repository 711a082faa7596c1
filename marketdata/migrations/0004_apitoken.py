"""API tokens: how bots sign in to /ws/v1/market. Only each token's SHA-256 is stored."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('marketdata', '0003_candles_aliases_feeds'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ApiToken',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(help_text="What it is for, e.g. 'rebalancing bot on the home server'.", max_length=100)),
                ('prefix', models.CharField(help_text="The first 8 characters after 'lf_', to tell tokens apart.", max_length=8)),
                ('digest', models.CharField(help_text='SHA-256 (hex) of the whole token; never the token itself.', max_length=64, unique=True, verbose_name='SHA-256')),
                ('created_at', models.DateTimeField(auto_now_add=True, verbose_name='created')),
                ('last_used_at', models.DateTimeField(blank=True, help_text='Stamped at most once a minute.', null=True, verbose_name='last used')),
                ('revoked_at', models.DateTimeField(blank=True, null=True, verbose_name='revoked')),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='api_tokens', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'API token',
                'ordering': ['-created_at', '-id'],
            },
        ),
    ]
