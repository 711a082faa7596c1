"""Debian's nginx running docs/deploy/nginx/livefolio.conf on free loopback ports, as the current user.

The configuration is the documented file itself; only what must differ on a test machine is rewritten,
and each rewrite must find its line (a changed file fails here, loudly, rather than being tested half):
the daphne ports, the listen ports (loopback only), the host name, the certificate (a self-signed one for
`localhost` and 127.0.0.1, made here), the static directory, and the HTTPS port in the redirect. A small
main configuration around it keeps the pid, the logs and nginx's temporary files in a directory of the
test's own (`nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'`).
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from tests.servers import free_port, wait_for_port

NGINX = Path("/usr/sbin/nginx")
CONF = Path(settings.BASE_DIR) / "docs" / "deploy" / "nginx" / "livefolio.conf"
SERVER_NAME = "localhost"

MAIN = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
{user}
events {{
    worker_connections {worker_connections};
}}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/temp/body;
    proxy_temp_path {dir}/temp/proxy;
    fastcgi_temp_path {dir}/temp/fastcgi;
    uwsgi_temp_path {dir}/temp/uwsgi;
    scgi_temp_path {dir}/temp/scgi;
    include mime.types;
    default_type application/octet-stream;
    include livefolio.conf;
}}
"""


def unavailable() -> str | None:
    """Why nginx cannot run here, or None."""
    if not NGINX.exists():
        return f"Debian's nginx is not installed at {NGINX} (make test installs it where it can)"
    if shutil.which("openssl") is None:
        return "openssl is not installed: no certificate can be made for nginx"
    return None


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for `localhost` and 127.0.0.1, valid two days, and its key: (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    names = f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1"
    key_type = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            *key_type,
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={SERVER_NAME}",
            "-addext",
            names,
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _replace(text: str, pattern: str, replacement: str, *, count: int) -> str:
    new, found = re.subn(pattern, lambda _: replacement, text, flags=re.MULTILINE)
    if found != count:
        raise AssertionError(f"{CONF}: expected {count} line(s) matching {pattern!r}, found {found}: the test cannot render it")
    return new


def render(text: str, *, upstreams: list[int], http_port: int, https_port: int, cert: Path, key: Path, static_root: Path) -> str:
    """livefolio.conf with this machine's ports, name, certificate and static directory."""
    servers = re.findall(r"^\s*server 127\.0\.0\.1:\d+( [^;]*);$", text, flags=re.MULTILINE)
    if not servers:
        raise AssertionError(f"{CONF}: no `server 127.0.0.1:PORT ...;` line in the upstream block")
    lines = "\n".join(f"    server 127.0.0.1:{port}{servers[0]};" for port in upstreams)
    text = re.sub(r"^\s*server 127\.0\.0\.1:\d+ [^;]*;\n", "", text, count=len(servers) - 1, flags=re.MULTILINE)
    text = _replace(text, r"^\s*server 127\.0\.0\.1:\d+ [^;]*;$", lines, count=1)
    text = _replace(text, r"^\s*listen \[::\]:\d+[^;]*;\n", "", count=2)  # no IPv6 needed on loopback
    text = _replace(text, r"^(\s*)listen 80;$", f"    listen 127.0.0.1:{http_port};", count=1)
    text = _replace(text, r"^(\s*)listen 443 ssl http2;$", f"    listen 127.0.0.1:{https_port} ssl http2;", count=1)
    text = _replace(text, r"^(\s*)server_name livefolio\.example\.com;$", f"    server_name {SERVER_NAME};", count=2)
    # The redirect keeps its form; only the test's HTTPS port is not 443.
    text = _replace(text, r"https://\$host\$request_uri", f"https://$host:{https_port}$request_uri", count=1)
    text = _replace(text, r"^\s*ssl_certificate .*;$", f"    ssl_certificate {cert};", count=1)
    text = _replace(text, r"^\s*ssl_certificate_key .*;$", f"    ssl_certificate_key {key};", count=1)
    return _replace(text, r"^\s*alias /srv/livefolio/staticfiles/;$", f"        alias {static_root}/;", count=1)


class Nginx:
    """nginx in front of daphne processes on `upstreams`; `https_url` and `http_url` once started."""

    def __init__(self, *, upstreams: list[int], static_root: Path, workdir: Path, worker_connections: int = 512) -> None:
        self.upstreams = upstreams
        self.worker_connections = worker_connections  # each proxied socket takes two: the client's and daphne's
        self.static_root = static_root
        self.dir = workdir
        self.http_port = free_port()
        self.https_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.cert, self.key = Path(), Path()

    @property
    def https_url(self) -> str:
        return f"https://{SERVER_NAME}:{self.https_port}"

    @property
    def http_url(self) -> str:
        return f"http://{SERVER_NAME}:{self.http_port}"

    @property
    def log(self) -> Path:
        return self.dir / "nginx.log"

    def configure(self) -> Path:
        """Write the main configuration, the rendered livefolio.conf, mime.types and a certificate; the main file's path."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / "temp" / name).mkdir(parents=True, exist_ok=True)
        self.cert, self.key = self_signed_certificate(self.dir)
        site = render(
            CONF.read_text(),
            upstreams=self.upstreams,
            http_port=self.http_port,
            https_port=self.https_port,
            cert=self.cert,
            key=self.key,
            static_root=self.static_root,
        )
        (self.dir / "livefolio.conf").write_text(site)
        shutil.copy("/etc/nginx/mime.types", self.dir / "mime.types")
        # As root, nginx's workers would switch to `nobody`, who may not read the test's files: stay who we are.
        user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
        main = self.dir / "nginx.conf"
        main.write_text(MAIN.format(dir=self.dir, user=user, worker_connections=self.worker_connections))
        return main

    def start(self, timeout: float = 15) -> None:
        main = self.configure()
        args = [str(NGINX), "-p", str(self.dir), "-c", str(main), "-g", "daemon off;"]
        check = subprocess.run([*args[:-2], "-t"], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t refused the configuration:\n{check.stderr}")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.https_port, self.proc, self.log, timeout=timeout)
        wait_for_port(self.http_port, self.proc, self.log, timeout=timeout)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)  # fast shutdown: open WebSockets would hold a graceful one (SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def errors(self) -> str:
        path = self.dir / "error.log"
        return path.read_text() if path.exists() else ""


@contextmanager
def nginx(*, upstreams: list[int], static_root: Path, workdir: Path) -> Iterator[Nginx]:
    server = Nginx(upstreams=upstreams, static_root=static_root, workdir=workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
