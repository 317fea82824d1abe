"""Crop images and report files, served by id from what the store records: a path never
comes from the request."""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from chromowatch.web.context import Web, to_login

Handler = Callable[[Request], Response]


def _file(path: str | None) -> Response:
    if not path or not Path(path).is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    media = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=3600",
                                                         "X-Content-Type-Options": "nosniff"})


def crop(web: Web) -> Handler:
    def handle(request: Request) -> Response:
        with web.store() as store:
            if web.user(store, request) is None:
                return to_login(request)
            return _file(store.crop_file(int(request.path_params["crop_id"])))
    return handle


def report(web: Web) -> Handler:
    def handle(request: Request) -> Response:
        kind = request.path_params["kind"]
        with web.store() as store:
            if web.user(store, request) is None:
                return to_login(request)
            row = store.report_version(int(request.path_params["report_id"]))
        if row is None or kind not in ("html", "pdf"):
            return Response("not found", status_code=404, media_type="text/plain")
        return _file(row.html_path if kind == "html" else row.pdf_path)
    return handle
