"""The web app through Starlette's TestClient: login, CSRF, roles, leases, labels, undo."""

from __future__ import annotations

import json
import re
import stat
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from chromowatch.settings import Settings
from chromowatch.store import Store
from chromowatch.web.app import create_app
from chromowatch.web.auth import SECRET_FILE
from tests.helpers import settings_in
from tests.web.helpers import PASSWORD, add_users, fill_store

XSS = "<script>alert(1)</script>"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CHROMOWATCH_WEB__PAGE_SIZE", "10")
    s = settings_in(tmp_path, monkeypatch)
    fill_store(s, tmp_path)
    fill_store(s, tmp_path / "x", sample=XSS, n=3)
    add_users(s, alice="reviewer", bob="reviewer", vera="viewer", ada="admin")
    return s


def _csrf(client: TestClient, path: str = "/login") -> str:
    page = client.get(path)
    found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def login(settings: Settings, name: str) -> tuple[TestClient, str]:
    client = TestClient(create_app(settings))
    r = client.post("/login", data={"username": name, "password": PASSWORD,
                                    "csrf_token": _csrf(client)}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return client, _csrf(client, "/")


def tiles(client: TestClient, sample: str = "mut") -> list[int]:
    page = client.get(f"/samples/{sample}/review")
    assert page.status_code == 200, page.text
    return [int(x) for x in re.findall(r'data-crop="(\d+)"', page.text)]


def test_anonymous_pages_redirect_to_login(settings: Settings) -> None:
    client = TestClient(create_app(settings))
    for path in ("/", "/samples/mut/review", "/crops/1.png", "/reports/1/report.pdf"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    assert 'name="username"' in client.get("/login").text


def test_post_without_or_with_a_wrong_csrf_token_is_403(settings: Settings) -> None:
    client = TestClient(create_app(settings))
    client.get("/login")
    assert client.post("/login", data={"username": "alice", "password": PASSWORD}
                       ).status_code == 403
    assert client.post("/login", data={"username": "alice", "password": PASSWORD,
                                       "csrf_token": "forged"}).status_code == 403
    client, token = login(settings, "alice")
    body = {"crop_id": 1, "action": "label", "class": "A"}
    assert client.post("/api/action", json=body).status_code == 403
    assert client.post("/api/action", json=body, headers={"X-CSRF-Token": "x"}
                       ).status_code == 403
    assert client.post("/api/action", json=body, headers={"X-CSRF-Token": token}
                       ).status_code == 200


def test_failed_logins_are_rate_limited(settings: Settings) -> None:
    client = TestClient(create_app(settings))
    token = _csrf(client)
    for _ in range(settings.web.login_attempts):
        r = client.post("/login", data={"username": "alice", "password": "wrong password",
                                        "csrf_token": token})
        assert r.status_code == 401 and "Wrong user name or password" in r.text
    r = client.post("/login", data={"username": "alice", "password": PASSWORD,
                                    "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 429


def test_session_cookie_is_httponly_and_strict(settings: Settings) -> None:
    client = TestClient(create_app(settings))
    cookie = client.get("/login").headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    key = settings.paths.data / SECRET_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_labels_record_who_the_prediction_shown_and_undo(settings: Settings) -> None:
    client, token = login(settings, "alice")
    ids = tiles(client)
    assert len(ids) == 10
    h = {"X-CSRF-Token": token}
    assert client.post("/api/action", json={"crop_id": ids[0], "action": "label",
                                            "class": "B"}, headers=h).status_code == 200
    r = client.post("/api/action", json={"crop_id": ids[0], "action": "label", "class": "C"},
                    headers=h)
    assert r.json()["crops"] == [{"crop_id": ids[0], "label": "C", "not_one": False}]
    with Store.open(settings.paths.db) as store:
        [label] = [x for x in store.current_labels() if x.crop_id == ids[0]]
        assert (label.cls, label.who, label.source) == ("C", "alice", "web")
        row = store._conn.execute("SELECT model_version, probs FROM labels WHERE crop_id = ? "
                                  "AND superseded_at IS NULL", (ids[0],)).fetchone()
        assert row[0] == "tiny-v1" and set(json.loads(row[1])) == {"A", "B", "C"}
    r = client.post("/api/undo", headers=h)
    assert r.json()["crops"] == [{"crop_id": ids[0], "label": "B", "not_one": False}]
    r = client.post("/api/undo", headers=h)
    assert r.json()["crops"] == [{"crop_id": ids[0], "label": None, "not_one": False}]
    assert client.post("/api/undo", headers=h).json()["message"] == "nothing to undo"
    with Store.open(settings.paths.db) as store:
        events = [(e.action, e.undoes is not None) for e in store.review_events("alice")]
        assert events == [("label", False), ("label", False), ("undo", True), ("undo", True)]
        assert len(store.label_history(ids[0])) == 3  # B, C, B again; none current now


def test_accept_and_not_one_leave_the_queue(settings: Settings) -> None:
    client, token = login(settings, "alice")
    ids = tiles(client)
    h = {"X-CSRF-Token": token}
    r = client.post("/api/accept", json={"crop_ids": ids[:9]}, headers=h)
    assert r.status_code == 200 and all(c["label"] for c in r.json()["crops"])
    r = client.post("/api/action", json={"crop_id": ids[9], "action": "not-one"}, headers=h)
    assert r.json()["crops"] == [{"crop_id": ids[9], "label": None, "not_one": True}]
    with Store.open(settings.paths.db) as store:
        [counts] = store.sample_counts("mut")
        assert counts.excluded == 1 and sum(counts.counts.values()) == 59
        predicted = {c.id: c.predicted for c in store.sample_crop_rows("mut")}
        labels = {x.crop_id: x.cls for x in store.current_labels()}
    assert all(labels[i] == predicted[i] for i in ids[:9])
    assert not set(tiles(client)) & set(ids)  # answered and not-one crops do not come back
    assert "by alice 9" in client.get("/").text


def test_two_reviewers_get_different_crops(settings: Settings) -> None:
    alice, _ = login(settings, "alice")
    bob, _ = login(settings, "bob")
    a, b = tiles(alice), tiles(bob)
    assert len(a) == len(b) == 10 and not set(a) & set(b)
    assert tiles(alice) == a  # a reviewer's own lease holds on reload


def test_a_viewer_cannot_label(settings: Settings) -> None:
    client, token = login(settings, "vera")
    assert client.get("/samples/mut/review").status_code == 403
    r = client.post("/api/action", json={"crop_id": 1, "action": "label", "class": "A"},
                    headers={"X-CSRF-Token": token})
    assert r.status_code == 403
    assert "Review</a>" not in client.get("/").text


def test_sample_names_are_escaped_and_crops_served_by_id(settings: Settings) -> None:
    client, _ = login(settings, "alice")
    response = client.get("/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page = response.text
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    review = client.get("/samples/%3Cscript%3Ealert(1)%3C%2Fscript%3E/review")
    assert review.status_code == 200 and XSS not in review.text
    ids = tiles(client)
    png = client.get(f"/crops/{ids[0]}.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert client.get("/crops/99999.png").status_code == 404
    assert client.get("/samples/nope/review").status_code == 404


def test_login_next_stays_on_this_site(settings: Settings) -> None:
    client = TestClient(create_app(settings))
    r = client.post("/login", data={"username": "alice", "password": PASSWORD,
                                    "csrf_token": _csrf(client), "next": "//evil.example/"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_a_new_password_or_removal_ends_the_users_sessions(settings: Settings) -> None:
    client, _ = login(settings, "alice")
    assert client.get("/", follow_redirects=False).status_code == 200
    with Store.open(settings.paths.db) as store:
        store.set_password("alice", "scrypt$changed")
    assert client.get("/", follow_redirects=False).status_code == 303
    client, _ = login(settings, "bob")
    with Store.open(settings.paths.db) as store:
        store.remove_user("bob")
    assert client.get("/", follow_redirects=False).status_code == 303


def test_context_view_and_spread_page(settings: Settings) -> None:
    client, _ = login(settings, "alice")
    crop_id = tiles(client)[0]
    png = client.get(f"/crops/{crop_id}/context.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    r = client.get(f"/crops/{crop_id}/spread", follow_redirects=False)
    assert r.status_code == 303
    page = client.get(r.headers["location"].split("#")[0])
    assert page.status_code == 200 and page.text.count('class="box') == 60
    assert f'id="crop-{crop_id}"' in page.text
    jpg = client.get(r.headers["location"].split("#")[0] + ".jpg")
    assert jpg.status_code == 200 and jpg.content[:2] == b"\xff\xd8"
    assert client.get("/images/999").status_code == 404
    assert client.get("/crops/999/context.png").status_code == 404


def _failed_file(settings: Settings) -> int:
    with Store.open(settings.paths.db) as store, store.transaction() as conn:
        return int(conn.execute(
            "INSERT INTO watched_files(path, root, sample, state, attempts, last_error, "
            "first_seen_at, updated_at) VALUES (?, '/in', 'mut', 'failed', 3, ?, 0, 0)",
            (f"/in/mut/{XSS}.png", "cannot decode")).lastrowid or 0)


def test_service_page_and_retry_for_admins(settings: Settings) -> None:
    file_id = _failed_file(settings)
    client, token = login(settings, "vera")
    page = client.get("/service")
    assert page.status_code == 200 and "cannot decode" in page.text and XSS not in page.text
    assert "Retry</button>" not in page.text
    form = {"csrf_token": token, "file": str(file_id)}
    assert client.post("/service/retry", data=form).status_code == 403
    client, token = login(settings, "ada")
    assert client.post("/service/retry", data={"file": str(file_id)}).status_code == 403
    r = client.post("/service/retry", data={"csrf_token": token, "file": str(file_id)},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/service?retried=1"
    with Store.open(settings.paths.db) as store:
        assert store.ledger_counts()["stable"] == 1


def test_one_answer_for_several_crops(settings: Settings) -> None:
    client, token = login(settings, "alice")
    ids = tiles(client)[:3]
    r = client.post("/api/accept", json={"crop_ids": ids, "action": "label", "class": "B"},
                    headers={"X-CSRF-Token": token})
    assert [c["label"] for c in r.json()["crops"]] == ["B", "B", "B"]
    assert client.post("/api/accept", json={"crop_ids": ids, "action": "drop"},
                       headers={"X-CSRF-Token": token}).status_code == 400


def test_deleting_a_sample_removes_its_review_events_and_leases(settings: Settings) -> None:
    client, token = login(settings, "alice")
    crop_id = tiles(client)[0]
    client.post("/api/action", json={"crop_id": crop_id, "action": "not-one"},
                headers={"X-CSRF-Token": token})
    with Store.open(settings.paths.db) as store:
        store.delete_sample("mut")
        assert list(store.review_events()) == []
        assert store.leased_to_others("nobody", 0.0) == set()


def test_trusted_user_header_only_from_trusted_proxies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("CHROMOWATCH_WEB__TRUSTED_USER_HEADER", "Remote-User")
    monkeypatch.setenv("CHROMOWATCH_WEB__TRUSTED_PROXIES", '["10.0.0.0/8"]')
    proxied = settings_in(tmp_path, monkeypatch)
    header = {"Remote-User": "alice"}
    via_proxy = TestClient(create_app(proxied), client=("10.1.2.3", 5000))
    assert via_proxy.get("/", headers=header, follow_redirects=False).status_code == 200
    page = via_proxy.get("/samples/mut/review", headers=header)
    token = re.findall(r'name="csrf-token" content="([^"]+)"', page.text)[0]
    r = via_proxy.post("/api/action", json={"crop_id": tiles_of(page.text)[0],
                                            "action": "label", "class": "A"},
                       headers={**header, "X-CSRF-Token": token})
    assert r.status_code == 200
    assert via_proxy.post("/api/undo", headers=header).status_code == 403  # still needs CSRF
    unknown = via_proxy.get("/", headers={"Remote-User": "mallory"}, follow_redirects=False)
    assert unknown.status_code == 303
    direct = TestClient(create_app(proxied), client=("192.168.1.9", 5000))
    assert direct.get("/", headers=header, follow_redirects=False).status_code == 303


def tiles_of(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-crop="(\d+)"', html)]


def test_a_drawn_box_becomes_a_labelled_crop(settings: Settings) -> None:
    client, token = login(settings, "alice")
    h = {"X-CSRF-Token": token}
    with Store.open(settings.paths.db) as store:
        image_id = store.crop_place(store.review_rows("mut")[0].crop_id)[0]  # type: ignore[index]
    r = client.post(f"/api/images/{image_id}/boxes",
                    json={"x": 100, "y": 20, "w": 30, "h": 30, "class": "C"}, headers=h)
    assert r.status_code == 200, r.text
    crop_id = r.json()["crop_id"]
    with Store.open(settings.paths.db) as store:
        [label] = [x for x in store.current_labels() if x.crop_id == crop_id]
        assert (label.cls, label.who, label.source) == ("C", "alice", "web")
        assert Path(label.file).is_file() and label.bbox.w == 30
        assert store.sample_counts("mut")[0].counts["C"] == 20 + 1
    assert client.get(f"/crops/{crop_id}.png").status_code == 200
    for bad in ({"x": 600, "y": 20, "w": 30, "h": 30, "class": "A"},
                {"x": 1, "y": 1, "w": 2, "h": 30, "class": "A"},
                {"x": 1, "y": 1, "w": 20, "h": 20, "class": "D"}, {"x": "1"}):
        assert client.post(f"/api/images/{image_id}/boxes", json=bad, headers=h
                           ).status_code == 400
    assert client.post(f"/api/images/{image_id}/boxes", json={"x": 1, "y": 1, "w": 20,
                       "h": 20, "class": "A"}).status_code == 403


def test_admins_switch_the_current_ensemble(settings: Settings) -> None:
    from chromowatch.classify.library import ModelLibrary
    from tests.helpers import install_tiny_model

    install_tiny_model(settings.paths.models, "tiny")
    install_tiny_model(settings.paths.models, "tiny2", seed=1)
    library = ModelLibrary(settings.paths.models)
    client, token = login(settings, "alice")
    page = client.get("/service").text
    assert "tiny2 (current)" in page and "Make current" not in page
    assert client.post("/service/models", data={"csrf_token": token, "action": "promote",
                                                "name": "tiny"}).status_code == 403
    client, token = login(settings, "ada")
    assert "Make current" in client.get("/service").text
    r = client.post("/service/models", data={"csrf_token": token, "action": "promote",
                                             "name": "tiny"}, follow_redirects=False)
    assert r.status_code == 303 and library.current_name() == "tiny"
    r = client.post("/service/models", data={"csrf_token": token, "action": "promote",
                                             "name": "../../etc"})
    assert r.status_code == 400 and library.current_name() == "tiny"
    r = client.post("/service/models", data={"csrf_token": token, "action": "rollback"},
                    follow_redirects=False)
    assert r.status_code == 303 and library.current_name() == "tiny2"


def test_admins_can_start_a_retraining_and_only_one_at_a_time(settings: Settings) -> None:
    from jinja2 import Environment

    from chromowatch.web.auth import LoginLimiter
    from chromowatch.web.context import Web
    from chromowatch.web.service_page import _start_training

    client, token = login(settings, "vera")  # a viewer
    assert client.post("/service/retrain", data={"csrf_token": token}).status_code == 403
    client, token = login(settings, "ada")
    assert client.post("/service/retrain", data={}).status_code == 403  # no CSRF token
    assert "Retrain now" in client.get("/service").text
    r = client.post("/service/retrain", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/service?retrain=started"
    web = Web(settings, Environment(), LoginLimiter(5, 60))
    with web.training:  # a retraining still running: a second one is not started
        assert _start_training(web, "ada") is False
    assert _start_training(web, "ada") is True  # no labels here: it ends at once
    deadline = time.monotonic() + 60
    while web.training.locked() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not web.training.locked()
