"""docs/deploy/nginx/livefolio.conf, run by Debian's nginx (tests/nginx.py) before real daphne processes
configured as docs/deploy/production.env.example says (DEBUG off, TLS at the proxy, TRUSTED_PROXIES).

The failover test: a dashboard in Chromium and two example bots, all over TLS through nginx, while
`run_feeds` publishes synthetic prices; one daphne is killed with SIGKILL mid-stream. The bot that was on
it must resume every channel with nothing missed (its seqs run on without a hole), the bot on the other
daphne must not notice, and the dashboard must reconnect and show prices published after the kill; each
within RECOVERY_BOUND seconds. Which daphne a socket reached is read from each daphne's own /metrics
(no PROMETHEUS_MULTIPROC_DIR here, so each counts only itself). With DEBUG off, every static file the
page loads comes from nginx: a charting library served with the wrong type (.mjs) would stop the
dashboard's whole module graph, and the test with it.
"""

from __future__ import annotations

import http.client
import itertools
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from axes.models import AccessAttempt
from daphne.cli import CommandLineInterface
from django.conf import settings
from django.contrib.auth import get_user_model
from prometheus_client.parser import text_string_to_metric_families

from marketdata import services
from marketdata.models import Feed
from tests import nginx as nginx_helper
from tests.e2e.conftest import CHROMIUM, log_in, wait_for_js
from tests.nginx import Nginx, nginx
from tests.servers import Daphne, process, stack_env

pytestmark = pytest.mark.skipif(nginx_helper.unavailable() is not None, reason=nginx_helper.unavailable() or "")

EXAMPLE = Path(settings.BASE_DIR) / "examples" / "market_client.py"
LIVESOCKET_JS = Path(settings.BASE_DIR) / "static" / "js" / "livesocket.js"
BOT_CHANNELS = ["ticker:BTC-USD", "ticker:ETH-USD", "trades:BTC-USD"]
# Seconds from the kill until a client is current again. Measured 0.12-0.62 s over 27 runs on the 2-core machine,
# beside the other helpers' tests and, in 11 of them, two or three busy loops: the first reconnect waits up to 0.5 s (backoff
# with jitter), then a handshake and a resume. A second try would add up to 1 s more.
RECOVERY_BOUND = 5.0
UPDATE = re.compile(r"^update (\S+) #(\d+)")

# Every /ws/portfolio/ socket's opens and data frames, with the browser's clock (the test's: one machine).
RECORD = """
(() => {
  window.opens = [];
  window.dataAt = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(url, ...rest) {
      super(url, ...rest);
      if (!String(url).includes("/ws/portfolio/")) return;
      this.addEventListener("open", () => window.opens.push(Date.now()));
      this.addEventListener("message", (event) => {
        try {
          const frame = JSON.parse(event.data);
          if (frame.type === "snapshot" || frame.type === "update") window.dataAt.push(Date.now());
        } catch (err) {}
      });
    }
  };
})();
"""


def production_env(*, redis_url: str, layer_prefix: str) -> dict[str, str]:
    """The daphne processes' environment: production's settings for a proxy on this machine (production.env.example)."""
    env = stack_env(redis_url=redis_url, layer_prefix=layer_prefix)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each daphne's /metrics counts only itself
    env.update(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS=nginx_helper.SERVER_NAME,
        TRUSTED_PROXIES="127.0.0.1,::1",
        SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
        SECURE_SSL_REDIRECT="true",
        SECURE_COOKIES="true",
    )
    return env


@contextmanager
def daphnes(count: int, env: dict[str, str], logs: Path) -> Iterator[list[Daphne]]:
    servers = [Daphne(env=env, logs=logs / f"daphne-{n}") for n in range(1, count + 1)]
    with ExitStack() as stack:
        for server in servers:
            server.logs.mkdir(parents=True, exist_ok=True)
            server.start()
            stack.callback(server.stop)
        yield servers


