"""The visdom server `trainkit visdom` runs: visdom's own Application, with three guards.

- **Login.** With VISDOM_USERNAME and VISDOM_PASSWORD set (or `--login`, which
  prompts), every page but the login page and every socket needs the login
  cookie. The cookie is signed with a random secret kept in the env path
  (`COOKIE_SECRET`, mode 0600), not in visdom's fixed `~/.visdom/COOKIE_SECRET`.
- **Same origin.** A browser sends `Origin` (or at least `Referer`) with a
  cross-site request, and a page on any site may POST to localhost without a
  CORS preflight or open a websocket to it. Any request whose `Origin`, or a
  state-changing request whose `Referer`, is not this server's own origin gets a
  403 and reaches no visdom handler. Clients that send neither (trainkit, curl)
  are not browsers and pass.
- **Loopback names.** A server bound to loopback answers only requests whose
  `Host` is a loopback name, so a DNS-rebinding page (`evil.example` resolving
  to 127.0.0.1, same origin as itself) is refused too.

Tornado's debug mode (auto-reload, tracebacks in error pages) that visdom turns
on is turned off.
"""

from __future__ import annotations

import getpass
import os
import secrets
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets
from visdom.server.app import Application as VisdomApplication
from visdom.server.defaults import DEFAULT_ENV_PATH
from visdom.utils.server_utils import hash_password

from trainkit.errors import ConfigError
from trainkit.store.files import write_text_atomic

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
ALL_INTERFACES = ("0.0.0.0", "::")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
MAX_BODY = 100 * 1024 * 1024  # visdom allows 1 GiB; a trainkit run sends at most a few MB at a time

LOGIN_HINT = "set VISDOM_USERNAME and VISDOM_PASSWORD, or give --login to be asked for them"


def refusal(method: str, headers: Any, host: str, protocol: str, loopback: bool) -> str | None:
    """Why a request must be refused (403), or None. `headers` is a mapping with .get."""
    name = urlsplit(f"//{host}").hostname or ""
    if loopback and name not in LOOPBACK_NAMES:
        return f"Host {host!r} is not a loopback name; this server answers only on 127.0.0.1 and localhost"
    own = f"{protocol}://{host}".lower()
    origin = headers.get("Origin")
    if origin is not None:
        return None if origin.lower() == own else f"cross-site request from Origin {origin!r} refused"
    referer = headers.get("Referer")
    if method not in SAFE_METHODS and referer is not None:
        parts = urlsplit(referer)
        if f"{parts.scheme}://{parts.netloc}".lower() != own:
            return f"cross-site request from Referer {referer!r} refused"
    return None


class Refused(tornado.web.RequestHandler):
    def initialize(self, why: str) -> None:
        self.why = why

    def prepare(self) -> None:
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(self.why + "\n")


class _NoDebug(tornado.web.Application):
    """Sits between visdom's Application and tornado's: drops the debug mode visdom forces on."""

    def __init__(self, handlers: Any = None, **settings: Any) -> None:
        settings.update(debug=False, autoreload=False, serve_traceback=False)
        super().__init__(handlers, **settings)


class GuardedApplication(VisdomApplication, _NoDebug):
    def __init__(self, loopback: bool, credential: dict[str, str] | None, cookie_secret: str | None, **kw: Any):
        self.loopback = loopback
        super().__init__(**kw)  # without user_credential: visdom would read ~/.visdom/COOKIE_SECRET
        if credential is not None:
            self.login_enabled = True  # every visdom handler reads these from the app at each request
            self.user_credential = credential
            self.settings["cookie_secret"] = cookie_secret

    def find_handler(self, request: Any, **kwargs: Any) -> Any:
        why = refusal(request.method or "", request.headers, request.host, request.protocol, self.loopback)
        if why is not None:
            return self.get_handler_delegate(request, Refused, {"why": why})
        return super().find_handler(request, **kwargs)


def cookie_secret(env_path: Path) -> str:
    """The secret that signs login cookies: made once per env path, readable by its owner only."""
    path = env_path / "COOKIE_SECRET"
    env_path.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        os.chmod(path, 0o600)
        secret = path.read_text(encoding="utf-8").strip()
        if len(secret) >= 32:
            return secret
    secret = secrets.token_hex(32)
    write_text_atomic(path, secret, mode=0o600)
    return secret


def credentials(prompt: bool) -> tuple[str, str] | None:
    """(username, password) from --login's prompt or VISDOM_USERNAME/VISDOM_PASSWORD; None for no login."""
    if prompt:
        user = input("visdom username: ").strip()
        # a terminal hides what is typed; a pipe gives the password as a line (as `docker login --password-stdin`)
        password = getpass.getpass("visdom password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not user or not password:
            raise ConfigError("visdom --login: give a username and a password")
        return user, password
    user, password = os.environ.get("VISDOM_USERNAME", ""), os.environ.get("VISDOM_PASSWORD", "")
    if bool(user) != bool(password):
        missing = "VISDOM_PASSWORD" if user else "VISDOM_USERNAME"
        raise ConfigError(f"visdom: {missing} is not set; set both VISDOM_USERNAME and VISDOM_PASSWORD for a login")
    return (user, password) if user and password else None


def check_exposure(host: str, login: bool, no_login: bool) -> str | None:
    """Refuse a server open to the network without a login; a warning when --no-login says so."""
    if host in LOOPBACK_HOSTS:
        return None
    if host not in ALL_INTERFACES:
        raise ConfigError(f"--host {host}: visdom listens on loopback (127.0.0.1) or on every interface (0.0.0.0)")
    if login:
        return None
    if not no_login:
        raise ConfigError(
            f"visdom --host {host}: this serves your plots to the network without a login; "
            f"{LOGIN_HINT} (or give --no-login to accept that)"
        )
    return (
        f"warning: visdom on {host} with no login: anyone who can reach this port can read, change "
        "and delete every plot in it"
    )


def serve(port: int, host: str, env_path: str | None, login: tuple[str, str] | None) -> None:
    """Run the server until interrupted."""
    path = Path(env_path or DEFAULT_ENV_PATH).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    credential = None
    if login is not None:
        user, password = login
        credential = {"username": user, "password": hash_password(hash_password(password))}  # visdom's form
    address = "127.0.0.1" if host == "localhost" else ("" if host == "0.0.0.0" else host)
    where = "127.0.0.1" if host == "localhost" else host
    try:  # bound first: a port in use is one line, and --port 0 says the port it got
        sockets = bind_sockets(port, address=address or None)
    except OSError as exc:
        raise ConfigError(
            f"visdom --port {port}: cannot listen on {where}:{port} ({exc.strerror}); another server may hold it: "
            "choose another --port (--port 0 takes a free one)"
        ) from None
    port = sockets[0].getsockname()[1]
    app = GuardedApplication(
        loopback=host in LOOPBACK_HOSTS,
        credential=credential,
        cookie_secret=cookie_secret(path) if credential else None,
        port=port,
        env_path=str(path),
    )
    HTTPServer(app, max_buffer_size=MAX_BODY, max_body_size=MAX_BODY).add_sockets(sockets)
    print(
        f"visdom on http://{where}:{port} ({'login required' if login else 'no login'}; "
        f"envs in {path}; Ctrl-C stops it); a run draws into http://{where}:{port}/env/<its log.visdom.env, else its run directory's name>",
        flush=True,
    )
    IOLoop.current().start()
