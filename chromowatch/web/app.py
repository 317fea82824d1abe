"""The Starlette application: routes, the session middleware, and what every handler shares."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from chromowatch.settings import Settings
from chromowatch.store import Store, UserRow
from chromowatch.web.auth import LoginLimiter, csrf_token, secret_key

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "chromowatch_session"
CAN_LABEL = ("reviewer", "admin")


@dataclass
class Web:
    """What the handlers share: settings, templates and the login limiter."""

    settings: Settings
    templates: Environment
    limiter: LoginLimiter

    @contextmanager
    def store(self) -> Iterator[Store]:
        """One connection per request: handlers run on a thread pool."""
        with Store.open(self.settings.paths.db) as store:
            yield store

    def user(self, store: Store, request: Request) -> UserRow | None:
        name = request.session.get("user")
        return store.user(name) if isinstance(name, str) else None

    def page(self, request: Request, template: str, user: UserRow | None,
             status_code: int = 200, **values: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(
            csrf=csrf_token(request), user=user, **values)
        return HTMLResponse(html, status_code=status_code,
                            headers={"Cache-Control": "no-store",
                                     "X-Content-Type-Options": "nosniff",
                                     "X-Frame-Options": "DENY"})

    def error(self, request: Request, user: UserRow | None, status: int, message: str
              ) -> HTMLResponse:
        return self.page(request, "error.html", user, status_code=status, status=status,
                         message=message)


def to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)


def create_app(settings: Settings) -> Starlette:
    from chromowatch.web import actions, files, pages

    templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                            autoescape=select_autoescape(default=True))
    web = Web(settings, templates,
              LoginLimiter(settings.web.login_attempts, settings.web.login_window_s))
    routes = [
        Route("/", pages.samples(web)),
        Route("/login", pages.login_form(web), methods=["GET"]),
        Route("/login", actions.login(web), methods=["POST"]),
        Route("/logout", actions.logout(web), methods=["POST"]),
        Route("/samples/{name:path}/review", pages.review(web)),
        Route("/crops/{crop_id:int}.png", files.crop(web)),
        Route("/reports/{report_id:int}/report.{kind}", files.report(web)),
        Route("/api/action", actions.action(web), methods=["POST"]),
        Route("/api/accept", actions.accept(web), methods=["POST"]),
        Route("/api/undo", actions.undo(web), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(
        SessionMiddleware, secret_key=secret_key(settings), session_cookie=SESSION_COOKIE,
        max_age=int(settings.web.session_hours * 3600), same_site="strict",
        https_only=settings.web.secure_cookies)]
    return Starlette(routes=routes, middleware=middleware)
