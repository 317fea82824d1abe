"""`/service`: the daemon's status as `chromowatch status` shows it (files per state, backlog,
sources, throughput, model, last retraining, failed and quarantined files with their reasons),
and for admins a retry button per failed file (by its ledger id, never a path sent by the
browser) and for all of them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from chromowatch.classify.library import ModelLibrary
from chromowatch.errors import ChromowatchError, UsageError
from chromowatch.service.status import collect_status, format_status
from chromowatch.web.auth import CSRF_FIELD, csrf_ok
from chromowatch.web.context import Web, to_login

log = logging.getLogger(__name__)


def _ensembles(web: Web) -> list[dict[str, object]]:
    library = ModelLibrary(web.settings.paths.models)
    try:
        current = library.current_name()
    except ChromowatchError:
        current = None
    out: list[dict[str, object]] = []
    for e in library.list_ensembles():
        metrics = e.metrics if isinstance(e.metrics, dict) else {}
        accuracy = metrics.get("holdout_accuracy", metrics.get("accuracy"))
        out.append({"name": e.name, "current": e.name == current, "members": len(e.members),
                    "accuracy": f"{accuracy:.3f}" if isinstance(accuracy, float) else "–"})
    return out


def service(web: Web) -> Callable[[Request], Response]:
    def handle(request: Request) -> Response:
        with web.store() as store:
            user = web.user(store, request)
            if user is None:
                return to_login(request)
            status = collect_status(web.settings, store)
        return web.page(request, "service.html", user, text=format_status(status),
                        problems=status["problems"], is_admin=user.role == "admin",
                        done=request.query_params.get("retried"), ensembles=_ensembles(web),
                        model=request.query_params.get("model"))
    return handle


Checked = tuple[Response | None, dict[str, str]]


def _admin_form(web: Web) -> Callable[[Request], Awaitable[Checked]]:
    """The POSTed form when it carries the CSRF token and comes from an admin; else the
    refusal (403, or the login page)."""
    async def check(request: Request) -> Checked:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return Response("missing or wrong CSRF token", status_code=403,
                            media_type="text/plain"), form
        with web.store() as store:
            user = web.user(store, request)
        if user is None:
            return to_login(request), form
        if user.role != "admin":
            return web.error(request, user, 403, "only admins do this"), form
        form["_user"] = user.name
        return None, form
    return check


def _switch(web: Web, action: str, name: str) -> str:
    """Promote an ensemble (fully checked first) or roll back; returns the current name."""
    library = ModelLibrary(web.settings.paths.models)
    if action == "rollback":
        return library.rollback()
    known = {e.name for e in library.list_ensembles()}
    if name not in known:
        raise UsageError(f"no installed ensemble named {name!r}")
    library.promote(name)
    return name


def models(web: Web) -> Callable[[Request], Awaitable[Response]]:
    """`POST /service/models` (admins): action=promote with name=ENSEMBLE, or rollback."""
    check = _admin_form(web)

    async def handle(request: Request) -> Response:
        refused, form = await check(request)
        if refused is not None:
            return refused
        try:
            now = await run_in_threadpool(_switch, web, form.get("action", ""),
                                          form.get("name", ""))
        except ChromowatchError as exc:
            with web.store() as store:
                user = web.user(store, request)
            return web.error(request, user, 400, str(exc))
        log.info("%s made %s the current ensemble from the web app", form["_user"], now)
        return RedirectResponse("/service?model=" + quote(now, safe=""), status_code=303)
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
    """`POST /service/retry` (admins): file=LEDGER_ID, or file=all."""
    check = _admin_form(web)

    async def handle(request: Request) -> Response:
        refused, form = await check(request)
        if refused is not None:
            return refused
        n = await run_in_threadpool(_retry, web, form.get("file", ""))
        log.info("%s queued %d failed file(s) again from the web app", form["_user"], n)
        return RedirectResponse(f"/service?retried={n}", status_code=303)
    return handle


def _start_training(web: Web, who: str) -> bool:
    """Start `chromowatch train` (its own subprocess, as the nightly job runs it) on a
    background thread; False when a retraining started here is still running. The daemon
    picks up a promoted model and re-scores the stored crops by itself."""
    if not web.training.acquire(blocking=False):
        return False

    def run() -> None:
        from chromowatch.training import runner  # torch, only when asked

        try:
            outcome = runner.train(web.settings)
            log.info("retraining asked for by %s: %s (%s)", who, outcome.status,
                     outcome.message)
        except ChromowatchError as exc:
            log.warning("retraining asked for by %s failed: %s", who, exc)
        finally:
            web.training.release()

    threading.Thread(target=run, name="web-retrain", daemon=True).start()
    return True


def retrain(web: Web) -> Callable[[Request], Awaitable[Response]]:
    """`POST /service/retrain` (admins): train on the confirmed labels now."""
    check = _admin_form(web)

    async def handle(request: Request) -> Response:
        refused, form = await check(request)
        if refused is not None:
            return refused
        started = _start_training(web, form["_user"])
        return RedirectResponse(f"/service?retrain={'started' if started else 'running'}",
                                status_code=303)
    return handle
