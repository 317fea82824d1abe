"""What every handler shares: settings, templates, the login limiter, a store per request."""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from chromowatch.settings import Settings
from chromowatch.store import Store, UserRow
from chromowatch.web.auth import LoginLimiter, csrf_token

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent


def trusted(host: str, proxies: list[str]) -> bool:
    """Whether `host` is one of the addresses or inside one of the networks."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host in proxies
    for p in proxies:
        try:
            if address in ipaddress.ip_network(p, strict=False):
                return True
        except ValueError:
            continue
    return False
CAN_LABEL = ("reviewer", "admin")
# The app's pages run only its own script and style files: an injected tag would not run.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


@dataclass
class Web:
    """What the handlers share: settings, templates and the login limiter."""

    settings: Settings
    templates: Environment
    limiter: LoginLimiter
    training: threading.Lock = field(default_factory=threading.Lock)  # one retrain at a time

    @contextmanager
    def store(self) -> Iterator[Store]:
        """One connection per request: handlers run on a thread pool."""
        with Store.open(self.settings.paths.db) as store:
            yield store

    def user(self, store: Store, request: Request) -> UserRow | None:
        """The session's user; None without a login, or when the user was removed or their
        password changed since (every session of theirs ends then)."""
        proxied = self.proxy_user(request)
        if proxied is not None:
            return store.user(proxied)
        name = request.session.get("user")
        user = store.user(name) if isinstance(name, str) else None
        if user is None or request.session.get("since") != user.updated_at:
            return None
        return user

    def proxy_user(self, request: Request) -> str | None:
        """The user a trusted reverse proxy names (`[web] trusted_user_header`), or None."""
        header = self.settings.web.trusted_user_header
        if not header or request.client is None:
            return None
        if not trusted(request.client.host, self.settings.web.trusted_proxies):
            return None
        return request.headers.get(header) or None

    def page(self, request: Request, template: str, user: UserRow | None,
             status_code: int = 200, **values: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(
            csrf=csrf_token(request), user=user, **values)
        return HTMLResponse(html, status_code=status_code,
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": CSP,
                                     "X-Content-Type-Options": "nosniff",
                                     "X-Frame-Options": "DENY"})

    def error(self, request: Request, user: UserRow | None, status: int, message: str
              ) -> HTMLResponse:
        return self.page(request, "error.html", user, status_code=status, status=status,
                         message=message)


def to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)
