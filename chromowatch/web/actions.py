"""The POSTs: log in and out, and the review actions (label, accept, not-one, undo), each
saved at once. Every POST must carry the session's CSRF token, or it is refused (403)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from chromowatch.errors import StoreError, UsageError
from chromowatch.records import BBox
from chromowatch.store import NOT_ONE, Store, UserRow
from chromowatch.web.auth import CSRF_FIELD, CSRF_HEADER, client_address, csrf_ok, log_in
from chromowatch.web.boxes import add_box
from chromowatch.web.context import CAN_LABEL, Web
from chromowatch.web.pages import safe_next
from chromowatch.web.passwords import DUMMY_HASH, verify_password

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
FORBIDDEN_CSRF = "missing or wrong CSRF token: reload the page and try again"


def _refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _check_password(web: Web, name: str, password: str) -> UserRow | None:
    """The user when the password is theirs (an unknown name costs the same time)."""
    with web.store() as store:
        user = store.user(name)
    ok = verify_password(password, user.password_hash if user else DUMMY_HASH)
    return user if ok else None


def login(web: Web) -> Handler:
    async def handle(request: Request) -> Response:
        form = await request.form()
        if not csrf_ok(request, _text(form.get(CSRF_FIELD))):
            return Response(FORBIDDEN_CSRF, status_code=403, media_type="text/plain")
        name, password = _text(form.get("username")), _text(form.get("password"))
        keys = [f"user:{name}", f"ip:{client_address(request)}"]
        if web.limiter.blocked(keys):
            log.warning("login of %r from %s refused: too many failures", name,
                        client_address(request))
            return web.page(request, "login.html", None, status_code=429, next="/",
                            error="Too many failed logins: wait a few minutes.")
        user = await run_in_threadpool(_check_password, web, name, password) if name else None
        if user is None:
            web.limiter.failed(keys)
            log.info("failed login of %r from %s", name, client_address(request))
            return web.page(request, "login.html", None, status_code=401, next="/",
                            error="Wrong user name or password.")
        web.limiter.succeeded(keys[:1])
        log_in(request, name, user.updated_at)
        return RedirectResponse(safe_next(_text(form.get("next"))), status_code=303)
    return handle


def logout(web: Web) -> Handler:
    async def handle(request: Request) -> Response:
        form = await request.form()
        if not csrf_ok(request, _text(form.get(CSRF_FIELD))):
            return Response(FORBIDDEN_CSRF, status_code=403, media_type="text/plain")
        request.session.clear()
        return RedirectResponse("/login", status_code=303)
    return handle


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


async def _reviewer(web: Web, request: Request) -> tuple[str | None, JSONResponse | None]:
    """The user name when the request may label; else the refusal."""
    if not csrf_ok(request, request.headers.get(CSRF_HEADER)):
        return None, _refuse(403, FORBIDDEN_CSRF)
    with web.store() as store:
        user = web.user(store, request)
    if user is None:
        return None, _refuse(401, "not logged in")
    if user.role not in CAN_LABEL:
        return None, _refuse(403, f"{user.name} is a {user.role}: only reviewers and admins "
                             "label crops")
    return user.name, None


def crop_state(store: Store, crop_id: int) -> dict[str, Any]:
    label, flags = store.crop_answer(crop_id)
    return {"crop_id": crop_id, "label": label, "not_one": NOT_ONE in flags.split(",")}


def _apply(web: Web, who: str, items: list[tuple[int, str, str | None]]) -> dict[str, Any]:
    """Record each (crop id, action, class) as its own event; `accept` is a label with the
    crop's latest predicted class."""
    with web.store() as store:
        out = []
        for crop_id, action, cls in items:
            if action == "accept":
                action, cls = "label", store.predicted_class(crop_id)
            store.review_action(crop_id, action, cls, who=who)
            out.append(crop_state(store, crop_id))
    return {"crops": out, "message": f"saved {len(out)}"}


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def action(web: Web) -> Handler:
    async def handle(request: Request) -> Response:
        who, refused = await _reviewer(web, request)
        if refused or who is None:
            return refused or _refuse(403, "forbidden")
        body = await _json(request)
        crop_id, act, cls = body.get("crop_id"), body.get("action"), body.get("class")
        if not isinstance(crop_id, int) or act not in ("label", "accept", NOT_ONE):
            return _refuse(400, "give crop_id and action (label, accept or not-one)")
        try:
            result = await run_in_threadpool(_apply, web, who, [(crop_id, act, cls)])
        except StoreError as exc:
            return _refuse(400, exc.message)
        return JSONResponse(result)
    return handle


def accept(web: Web) -> Handler:
    """Many crops at once, each its own event: "accept all on this page" (action `accept`,
    the default) or one answer for the selected tiles (`label` with a class, `not-one`)."""
    async def handle(request: Request) -> Response:
        who, refused = await _reviewer(web, request)
        if refused or who is None:
            return refused or _refuse(403, "forbidden")
        body = await _json(request)
        ids, act, cls = body.get("crop_ids"), body.get("action", "accept"), body.get("class")
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            return _refuse(400, "give crop_ids: a list of crop ids")
        if act not in ("label", "accept", NOT_ONE):
            return _refuse(400, "action: label, accept or not-one")
        try:
            result = await run_in_threadpool(_apply, web, who, [(i, act, cls) for i in ids])
        except StoreError as exc:
            return _refuse(400, exc.message)
        return JSONResponse(result)
    return handle


def _undo(web: Web, who: str) -> dict[str, Any]:
    with web.store() as store:
        event = store.undo_last(who)
        if event is None:
            return {"crops": [], "message": "nothing to undo"}
        return {"crops": [crop_state(store, event.crop_id)],
                "message": f"undone: crop {event.crop_id}"}


def undo(web: Web) -> Handler:
    async def handle(request: Request) -> Response:
        who, refused = await _reviewer(web, request)
        if refused or who is None:
            return refused or _refuse(403, "forbidden")
        return JSONResponse(await run_in_threadpool(_undo, web, who))
    return handle


def _box_of(body: dict[str, Any]) -> BBox | None:
    values = [body.get(k) for k in ("x", "y", "w", "h")]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    x, y, w, h = (int(v) for v in values)  # type: ignore[arg-type]
    return BBox(x, y, w, h)


def _draw(web: Web, who: str, image_id: int, bbox: BBox, cls: str) -> dict[str, Any]:
    with web.store() as store:
        crop_id = add_box(web.settings, store, image_id, bbox, cls, who=who)
    return {"crop_id": crop_id, "label": cls, "x": bbox.x, "y": bbox.y, "w": bbox.w,
            "h": bbox.h, "message": f"added crop {crop_id} as {cls}"}


def draw_box(web: Web) -> Handler:
    """`POST /api/images/<id>/boxes` {x, y, w, h, class}: a missed chromosome, drawn."""
    async def handle(request: Request) -> Response:
        who, refused = await _reviewer(web, request)
        if refused or who is None:
            return refused or _refuse(403, "forbidden")
        body = await _json(request)
        bbox, cls = _box_of(body), body.get("class")
        if bbox is None or not isinstance(cls, str):
            return _refuse(400, "give x, y, w, h (integers, the spread's pixels) and class")
        try:
            result = await run_in_threadpool(_draw, web, who,
                                             int(request.path_params["image_id"]), bbox, cls)
        except (UsageError, StoreError) as exc:
            return _refuse(400, exc.message)
        return JSONResponse(result)
    return handle
