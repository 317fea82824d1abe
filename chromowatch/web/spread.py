"""The spread around a crop (`/crops/<id>/context.png`), the spread itself
(`/images/<id>.jpg`) and the spread page (`/images/<id>`: boxes coloured by class, click one
to relabel it). Files are found through the store by id, never from the request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from chromowatch.records import CLASS_COLOURS, FLAGGED_COLOUR, UNLABELLED_COLOUR, BBox
from chromowatch.store import NOT_ONE, Store
from chromowatch.web.context import CAN_LABEL, Web, to_login

Handler = Callable[[Request], Response]
CONTEXT_PX = 160  # the context view's longer side
SPREAD_PX = 1600  # the spread page's image, at most this wide


def _not_found() -> Response:
    return Response("not found", status_code=404, media_type="text/plain")


def _read(path: str) -> Any:
    import cv2

    return cv2.imread(path, cv2.IMREAD_COLOR)


def _encode(img: Any, ext: str) -> bytes:
    import cv2

    ok, buf = cv2.imencode(ext, img)
    return bytes(buf) if ok else b""


def context_png(path: str, box: BBox) -> bytes:
    """The spread around the box (a margin of the box's own size), the box drawn in."""
    import cv2

    img = _read(path)
    if img is None:
        return b""
    h, w = img.shape[:2]
    m = max(box.w, box.h)
    x0, y0 = max(0, box.x - m), max(0, box.y - m)
    x1, y1 = min(w, box.x + box.w + m), min(h, box.y + box.h + m)
    cut = img[y0:y1, x0:x1].copy()
    cv2.rectangle(cut, (box.x - x0, box.y - y0), (box.x - x0 + box.w, box.y - y0 + box.h),
                  (178, 114, 0), max(1, m // 20))
    scale = CONTEXT_PX / max(cut.shape[:2])
    if scale < 1:
        cut = cv2.resize(cut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return _encode(cut, ".png")


def _picture(web: Web, render: Callable[[Store, int], bytes], key: str, media_type: str
             ) -> Handler:
    """A logged-in user's picture of the store object whose id is the path's `key`;
    404 when it or its file is gone."""
    def handle(request: Request) -> Response:
        with web.store() as store:
            if web.user(store, request) is None:
                return to_login(request)
            data = render(store, int(request.path_params[key]))
        if not data:
            return _not_found()
        return Response(data, media_type=media_type,
                        headers={"Cache-Control": "private, max-age=3600"})
    return handle


def _context_of(store: Store, crop_id: int) -> bytes:
    place = store.crop_place(crop_id)
    return context_png(place[1], place[2]) if place else b""


def context(web: Web) -> Handler:
    return _picture(web, _context_of, "crop_id", "image/png")


def spread_jpg(path: str) -> bytes:
    import cv2

    img = _read(path)
    if img is None:
        return b""
    if img.shape[1] > SPREAD_PX:
        scale = SPREAD_PX / img.shape[1]
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return _encode(img, ".jpg")


def _spread_of(store: Store, image_id: int) -> bytes:
    place = store.image_place(image_id)
    return spread_jpg(place[1]) if place else b""


def spread_image(web: Web) -> Handler:
    return _picture(web, _spread_of, "image_id", "image/jpeg")


@dataclass(frozen=True)
class Box:
    crop_id: int
    bbox: BBox
    shown: str  # the confirmed class, else the prediction; "X" for not one chromosome
    confirmed: bool
    colour: str


def _box(crop: Any) -> Box:
    if NOT_ONE in crop.flags.split(","):
        return Box(crop.id, BBox(crop.x, crop.y, crop.w, crop.h), "X", True, FLAGGED_COLOUR)
    shown = crop.confirmed or crop.predicted or ""
    colour = CLASS_COLOURS.get(shown, UNLABELLED_COLOUR) if not (
        crop.flags and not crop.confirmed) else FLAGGED_COLOUR
    return Box(crop.id, BBox(crop.x, crop.y, crop.w, crop.h), shown, bool(crop.confirmed),
               colour)


def spread_page(web: Web) -> Handler:
    def handle(request: Request) -> Response:
        image_id = int(request.path_params["image_id"])
        with web.store() as store:
            user = web.user(store, request)
            if user is None:
                return to_login(request)
            place = store.image_place(image_id)
            if place is None:
                return web.error(request, user, 404, f"no finished image with id {image_id}")
            boxes = [_box(c) for c in store.sample_crop_rows(place[0])
                     if c.image_id == image_id]
        return web.page(request, "spread.html", user, image_id=image_id, sample=place[0],
                        path=place[1], width=place[2], height=place[3], boxes=boxes,
                        can_label=user.role in CAN_LABEL)
    return handle


def to_spread(web: Web) -> Handler:
    """`/crops/<id>/spread`: the spread page of the image the crop was cut from."""
    def handle(request: Request) -> Response:
        crop_id = int(request.path_params["crop_id"])
        with web.store() as store:
            if web.user(store, request) is None:
                return to_login(request)
            place = store.crop_place(crop_id)
        if place is None:
            return _not_found()
        return RedirectResponse(f"/images/{place[0]}#crop-{crop_id}", status_code=303)
    return handle
