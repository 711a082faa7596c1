"""Livefolio settings: one module, every value from the environment.

Each variable is listed in `.env.example` and the README. Readers live in
`config.env` and refuse bad values at start-up.
"""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

from config.env import env_bool, env_decimal, env_int, env_list, env_str
from config.proxies import parse_networks
from config.redis_hosts import configured_servers

BASE_DIR = Path(__file__).resolve().parent.parent
# A local .env fills in what the real environment leaves unset; never overrides it.
load_dotenv(BASE_DIR / ".env", override=False)

DEBUG = env_bool("DEBUG", True)

SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "django-insecure-development-only-key-never-use-in-production"  # noqa: S105 (DEBUG only)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Addresses or networks of our own reverse proxies: only their X-Forwarded-For is believed (config/proxies.py).
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", [])
parse_networks(TRUSTED_PROXIES)  # a bad entry stops start-up with its text

INSTALLED_APPS = [
    # daphne first: its runserver replaces Django's with an ASGI one.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "axes",
    # django-csp: the Content-Security-Policy header (CONTENT_SECURITY_POLICY below) and its settings checks.
    "csp",
    "marketdata",
    "portfolio",
]

MIDDLEWARE = [
    # The database down: pages answer 503 with a clear page, not 500 (docs/operations.md).
    "config.unavailable.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as axes asks: turns a login that hit the lockout into the lockout page (config/lockout.py).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "config.context_processors.live_pages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL={DATABASE_URL!r} is not a database URL: {exc}") from exc
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the feed worker and the tests share one file: WAL lets
    # readers run beside the writer, IMMEDIATE takes the write lock up front so
    # concurrent writers wait (up to `timeout`) instead of failing mid-transaction.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "portfolio:dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the finders while debugging so `make run` needs no collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- HTTPS behind a TLS proxy, and the Content-Security-Policy ----------------
# Production values: docs/deploy/production.env.example; why: docs/operations.md, "Production".
# The header (Django's META name) and value by which our TLS proxy says a request came over HTTPS, e.g.
# HTTP_X_FORWARDED_PROTO,https. The proxy must overwrite that header on every request: it is believed from anyone.
_PROXY_SSL_HEADER = env_list("SECURE_PROXY_SSL_HEADER", [])
if _PROXY_SSL_HEADER and (len(_PROXY_SSL_HEADER) != 2 or not _PROXY_SSL_HEADER[0].startswith("HTTP_")):
    raise ImproperlyConfigured(
        f"SECURE_PROXY_SSL_HEADER={_PROXY_SSL_HEADER!r} must be HTTP_HEADER_NAME,value (e.g. HTTP_X_FORWARDED_PROTO,https)"
    )
SECURE_PROXY_SSL_HEADER = (_PROXY_SSL_HEADER[0], _PROXY_SSL_HEADER[1]) if _PROXY_SSL_HEADER else None
# Redirect every plain-HTTP request to HTTPS (off for development, where there is no TLS).
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Strict-Transport-Security max-age in seconds; 0 sends none. Browsers then refuse plain HTTP to this host that long.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
# Strict-Transport-Security's includeSubDomains and preload directives (only sent when SECURE_HSTS_SECONDS > 0).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Scripts, styles, images, fonts and connections (the pages' WebSockets included) from our own origin only;
# no inline script or style, no plugin, no framing, no <base>. Not configurable: a page needing more is a bug.
# connect-src 'self' covers ws:/wss: to our own host and port in CSP3 browsers (Chromium since 71, Safari 16).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Redis and the channel layer -------------------------------------------
# One URL, or several separated by commas: servers the market data is sharded over by symbol (config/redis_hosts.py).
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# High availability: the sentinels ("host:port,host:port") and the master set they monitor (several names separated by
# commas: shards); REDIS_URL is then not used. REDIS_PASSWORD: the masters' password; REDIS_SENTINEL_PASSWORD: the sentinels'.
REDIS_SENTINELS = env_str("REDIS_SENTINELS", "")
REDIS_SENTINEL_MASTER = env_str("REDIS_SENTINEL_MASTER", "")
REDIS_SERVERS = configured_servers(
    {
        "REDIS_SENTINELS": REDIS_SENTINELS,
        "REDIS_SENTINEL_MASTER": REDIS_SENTINEL_MASTER,
        "REDIS_PASSWORD": env_str("REDIS_PASSWORD", ""),
        "REDIS_SENTINEL_PASSWORD": env_str("REDIS_SENTINEL_PASSWORD", ""),
    },
    url=REDIS_URL,
)
# Connections each pool opens at most, per process, event loop and server: the channel layer's, and the one for
# history, counts and leases; past it a command waits for a free connection (up to REDIS_SOCKET_TIMEOUT).
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 100, minimum=4)
# redis-py 8 made 5 s the default socket timeout. channels-redis blocks in
# BZPOPMIN for up to 5 s (brpop_timeout), so a 5 s read timeout kills every
# idle consumer (channels_redis issue 422). The timeout must stay above it.
REDIS_SOCKET_TIMEOUT = env_int("REDIS_SOCKET_TIMEOUT", 30, minimum=10)
CHANNEL_LAYER_PREFIX = env_str("CHANNEL_LAYER_PREFIX", "livefolio")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                server.layer_host(socket_timeout=REDIS_SOCKET_TIMEOUT, max_connections=REDIS_MAX_CONNECTIONS) for server in REDIS_SERVERS
            ],
            "prefix": CHANNEL_LAYER_PREFIX,
            # A socket that stops reading must not grow an unbounded backlog.
            "capacity": 200,
            "expiry": 30,
        },
    },
}

