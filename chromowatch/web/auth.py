"""Sessions, CSRF tokens, the session key and the login rate limit.

The session is Starlette's signed cookie (HttpOnly, SameSite=Strict, Secure with
`[web] secure_cookies`); it holds the user name and a CSRF token. Every POST carries the
token (form field `csrf_token` or header `X-CSRF-Token`); without it, or with a wrong one,
403. The user's role is read from the store on every request, so a removed user is out.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections import defaultdict, deque

from starlette.requests import Request

from chromowatch.errors import ConfigError
from chromowatch.settings import Settings

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SECRET_FILE = "web-secret"


def secret_key(settings: Settings) -> str:
    """`[web] secret_key`, else the key in <data_dir>/web-secret, made once (mode 0600)."""
    if settings.web.secret_key:
        return settings.web.secret_key
    path = settings.paths.data / SECRET_FILE
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        key = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot keep the web app's session key in {path}: {exc.strerror}",
                          hint="make paths.data_dir writable, or set [web] secret_key") from None
    if not key:
        raise ConfigError(f"{path} is empty", hint="delete it; a new key is made at start")
    return key


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made when the session has none."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


def csrf_ok(request: Request, sent: str | None) -> bool:
    token = request.session.get(CSRF_FIELD)
    return isinstance(token, str) and isinstance(sent, str) and hmac.compare_digest(token, sent)


def log_in(request: Request, name: str, updated_at: float) -> None:
    """A fresh session for the user (a new CSRF token too: nothing carries over). It holds
    when the user's password was last set, so a new password ends older sessions."""
    request.session.clear()
    request.session["user"] = name
    request.session["since"] = updated_at
    request.session[CSRF_FIELD] = secrets.token_urlsafe(32)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


class LoginLimiter:
    """Failed logins per key (a user name, a client address) in a sliding window."""

    def __init__(self, attempts: int, window_s: float) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures[key]
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def blocked(self, keys: list[str], now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return any(len(self._recent(k, now)) >= self.attempts for k in keys)

    def failed(self, keys: list[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for k in keys:
            self._recent(k, now).append(now)

    def succeeded(self, keys: list[str]) -> None:
        for k in keys:
            self._failures.pop(k, None)
