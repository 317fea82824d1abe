"""`chromowatch users`, password hashes, and what the store keeps of a label's context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chromowatch.cli import main
from chromowatch.settings import Settings
from chromowatch.store import Store
from chromowatch.web.auth import LoginLimiter
from chromowatch.web.passwords import hash_password, verify_password
from tests.helpers import settings_in
from tests.web.helpers import fill_store


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return settings_in(tmp_path, monkeypatch)


def test_scrypt_hashes_verify_and_are_salted() -> None:
    a, b = hash_password("a long password"), hash_password("a long password")
    assert a != b and a.startswith("scrypt$")
    assert verify_password("a long password", a) and not verify_password("another one", a)
    assert not verify_password("x", "not a hash")


def test_users_add_list_passwd_remove(settings: Settings, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    pw, pw2, short = tmp_path / "pw", tmp_path / "pw2", tmp_path / "short"
    pw.write_text("first password\n")
    pw2.write_text("second password\n")
    short.write_text("short\n")
    assert main(["users", "add", "alice", "--role", "reviewer", "--password-file", str(pw)]) == 0
    assert main(["users", "add", "alice", "--role", "admin", "--password-file", str(pw)]) == 2
    assert main(["users", "add", "bob", "--role", "viewer", "--password-file", str(short)]) == 2
    assert main(["users", "add", "a b", "--role", "viewer", "--password-file", str(pw)]) == 2
    capsys.readouterr()
    assert main(["users", "list"]) == 0
    assert capsys.readouterr().out.startswith("alice\treviewer\t")
    assert main(["users", "passwd", "alice", "--password-file", str(pw2)]) == 0
    with Store.open(settings.paths.db) as store:
        user = store.user("alice")
        assert user is not None and verify_password("second password", user.password_hash)
    assert main(["users", "remove", "alice"]) == 0
    assert main(["users", "remove", "alice"]) == 2
    assert main(["users", "passwd", "nobody", "--password-file", str(pw2)]) == 2


def test_set_labels_keeps_the_prediction_shown(settings: Settings, tmp_path: Path) -> None:
    fill_store(settings, tmp_path, n=3)
    with Store.open(settings.paths.db) as store:
        ids = [r.crop_id for r in store.review_rows("mut")]
        shown = {ids[0]: ("tiny-v1", json.dumps({"A": 0.9, "B": 0.05, "C": 0.05}))}
        assert store.set_labels([(ids[0], "A"), (ids[1], "B")], source="csv", who="x",
                                shown=shown) == (2, 0)
        rows = store._conn.execute("SELECT crop_id, model_version, probs FROM labels "
                                   "ORDER BY crop_id").fetchall()
    assert [tuple(r) for r in rows] == [(ids[0], "tiny-v1", shown[ids[0]][1]),
                                        (ids[1], None, None)]


def test_leases_expire_and_are_kept_from_others(settings: Settings, tmp_path: Path) -> None:
    fill_store(settings, tmp_path, n=4)
    with Store.open(settings.paths.db) as store:
        ids = [r.crop_id for r in store.review_rows("mut")]
        assert store.lease(ids[:2], "alice", 100.0, 400.0) == ids[:2]
        assert store.lease(ids[:3], "bob", 200.0, 500.0) == ids[2:3]
        assert store.leased_to_others("bob", 200.0) == set(ids[:2])
        assert store.lease(ids[:2], "bob", 401.0, 700.0) == ids[:2]  # alice's expired
        assert store.leased_to_others("alice", 401.0) == set(ids[:3])
        assert store.leased_to_others("alice", 401.0, "mut") == set(ids[:3])
        assert store.leased_to_others("alice", 401.0, "other") == set()


def test_login_limiter_window() -> None:
    limiter = LoginLimiter(2, 10.0)
    limiter.failed(["u"], now=0.0)
    assert not limiter.blocked(["u"], now=1.0)
    limiter.failed(["u"], now=1.0)
    assert limiter.blocked(["u", "ip"], now=2.0) and not limiter.blocked(["ip"], now=2.0)
    assert not limiter.blocked(["u"], now=11.5)