# --- Market data -------------------------------------------------------------
# One broadcast per symbol per window: a burst of ticks becomes one message.
MARKETDATA_CONFLATION_MS = env_int("MARKETDATA_CONFLATION_MS", 100, minimum=1)
# Latest quotes reach the database in batches, at most once per interval.
MARKETDATA_QUOTE_FLUSH_SECONDS = env_decimal("MARKETDATA_QUOTE_FLUSH_SECONDS", Decimal("1"), minimum=Decimal("0.05"))
# One producer per symbol: a worker holds a Redis lease per symbol it publishes, renewed every third of this.
# A killed worker's symbols are free (for a standby or a new worker) this long after its last renewal.
MARKETDATA_LEASE_TTL_SECONDS = env_decimal("MARKETDATA_LEASE_TTL_SECONDS", Decimal("10"), minimum=Decimal("0.3"))
# Outages of Redis or the database: the worker retries its writes after this long, doubling up to the cap
# (what it cannot deliver meanwhile is dropped and counted; docs/operations.md, "Redis or the database down").
MARKETDATA_RETRY_SECONDS = env_decimal("MARKETDATA_RETRY_SECONDS", Decimal("0.25"), minimum=Decimal("0.01"))
MARKETDATA_RETRY_MAX_SECONDS = env_decimal("MARKETDATA_RETRY_MAX_SECONDS", Decimal("5"), minimum=Decimal("0.01"))
SYNTHETIC_TICKS_PER_SECOND = env_decimal("SYNTHETIC_TICKS_PER_SECOND", Decimal("4"), minimum=Decimal("0.01"))
# Standard deviation of the relative price move per square root of a second.
SYNTHETIC_VOLATILITY = env_decimal("SYNTHETIC_VOLATILITY", Decimal("0.0008"), minimum=Decimal("0"))
# Days of per-minute price marks (and portfolio value history) kept before the worker deletes them.
HISTORY_RETENTION_DAYS = env_int("HISTORY_RETENTION_DAYS", 30, minimum=1)
# Called by the feed worker with the minutes of market time closed since its last call (one live, a batch in a
# fast replay), each with the latest prices: `async def hook(minutes)`, minutes = [(minute, prices), ...]
# (marketdata.worker.loop.MinuteHook; the market-data app knows nothing of portfolios; this is how they meet).
MARKETDATA_MINUTE_HOOKS = [
    "portfolio.history.portfolio_values_record",
    # Once a UTC day has closed: its candles' last closes become daily closes (docs/accounting.md, "Performance").
    "marketdata.worker.days.daily_closes_record",
    # ...and then every portfolio's daily values are rebuilt from two days before (portfolio/performance.py).
    "portfolio.performance.daily_values_record",
]

