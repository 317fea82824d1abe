"""The Starlette application: routes and the session middleware."""

from __future__ import annotations

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from chromowatch.settings import Settings
from chromowatch.web import actions, files, pages, service_page, spread
from chromowatch.web.auth import LoginLimiter, secret_key
from chromowatch.web.context import HERE, Web

SESSION_COOKIE = "chromowatch_session"


def create_app(settings: Settings) -> Starlette:
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
        Route("/crops/{crop_id:int}/context.png", spread.context(web)),
        Route("/crops/{crop_id:int}/spread", spread.to_spread(web)),
        Route("/images/{image_id:int}.jpg", spread.spread_image(web)),
        Route("/images/{image_id:int}", spread.spread_page(web)),
        Route("/reports/{report_id:int}/report.{kind}", files.report(web)),
        Route("/api/action", actions.action(web), methods=["POST"]),
        Route("/api/accept", actions.accept(web), methods=["POST"]),
        Route("/api/undo", actions.undo(web), methods=["POST"]),
        Route("/api/images/{image_id:int}/boxes", actions.draw_box(web), methods=["POST"]),
        Route("/service", service_page.service(web)),
        Route("/service/retry", service_page.retry(web), methods=["POST"]),
        Route("/service/models", service_page.models(web), methods=["POST"]),
        Route("/service/retrain", service_page.retrain(web), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(
        SessionMiddleware, secret_key=secret_key(settings), session_cookie=SESSION_COOKIE,
        max_age=int(settings.web.session_hours * 3600), same_site="strict",
        https_only=settings.web.secure_cookies)]
    return Starlette(routes=routes, middleware=middleware)
