"""ASGI entry point: HTTP goes to Django (after the probes: /healthz, /readyz, /metrics), WebSockets through origin check → connection cap → session auth → router.

The origin check depends on the path (config/origins.py): /ws/v1/market lets
bots without an Origin header in, every other WebSocket path needs one; an
Origin that is present must be the page's own (scheme, host and port) or one
of CSRF_TRUSTED_ORIGINS.
"""

import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Django must be set up before anything imports models (consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from config import closecodes, metrics, uploads  # noqa: E402
from config.capacity import ConnectionCap  # noqa: E402
from config.health import Probes  # noqa: E402
from config.origins import OriginCheckByPath, SameOriginValidator  # noqa: E402
from config.routing import websocket_urlpatterns  # noqa: E402

closecodes.install()  # daphne: let the application close with 1012/1013 (try again later; docs/websocket-api.md)
uploads.install()  # daphne: leave form uploads to Django (config/uploads.py)

# The server process runs the event loop and each sync request on threads of its own, sharing one GIL. A thread that
# wants the GIL back (after every wait, socket or thread hop: dozens per page) waits up to the switch interval while
# another thread computes, so one CPU-bound request (a 10 MB CSV import: 6 s) made every other page wait up to 1.9 s
# at Python's default 5 ms, 0.6 s at 1 ms and 0.07 s at 0.5 ms (tests/faults/test_admin_upload.py), the import taking
# no longer. The interval only matters while threads contend; an idle or single-threaded process never switches.
GIL_SWITCH_INTERVAL_SECONDS = 0.0005
sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)

# At most WS_MAX_CONNECTIONS open WebSockets per process, both paths, counted past the origin check (config/capacity.py).
websocket_app = ConnectionCap(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))

metrics.multiprocess_dir()  # PROMETHEUS_MULTIPROC_DIR set after prometheus_client was imported: refuse to start

application = ProtocolTypeRouter(
    {
        # /healthz, /readyz and /metrics are answered before Django (no host check, redirect, session or axes: config/health.py).
        "http": Probes(django_asgi_app),  # type: ignore[arg-type]  # Django types its scope a dict
        "websocket": OriginCheckByPath(
            # The market API serves bots too: a browser's Origin is checked, a missing one (a bot's) is not.
            {"/ws/v1/market": SameOriginValidator(websocket_app, allow_missing=True)},
            # The dashboard's stream (and any path added later) serves pages only: an Origin is required.
            default=SameOriginValidator(websocket_app),
        ),
    }
)
