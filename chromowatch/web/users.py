"""`chromowatch users add|list|remove|passwd`: the people who may log in to the web app."""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path

from chromowatch.errors import UsageError
from chromowatch.store import Store
from chromowatch.web.passwords import hash_password, read_password_file

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise UsageError(f"invalid user name {name!r}",
                         hint="use 1-64 letters, digits, '.', '_', '-' or '@'")
    return name


def add_user(store: Store, name: str, role: str, password_file: Path) -> str:
    store.add_user(check_name(name), role, hash_password(read_password_file(password_file)))
    log.info("user %s added (%s)", name, role)
    return f"user {name} added ({role})"


def list_users(store: Store) -> list[str]:
    return [f"{u.name}\t{u.role}\tadded {dt.datetime.fromtimestamp(u.created_at):%Y-%m-%d %H:%M}"
            for u in store.users()]


def remove_user(store: Store, name: str) -> str:
    if not store.remove_user(name):
        raise UsageError(f"no user named {name!r}", hint="`chromowatch users list` lists them")
    return f"user {name} removed (their labels stay, under their name)"


def set_password(store: Store, name: str, password_file: Path) -> str:
    password = read_password_file(password_file)
    if not store.set_password(name, hash_password(password)):
        raise UsageError(f"no user named {name!r}", hint="`chromowatch users list` lists them")
    return f"password of {name} changed"
