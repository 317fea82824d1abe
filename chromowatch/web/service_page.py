"""`/service`: the daemon's status as `chromowatch status` shows it (files per state, backlog,
sources, throughput, model, last retraining, failed and quarantined files with their reasons),
and for admins a retry button per failed file (by its ledger id, never a path sent by the
browser) and for all of them."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from chromowatch.service.status import collect_status, format_status
from chromowatch.web.auth import CSRF_FIELD, csrf_ok
from chromowatch.web.context import Web, to_login

log = logging.getLogger(__name__)


def service(web: Web) -> Callable[[Request], Response]:
    def handle(request: Request) -> Response:
        with web.store() as store:
            user = web.user(store, request)
            if user is None:
                return to_login(request)
            status = collect_status(web.settings, store)
        return web.page(request, "service.html", user, text=format_status(status),
                        problems=status["problems"], is_admin=user.role == "admin",
                        done=request.query_params.get("retried"))
    return handle


def _retry(web: Web, wanted: str) -> int:
    """Retry the failed file with ledger id `wanted`, or all of them ("all")."""
    with web.store() as store:
        if wanted == "all":
            return store.ledger_retry(None, time.time())
        paths = [p["path"] for p in collect_status(web.settings, store)["problems"]
                 if str(p["id"]) == wanted]
        return store.ledger_retry(paths, time.time()) if paths else 0


def retry(web: Web) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        form = await request.form()
        token = form.get(CSRF_FIELD)
        if not csrf_ok(request, token if isinstance(token, str) else None):
            return Response("missing or wrong CSRF token", status_code=403,
                            media_type="text/plain")
        with web.store() as store:
            user = web.user(store, request)
        if user is None:
            return to_login(request)
        if user.role != "admin":
            return web.error(request, user, 403, "only admins retry files")
        wanted = form.get("file")
        n = _retry(web, wanted if isinstance(wanted, str) else "")
        log.info("%s queued %d failed file(s) again from the web app", user.name, n)
        return RedirectResponse(f"/service?retried={n}", status_code=303)
    return handle
