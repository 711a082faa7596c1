"""Settings of the naive baseline: a minimal Django + Channels project, as the Channels tutorial sets one up.

Environment: REDIS_URL and CHANNEL_LAYER_PREFIX (bench/fanout.py gives each run its own prefix).
"""

from __future__ import annotations

import os

SECRET_KEY = "naive-baseline-bench-only"  # noqa: S105 (a benchmark fixture, never served)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
]
ASGI_APPLICATION = "bench.naive.asgi.application"
# The tutorial project's database; no query reaches it (no session cookie is ever sent).
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # The one change from the tutorial: redis-py 8's 5 s default socket timeout kills the
            # layer's blocking BZPOPMIN (channels_redis issue 422), so the baseline would die idle.
            "hosts": [{"address": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), "socket_timeout": 30}],
            "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", "naive"),
            # capacity and expiry stay at channels-redis's defaults (100 messages, 60 s).
        },
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
