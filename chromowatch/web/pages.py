"""The pages (GET): samples, the review grid, the login form."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from chromowatch.errors import UsageError
from chromowatch.records import CLASS_NAMES
from chromowatch.reports.data import ModelInfo, current_model_info
from chromowatch.reports.trust import results_extra
from chromowatch.review.queue import next_for_review
from chromowatch.settings import Settings
from chromowatch.store import SampleCounts, Store
from chromowatch.web.context import CAN_LABEL, Web, to_login

Handler = Callable[[Request], Response]


def safe_next(target: str | None) -> str:
    """Only a path of this site: never another host (`//evil`, `https://...`)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_form(web: Web) -> Handler:
    def handle(request: Request) -> Response:
        return web.page(request, "login.html", None, error=None,
                        next=safe_next(request.query_params.get("next")))
    return handle


def _state(store: Store) -> dict[str, str]:
    out = {}
    for s in store.sample_state_rows():
        out[s.name] = ("complete" if s.completed_at else "closed" if s.closed_at else "open")
    return out


def sample_view(settings: Settings, store: Store, counts: SampleCounts, state: str,
                model: ModelInfo | None) -> dict[str, Any]:
    """One row of the samples page: counts, fractions, the correction, reports."""
    scored = sum(counts.counts.values())
    extra = results_extra(settings, store, counts.sample, model)
    corrected = None
    if extra["corrected"] is not None:
        corrected = [(c, f"{extra['corrected'][c]:.3f}", f"{extra['corrected_interval'][c][0]:.3f}",
                      f"{extra['corrected_interval'][c][1]:.3f}") for c in CLASS_NAMES]
    return {
        "name": counts.sample, "state": state, "images": counts.images,
        "failed": counts.failed_images, "scored": scored, "excluded": counts.excluded,
        "fractions": [(c, f"{counts.counts[c] / scored:.3f}" if scored else "–")
                      for c in CLASS_NAMES],
        "corrected": corrected, "method": extra["correction_method"] or "",
        "note": extra["correction_note"], "reviewed": extra["reviewed"],
        "looks_new": extra["looks_new"], "reports": store.report_versions(counts.sample),
        "reviewers": store.reviewers(counts.sample),
    }


def samples(web: Web) -> Handler:
    def handle(request: Request) -> Response:
        with web.store() as store:
            user = web.user(store, request)
            if user is None:
                return to_login(request)
            states = _state(store)
            model = current_model_info(web.settings)
            rows = [sample_view(web.settings, store, c, states.get(c.sample, "open"), model)
                    for c in store.sample_counts()]
        return web.page(request, "samples.html", user, samples=rows,
                        can_label=user.role in CAN_LABEL)
    return handle


@dataclass(frozen=True)
class Tile:
    crop_id: int
    label: str
    confidence: str
    reason: str


def review_tiles(settings: Settings, store: Store, sample: str, who: str) -> list[Tile]:
    """The next page of the sample's review queue for `who`: crops leased to another
    reviewer are skipped, the ones shown are leased to `who` for `[web] lease_s`."""
    now = time.time()
    others = store.leased_to_others(who, now, sample)
    size = settings.web.page_size
    entries = [e for e in next_for_review(store, settings.review, sample, size + len(others))
               if e.crop_id not in others][:size]
    held = set(store.lease([e.crop_id for e in entries], who, now, now + settings.web.lease_s))
    return [Tile(e.crop_id, e.label, f"{e.probs[e.label]:.2f}", e.reason)
            for e in entries if e.crop_id in held]


def review(web: Web) -> Handler:
    def handle(request: Request) -> Response:
        sample = request.path_params["name"]
        with web.store() as store:
            user = web.user(store, request)
            if user is None:
                return to_login(request)
            if user.role not in CAN_LABEL:
                return web.error(request, user, 403, f"{user.name} is a {user.role}: only "
                                 "reviewers and admins label crops.")
            try:
                tiles = review_tiles(web.settings, store, sample, user.name)
            except UsageError:
                return web.error(request, user, 404, f"no sample named {sample!r}")
        return web.page(request, "review.html", user, sample=sample, tiles=tiles)
    return handle
