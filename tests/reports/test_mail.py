"""Mail delivery against a real SMTP server on 127.0.0.1 (aiosmtpd, started by each test)."""

from __future__ import annotations

import email
import email.policy
import io
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from chromowatch.reports.mail import backoff_s, flush_outbox, header_safe, recipients_for
from chromowatch.reports.publish import on_sample_complete
from chromowatch.settings import MailSettings, Settings, load_settings
from chromowatch.store import Store
from tests.reports.fixtures import make_sample

REPO = Path(__file__).resolve().parents[2]


class Inbox:
    """An aiosmtpd handler that keeps what it receives (and can refuse recipients)."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.refuse = False

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: Any) -> str:
        if self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def messages(self) -> list[EmailMessage]:
        return [email.message_from_bytes(e.content, policy=email.policy.default)
                for e in self.envelopes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, inbox: Inbox, **kwargs: Any) -> Any:
    from aiosmtpd.controller import Controller

    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller


@pytest.fixture()
def smtp() -> Iterator[tuple[int, Inbox]]:
    port, inbox = free_port(), Inbox()
    controller = start_server(port, inbox)
    yield port, inbox
    controller.stop()


def write_config(tmp_path: Path, port: int, **mail: Any) -> Path:
    """A TOML file, so a separate process (a restarted daemon) reads the same settings."""
    options = {"enabled": True, "host": "127.0.0.1", "port": port, "security": "none",
               "sender": "chromowatch@lab.example", "retry_base_s": 0.5, "retry_max_s": 2.0,
               **mail}
    lines = ["[paths]", f'data_dir = "{tmp_path / "data"}"', "[report]", 'formats = ["pdf"]',
             "[mail]"]
    for key, value in options.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f'{key} = "{value}"')
    lines += ["[mail.recipients]", '"ddx*" = ["ana@lab.example", "ben@lab.example"]',
              '"*" = ["lab@lab.example", "ana@lab.example"]']
    path = tmp_path / "chromowatch.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def filled_settings(tmp_path: Path, port: int, sample: str = "ddx11", **mail: Any) -> Settings:
    settings = load_settings(write_config(tmp_path, port, **mail)).settings
    with Store.open(settings.paths.db) as store:
        make_sample(store, tmp_path, sample, ["AABBCCCBBA", "ABCBBCCAAB"] * 2)
    return settings


def test_completed_sample_gives_exactly_one_mail_with_its_pdf(tmp_path: Path,
                                                              smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    settings = filled_settings(tmp_path, port)
    with Store.open(settings.paths.db) as store:
        on_sample_complete(settings, store, "ddx11")
        on_sample_complete(settings, store, "ddx11")  # the daemon asks again: nothing new
        assert flush_outbox(settings, store) == 1
        assert flush_outbox(settings, store) == 0
        counts = store.sample_counts("ddx11")[0]
        [row] = store.outbox_rows()
        assert (row.status, row.attempts, row.version) == ("sent", 1, 1)
    assert len(inbox.envelopes) == 1
    envelope = inbox.envelopes[0]
    assert envelope.mail_from == "chromowatch@lab.example"
    assert sorted(envelope.rcpt_tos) == ["ana@lab.example", "ben@lab.example",
                                         "lab@lab.example"]
    [msg] = inbox.messages()
    assert msg["Subject"] == "[chromowatch] ddx11 report, version 1"
    body = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert body is not None and html is not None
    assert f"Scored {counts.scored} chromosomes" in body.get_content()
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "ddx11.pdf"
    pdf = attachment.get_content()
    assert pdf.startswith(b"%PDF")
    text = re.sub(r"\s+", " ", PdfReader(io.BytesIO(pdf)).pages[0].extract_text())
    assert (f"A {counts.counts['A']}, B {counts.counts['B']}, C {counts.counts['C']};"
            in text)


def test_server_down_then_back_across_a_restart(tmp_path: Path) -> None:
    """Process 1 completes the sample while the server is down, and exits; the server
    comes back; process 2 (the restarted daemon) delivers the mail, once."""
    port = free_port()
    settings = filled_settings(tmp_path, port)
    config = tmp_path / "chromowatch.toml"
    script = (
        "import sys\n"
        "from chromowatch.settings import load_settings\n"
        "from chromowatch.store import Store\n"
        "from chromowatch.reports.publish import on_sample_complete\n"
        "from chromowatch.reports.mail import flush_outbox\n"
        "s = load_settings(sys.argv[1]).settings\n"
        "with Store.open(s.paths.db) as store:\n"
        "    if sys.argv[2] == 'complete':\n"
        "        on_sample_complete(s, store, 'ddx11')\n"
        "    print(flush_outbox(s, store))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(step: str) -> str:
        proc = subprocess.run([sys.executable, "-c", script, str(config), step], env=env,
                              capture_output=True, text=True, timeout=120, check=True)
        return proc.stdout.strip()

    assert run("complete") == "0"
    with Store.open(settings.paths.db) as store:
        [row] = store.outbox_rows()
        assert (row.status, row.attempts) == ("pending", 1)
        assert row.last_error is not None
        assert "Connection refused" in row.last_error or "Errno" in row.last_error
        assert row.next_attempt_at > time.time() - 1
    inbox = Inbox()
    controller = start_server(port, inbox)
    try:
        time.sleep(0.6)  # the first backoff (retry_base_s = 0.5) runs out
        assert run("flush") == "1"
        assert run("flush") == "0"
    finally:
        controller.stop()
    assert len(inbox.envelopes) == 1
    with Store.open(settings.paths.db) as store:
        [row] = store.outbox_rows()
        assert (row.status, row.attempts) == ("sent", 2)


def test_backoff_waits_before_the_next_try(tmp_path: Path) -> None:
    port = free_port()
    settings = filled_settings(tmp_path, port, retry_base_s=30.0, retry_max_s=100.0)
    with Store.open(settings.paths.db) as store:
        on_sample_complete(settings, store, "ddx11")
        assert flush_outbox(settings, store) == 0
        inbox = Inbox()
        controller = start_server(port, inbox)
        try:
            assert flush_outbox(settings, store) == 0  # not due for 30 s
            assert store.retry_mail(time.time()) == 1  # `chromowatch outbox --retry`
            assert flush_outbox(settings, store) == 1
        finally:
            controller.stop()
    assert len(inbox.envelopes) == 1
    mail = MailSettings.model_validate({"retry_base_s": 30, "retry_max_s": 100})
    assert [backoff_s(mail, n) for n in (1, 2, 3, 4)] == [30, 60, 100, 100]


def test_permanent_refusal_is_parked_until_retried(tmp_path: Path,
                                                   smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    settings = filled_settings(tmp_path, port)
    inbox.refuse = True
    with Store.open(settings.paths.db) as store:
        on_sample_complete(settings, store, "ddx11")
        assert flush_outbox(settings, store) == 0
        [row] = store.outbox_rows()
        assert row.status == "failed" and "550" in (row.last_error or "")
        assert store.due_mail(time.time() + 10_000) == []  # parked, not retried by itself
        inbox.refuse = False
        assert store.retry_mail(time.time(), [row.id]) == 1
        assert flush_outbox(settings, store) == 1
    assert len(inbox.envelopes) == 1


def test_no_header_injection_through_sample_names(tmp_path: Path,
                                                  smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    evil = "ddx\r\nBcc: thief@evil.example\r\nSubject: hi"
    settings = filled_settings(tmp_path, port, sample=evil)
    with Store.open(settings.paths.db) as store:
        on_sample_complete(settings, store, evil)
        assert flush_outbox(settings, store) == 1
    [envelope] = inbox.envelopes
    assert "thief@evil.example" not in envelope.rcpt_tos
    [msg] = inbox.messages()
    assert msg["Bcc"] is None and len(msg.get_all("Subject") or []) == 1
    assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
    assert msg["Subject"].startswith("[chromowatch] ddx Bcc: thief@evil.example Subject: hi")
    assert header_safe("a\tb\x00c\u2028d") == "a b c d"
    assert recipients_for(settings.mail, evil) == ("ana@lab.example", "ben@lab.example",
                                                   "lab@lab.example")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed for a cert")
@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_and_login_with_a_password_file(tmp_path: Path, security: str) -> None:
    from aiosmtpd.smtp import AuthResult

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    logins: list[tuple[str, str]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password == b"s3cret")

    port, inbox = free_port(), Inbox()
    tls = ({"tls_context": context, "require_starttls": True} if security == "starttls"
           else {"ssl_context": context})
    # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; with SMTPS the whole
    # connection is TLS already.
    controller = start_server(port, inbox, authenticator=authenticator,
                              auth_require_tls=security == "starttls", **tls)
    (tmp_path / "pw").write_text("s3cret\n")
    try:
        settings = filled_settings(tmp_path, port, security=security, ca_file=str(cert),
                                   username="robot", password_file=str(tmp_path / "pw"))
        with Store.open(settings.paths.db) as store:
            on_sample_complete(settings, store, "ddx11")
            assert flush_outbox(settings, store) == 1
    finally:
        controller.stop()
    assert logins == [("robot", "s3cret")] and len(inbox.envelopes) == 1
