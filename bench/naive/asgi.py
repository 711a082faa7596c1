"""ASGI entry point of the naive baseline: `daphne bench.naive.asgi:application` (run from the project root)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.naive.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench.naive.consumers import TickerConsumer  # noqa: E402

# As the tutorial wires it, less the origin check: the load generator is a bot and sends no Origin.
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AuthMiddlewareStack(URLRouter([path("ws/ticker/", TickerConsumer.as_asgi())])),
    }
)