def tls(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def request(
    proxy: Nginx, method: str, path: str, *, source: str = "127.0.0.1", headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One HTTPS request to nginx from the loopback address `source`, with the browser's Host."""
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.https_port, context=tls(proxy.cert), timeout=15, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers={"Host": f"{nginx_helper.SERVER_NAME}:{proxy.https_port}", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def ws_connections(port: int) -> dict[str, float]:
    """Open WebSockets by endpoint on the daphne at `port`, from its own /metrics (asked directly, not through nginx)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "livefolio_ws_connections":
            return {sample.labels["endpoint"]: sample.value for sample in family.samples}
    return {}


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return value


class Bot:
    """examples/market_client.py in its own process, over TLS (trusting the test's certificate, as a bot trusts a CA)."""

    def __init__(self, name: str, url: str, token: str, cert: Path, logs: Path) -> None:
        self.name = name
        self.log = logs / f"bot-{name}.log"
        env = {**os.environ, "LIVEFOLIO_TOKEN": token, "SSL_CERT_FILE": str(cert), "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(EXAMPLE), "--url", url, *BOT_CHANNELS], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=logs
            )

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def updates(self, lines: list[str] | None = None) -> int:
        """The fewest updates any channel got in `lines` (default: all)."""
        lines = self.lines() if lines is None else lines
        return min(sum(1 for line in lines if line.startswith(f"update {ch} ")) for ch in BOT_CHANNELS)

    def since_drop(self) -> list[str]:
        lines = self.lines()
        drops = [i for i, line in enumerate(lines) if line.startswith("disconnected")]
        return lines[drops[0] :] if drops else []

    def resumed(self) -> dict[str, str]:
        return {m[1]: m[2] for line in self.since_drop() if (m := re.match(r"^resumed (\S+) (recovered|snapshot)", line))}

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"bot {self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            return condition()

        wait_until(ready, f"bot {self.name}: {what}", timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=20)

    def check(self, code: int, *, reconnects: str) -> None:
        """A clean exit, no gap, and per channel one epoch whose printed seqs run on one by one: nothing missed, nothing twice."""
        out = self.lines()
        text = "\n".join(out[-60:])
        assert code == 0, text
        assert out[1] == f"authenticated as {settings.DEMO_USERNAME}", text
        assert not [line for line in out if line.startswith(("gap", "checksum", "error", "epoch", "Traceback"))], text
        assert re.fullmatch(rf"summary: \d+ updates, 0 gaps, 0 checksum mismatches, {reconnects} reconnects, .*", out[-1]), text
        for channel in BOT_CHANNELS:
            seqs = [int(m[2]) for line in out if (m := UPDATE.match(line)) and m[1] == channel]
            assert len(seqs) >= 5, (channel, text)
            assert all(b == a + 1 for a, b in itertools.pairwise(seqs)), (channel, seqs)


def price_times(page: Any) -> list[int]:
    """The price timestamps (epoch ms) the dashboard's holdings show."""
    return [int(ts) for ts in page.evaluate("[...document.querySelectorAll('[data-ts]')].map((c) => c.dataset.ts)") if ts]


def directive(name: str) -> str:
    """The one value of `name` in livefolio.conf."""
    [value] = re.findall(rf"^\s*{name} ([^;]+);", nginx_helper.CONF.read_text(), flags=re.MULTILINE)
    return value


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_socket_timeouts_outlast_every_keepalive_the_app_sends() -> None:
    # nginx closes a socket on which nothing passed for these long; each of these sends something sooner.
    daphne_ping = CommandLineInterface().parser.parse_args(["config.asgi:application"]).ping_interval
    ping = re.search(r"pingIntervalMs: ([\d_]+)", LIVESOCKET_JS.read_text())
    assert ping is not None
    page_ping = int(ping[1].replace("_", "")) / 1000
    keepalives = {"daphne ping": daphne_ping, "market heartbeat": settings.MARKET_WS_HEARTBEAT_SECONDS, "page ping": page_ping}
    for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
        assert seconds(directive(timeout)) >= 2 * max(keepalives.values()), (timeout, keepalives)


def test_uploads_up_to_the_apps_limit_pass_nginx() -> None:
    value = directive("client_max_body_size")
    assert value.endswith("m")
    limit = int(value[:-1]) * 1024 * 1024
    # The file plus the form's other fields and multipart framing; not so far above that nginx stops guarding.
    assert settings.PORTFOLIO_IMPORT_MAX_BYTES + 64 * 1024 <= limit <= 2 * settings.PORTFOLIO_IMPORT_MAX_BYTES


def test_static_files_come_from_nginx_with_their_types_and_plain_http_is_redirected(static_root: Path, tmp_path: Path) -> None:
    # No daphne behind it at all: whatever answers here is nginx.
    with nginx(upstreams=[1], static_root=static_root, workdir=tmp_path / "nginx") as proxy:
        for path, content_type in (
            ("vendor/lightweight-charts.mjs", "application/javascript"),
            ("js/dashboard.js", "application/javascript"),
            ("css/app.css", "text/css"),
        ):
            status, headers, body = request(proxy, "GET", f"/static/{path}")
            assert (status, headers["Content-Type"]) == (200, content_type), path
            assert body == (static_root / path).read_bytes(), path
            assert "max-age=3600" in headers["Cache-Control"]

        status, _, _ = request(proxy, "GET", "/metrics")
        assert status == 404  # never through the proxy

        conn = http.client.HTTPConnection("127.0.0.1", proxy.http_port, timeout=10)
        conn.request("GET", "/portfolio/1/?view=EUR", headers={"Host": f"{nginx_helper.SERVER_NAME}:{proxy.http_port}"})
        response = conn.getresponse()
        assert response.status == 301
        assert response.headers["Location"] == f"{proxy.https_url}/portfolio/1/?view=EUR"
        conn.close()


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_the_app_sees_the_client_address_nginx_saw_not_one_the_client_wrote(
    static_root: Path, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    env = production_env(redis_url=redis_url, layer_prefix=layer_prefix)
    with (
        daphnes(1, env, tmp_path) as [server],
        nginx(upstreams=[server.port], static_root=static_root, workdir=tmp_path / "nginx") as proxy,
    ):
        # A client's own X-Forwarded-Proto is overwritten: with SECURE_SSL_REDIRECT on, "http" reaching Django
        # would be answered with a redirect, and no header at all with one to itself, forever.
        spoofed = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.example"}
        status, headers, body = request(proxy, "GET", "/accounts/login/", source="127.0.0.2", headers=spoofed)
        assert status == 200, (status, headers.get("Location"), body[:500])
        cookie = next(c.split(";")[0] for c in headers.get_all("Set-Cookie") or [] if c.startswith("csrftoken="))
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
        assert token is not None
        # A wrong password from 127.0.0.2, whose request claims to come from 203.0.113.7 on behalf of someone.
        form = urlencode({"csrfmiddlewaretoken": token[1].decode(), "username": "charlie", "password": "wrong"}).encode()
        status, _, body = request(
            proxy,
            "POST",
            "/accounts/login/",
            source="127.0.0.2",
            body=form,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": cookie,
                "Origin": proxy.https_url,
                "Referer": f"{proxy.https_url}/accounts/login/",
                "X-Forwarded-For": "203.0.113.7",
            },
        )
        assert status == 200, body[:500]  # the form again, with its error: not a CSRF or host refusal

    # nginx sent "203.0.113.7, 127.0.0.2" from 127.0.0.1: the app believed it (a trusted proxy), and took the
    # rightmost address that is not a proxy of ours: the client nginx saw, not the one the client wrote.
    attempts = list(AccessAttempt.objects.values_list("ip_address", "username"))
    assert attempts == [("127.0.0.2", "charlie")]


@pytest.fixture
def bot_token(demo: dict[str, int]) -> str:
    """The demo data, a faster synthetic feed, and an API token of the demo user; before `browser`, whose loop forbids the ORM."""
    Feed.objects.update_or_create(name="synthetic", defaults={"kind": "synthetic", "options": {"ticks_per_second": 20}, "enabled": True})
    _, token = services.token_create(user=get_user_model().objects.get(username=settings.DEMO_USERNAME), name="bot behind nginx")
    return token


@pytest.mark.browser
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (make test installs it where it can)")
def test_a_daphne_killed_mid_stream_the_dashboard_and_the_bots_recover_through_the_other(
    bot_token: str, browser: Any, static_root: Path, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    token = bot_token
    env = production_env(redis_url=redis_url, layer_prefix=layer_prefix)
    with ExitStack() as stack:
        servers = stack.enter_context(daphnes(2, env, tmp_path))
        stack.enter_context(process([sys.executable, "manage.py", "run_feeds"], env, tmp_path / "run_feeds.log"))
        proxy = stack.enter_context(nginx(upstreams=[s.port for s in servers], static_root=static_root, workdir=tmp_path / "nginx"))

        def placement(endpoint: str) -> list[int]:
            return [int(ws_connections(server.port).get(endpoint, 0)) for server in servers]

        def placed(endpoint: str, total: int) -> list[int] | None:
            """The sockets of `endpoint` per daphne, once there are `total` in all."""
            counts = placement(endpoint)
            return counts if sum(counts) == total else None

        # The dashboard, logged in through nginx; its modules (the charting library's .mjs too) from nginx's /static/.
        context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC")
        stack.callback(context.close)
        context.add_init_script(RECORD)
        page = context.new_page()
        log_in(page, proxy.https_url, settings.DEMO_USERNAME, settings.DEMO_PASSWORD)
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=30_000)
        wait_for_js(page, "window.dataAt.length > 0", timeout=30_000)
        dashboard_on = wait_until(lambda: placed("portfolio", 1), "the dashboard's socket")
        victim_index = dashboard_on.index(1)
        victim, survivor = servers[victim_index], servers[1 - victim_index]

        # One bot before each daphne. nginx's round robin alternates, so the second bot started reaches the other
        # daphne, unless a request of the page (its charts' data) came in between: then one more is started.
        url = proxy.https_url.replace("https", "wss", 1) + "/ws/v1/market"
        bots: dict[int, Bot] = {}
        for attempt in range(1, 7):
            before = placement("market")
            bot = Bot(str(attempt), url, token, proxy.cert, tmp_path)
            stack.callback(bot.stop)
            total = sum(before) + 1
            after = wait_until(lambda total=total: placed("market", total), f"bot {attempt}'s socket")
            reached = [a - b for a, b in zip(after, before, strict=True)].index(1)
            if reached in bots:
                assert bot.stop() == 0
                wait_until(lambda total=total: placed("market", total - 1), f"bot {attempt}'s socket to close")
                continue
            bots[reached] = bot
            if len(bots) == 2:
                break
        assert sorted(bots) == [0, 1], f"nginx sent {attempt} bots in a row to the same daphne: it does not balance"
        hit, spared = bots[victim_index], bots[1 - victim_index]
        for bot in (hit, spared):
            bot.wait(lambda bot=bot: bot.updates() >= 5, "updates on every channel")

        assert victim.proc is not None
        killed_ms = time.time() * 1000
        killed = time.monotonic()
        victim.proc.kill()  # SIGKILL, mid-stream: no close frame, no goodbye
        victim.proc.wait()

        recovery: dict[str, float] = {}
        dashboard_js = f"(() => {{ const o = window.opens.find((t) => t > {killed_ms}); return o ? (window.dataAt.find((t) => t >= o) || null) : null; }})()"
        deadline = killed + 30
        while len(recovery) < 2 and time.monotonic() < deadline:
            if "bot" not in recovery and set(hit.resumed()) == set(BOT_CHANNELS) and hit.updates(hit.since_drop()) >= 1:
                recovery["bot"] = time.monotonic() - killed
            if "dashboard" not in recovery and (first_data := page.evaluate(dashboard_js)):
                recovery["dashboard"] = (first_data - killed_ms) / 1000
            page.wait_for_timeout(25)
        print(f"FIGURE recovery after kill -9 of one of two daphnes behind nginx: {recovery}")
        assert set(recovery) == {"bot", "dashboard"}, f"not recovered within 30 s: {recovery}; bot said:\n" + "\n".join(hit.lines()[-30:])
        assert max(recovery.values()) <= RECOVERY_BOUND, recovery

        # Now on the survivor, and current: the dashboard shows prices published after the kill, and stays live.
        on_survivor = ws_connections(survivor.port)
        assert (on_survivor["market"], on_survivor["portfolio"]) == (2, 1), on_survivor
        wait_for_js(page, f"[...document.querySelectorAll('[data-ts]')].some((c) => Number(c.dataset.ts) > {killed_ms})", timeout=15_000)
        assert max(price_times(page)) > killed_ms
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live")
        for bot in (hit, spared):
            count = bot.updates()
            bot.wait(lambda bot=bot, count=count: bot.updates() >= count + 3, "updates after the recovery")
        codes = {bot: bot.stop() for bot in (hit, spared)}

    # The history held what the bot on the dead daphne missed: every channel recovered, in the same epoch.
    assert hit.resumed() == dict.fromkeys(BOT_CHANNELS, "recovered"), hit.lines()
    hit.check(codes[hit], reconnects="[1-9]")
    spared.check(codes[spared], reconnects="0")
