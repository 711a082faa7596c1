"""ASGI entry point: HTTP goes to Django, WebSockets through origin check → session auth → router.

The origin check depends on the path (config/origins.py): /ws/v1/market lets
bots without an Origin header in, every other WebSocket path needs an Origin
in ALLOWED_HOSTS.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Django must be set up before anything imports models (consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from config import closecodes  # noqa: E402
from config.origins import AllowedHostsBrowserOriginValidator, OriginCheckByPath  # noqa: E402
from config.routing import websocket_urlpatterns  # noqa: E402

closecodes.install()  # daphne: close with 1013 when Redis or the database is down (docs/websocket-api.md)

websocket_app = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginCheckByPath(
            # The market API serves bots too: a browser's Origin is checked, a missing one (a bot's) is not.
            {"/ws/v1/market": AllowedHostsBrowserOriginValidator(websocket_app)},
            # The dashboard's stream (and any path added later) serves pages only: an allowed Origin is required.
            default=AllowedHostsOriginValidator(websocket_app),
        ),
    }
)