# Built once per feed worker run (not in a sandbox replay), each sees every window's prices from memory
# (marketdata.worker.loop.PriceWatcher): the alerts (portfolio/alert_watch.py).
MARKETDATA_PRICE_WATCHERS = ["portfolio.alert_watch.AlertWatch"]

# --- Live portfolio ----------------------------------------------------------
# Price updates arriving within this window reach the browser as one frame.
PORTFOLIO_COALESCE_MS = env_int("PORTFOLIO_COALESCE_MS", 200, minimum=0)

# --- Email (alert notifications; Django's email backend) ----------------------
# The console backend prints mail to the feed worker's output: set the SMTP backend and server in production.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")  # or EMAIL_HOST_PASSWORD_FILE
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive: STARTTLS on a plain port, or TLS from the start")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Livefolio <livefolio@localhost>")

# --- CSV import in the admin (docs/csv-format.md) ------------------------------
# Largest CSV the admin's import page takes, in bytes; bigger files: manage.py import_transactions (no limit).
PORTFOLIO_IMPORT_MAX_BYTES = env_int("PORTFOLIO_IMPORT_MAX_BYTES", 10 * 1024 * 1024, minimum=1)

# --- Live pages in the browser -------------------------------------------------
# Every live page (dashboard, instrument pages) says "Stale" once no price has arrived for this long
# while connected: one rule, one threshold (static/js/staleness.js; base.html hands it to the pages).
LIVE_STALE_AFTER_MS = env_int("LIVE_STALE_AFTER_MS", 10_000, minimum=500)

# --- Market-data WebSocket API (/ws/v1/market) --------------------------------
# Whether connections without a user (no session, no token) may read market channels.
MARKET_WS_ANONYMOUS = env_bool("MARKET_WS_ANONYMOUS", True)
MARKET_WS_MAX_SUBSCRIPTIONS = env_int("MARKET_WS_MAX_SUBSCRIPTIONS", 100, minimum=1)
# Inbound frames per second per connection (a token bucket refilled at this rate, holding up to the burst).
MARKET_WS_MESSAGES_PER_SECOND = env_int("MARKET_WS_MESSAGES_PER_SECOND", 20, minimum=1)
MARKET_WS_BURST = env_int("MARKET_WS_BURST", 40, minimum=1)
MARKET_WS_MAX_MESSAGE_BYTES = env_int("MARKET_WS_MAX_MESSAGE_BYTES", 65536, minimum=1024)
MARKET_WS_CONNECTIONS_PER_USER = env_int("MARKET_WS_CONNECTIONS_PER_USER", 10, minimum=1)
MARKET_WS_HEARTBEAT_SECONDS = env_int("MARKET_WS_HEARTBEAT_SECONDS", 15, minimum=1)
# Slow consumers: a connection whose unsent data (its outbox, plus what the server holds where it
# shows it) stays over MARKET_WS_SEND_BUFFER_BYTES for MARKET_WS_SLOW_SECONDS is closed with 4408;
# one whose outbox alone passes four times that bound is closed at once (marketdata/delivery/outbox.py).
MARKET_WS_SEND_BUFFER_BYTES = env_int("MARKET_WS_SEND_BUFFER_BYTES", 1_048_576, minimum=65_536)
MARKET_WS_SLOW_SECONDS = env_int("MARKET_WS_SLOW_SECONDS", 5, minimum=1)
# Bounded work per connection and per process (config/capacity.py, marketdata/api/consumer.py):
# open WebSockets per server process, both endpoints; one more is closed with 1013.
WS_MAX_CONNECTIONS = env_int("WS_MAX_CONNECTIONS", 2000, minimum=1)
# Anonymous /ws/v1/market connections per client address (see TRUSTED_PROXIES), per process; one more: 4409.
MARKET_WS_ANONYMOUS_PER_ADDRESS = env_int("MARKET_WS_ANONYMOUS_PER_ADDRESS", 20, minimum=1)
# Anonymous /ws/v1/market connections per process, all addresses; one more is closed with 1013.
MARKET_WS_ANONYMOUS_MAX = env_int("MARKET_WS_ANONYMOUS_MAX", 500, minimum=1)
# Requests one connection may have waiting to be handled (above MARKET_WS_BURST, so a burst the rate allows fits);
# one more is refused with `rate_limited` and the connection is closed with 4429.
MARKET_WS_MAX_QUEUED_REQUESTS = env_int("MARKET_WS_MAX_QUEUED_REQUESTS", 50, minimum=1)
# Messages kept per market channel for `resume` (a capped Redis stream each).
MARKET_HISTORY_LENGTH = env_int("MARKET_HISTORY_LENGTH", 1000, minimum=10)
# A replay sandbox's Redis keys (`replay_feed --sandbox`: its history and snapshots) expire this long
# after its last write, so abandoned sessions do not fill Redis.
MARKETDATA_SANDBOX_TTL_SECONDS = env_int("MARKETDATA_SANDBOX_TTL_SECONDS", 86400, minimum=60)

