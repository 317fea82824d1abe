"""Password hashes (scrypt from the standard library) and reading a password file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from chromowatch.errors import UsageError

# scrypt parameters: 2**14 x 8 x 1 is about 16 MiB and a few tens of ms per hash.
N, R, P = 2**14, 8, 1
MIN_LENGTH = 8


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 2**20,
                          dklen=32)


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$hash` (base64): the parameters travel with the hash."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, N, R, P)
    b64 = base64.b64encode
    return f"scrypt${N}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


DUMMY_HASH = hash_password(secrets.token_urlsafe(16))  # verified for unknown users: same time


def read_password_file(path: Path) -> str:
    """The password: the file's first line (so `echo pw > file` works)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the password file {path}: {exc.strerror}",
                         hint="give a readable file whose first line is the password") from None
    lines = text.splitlines()
    password = lines[0] if lines else ""
    if len(password) < MIN_LENGTH:
        raise UsageError(f"the password in {path} is shorter than {MIN_LENGTH} characters",
                         hint="put a longer password on the file's first line")
    return password