# --- Login throttling (django-axes; config/lockout.py) -------------------------
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out username or address before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Failed logins (passwords on the login page and the admin, API tokens on /ws/v1/market) a username, or a client
# address, may have before it is locked out; each is counted separately and either one locks.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
# Failures are forgotten, and a lockout ends, this long after the last failure (attempts while locked out do not extend it).
AXES_COOLOFF_TIME = timedelta(seconds=env_int("LOGIN_COOLOFF_SECONDS", 900, minimum=1))
AXES_LOCKOUT_PARAMETERS = "config.lockout.lockout_parameters"
AXES_CLIENT_IP_CALLABLE = "config.proxies.request_client_address"  # one rule for the client's address (TRUSTED_PROXIES)
AXES_LOCKOUT_CALLABLE = "config.lockout.lockout_response"  # the login page with when to try again, HTTP 429
# A fixed end the lockout page can name; the attacker gains nothing, as locked-out attempts are refused unchecked.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A success keeps the failures: resetting them would also wipe every other username's failures from that
# address, letting anyone with an account guess another one's password without limit.
AXES_RESET_ON_SUCCESS = False
# Every failure gets a row staff can read in the admin ("Access failures"), beside the counts ("Access attempts").
AXES_ENABLE_ACCESS_FAILURE_LOG = True
# Log lines name the username and the address (a password is always masked).
AXES_SENSITIVE_PARAMETERS: list[str] = []

# --- Metrics and health (config/metrics.py, config/health.py; docs/operations.md, "Metrics and health") ----
# /metrics needs `Authorization: Bearer <this>`; empty: it answers only requests from this machine not through a proxy.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# Where the processes of one machine (daphne, the workers) keep their metrics so that any one /metrics sums them all.
# prometheus_client reads the variable itself, once, at import: it must be in the environment before the process starts.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")
if PROMETHEUS_MULTIPROC_DIR and not (os.path.isdir(PROMETHEUS_MULTIPROC_DIR) and os.access(PROMETHEUS_MULTIPROC_DIR, os.W_OK)):
    raise ImproperlyConfigured(f"PROMETHEUS_MULTIPROC_DIR={PROMETHEUS_MULTIPROC_DIR!r} is not a writable directory")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}

# --- Demo data (`manage.py seed_demo`, run by `make run`) --------------------
DEMO_USERNAME = env_str("DEMO_USERNAME", "demo")
DEMO_PASSWORD = env_str("DEMO_PASSWORD", "demo-livefolio")
ADMIN_USERNAME = env_str("ADMIN_USERNAME", "admin")
ADMIN_PASSWORD = env_str("ADMIN_PASSWORD", "admin-livefolio")
