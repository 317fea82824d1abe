"""A run to completion waits, bounded, for its report mail, and says what became of it
(against a real SMTP server on 127.0.0.1, as in tests/reports/test_mail.py)."""

from __future__ import annotations

import io
import time
from pathlib import Path

from chromowatch.reports.publish import on_sample_complete
from chromowatch.service.samples import mail_wait_s, settle_outbox
from chromowatch.service.status import print_mail
from chromowatch.settings import MailSettings
from chromowatch.store import Store
from tests.reports.test_mail import Inbox, filled_settings, free_port, start_server


def _settle(tmp_path: Path, port: int, wait_s: float, **mail: object) -> tuple[str, float]:
    settings = filled_settings(tmp_path, port, **mail)
    out = io.StringIO()
    with Store.open(settings.paths.db) as store:
        since = time.time()
        on_sample_complete(settings, store, "ddx11")
        started = time.monotonic()
        print_mail(settle_outbox(settings, store, {"ddx11"}, since=since, wait_s=wait_s), out)
    return out.getvalue().strip(), time.monotonic() - started


def test_the_mail_is_sent_before_the_run_ends(tmp_path: Path) -> None:
    port, inbox = free_port(), Inbox()
    controller = start_server(port, inbox)
    try:
        text, _ = _settle(tmp_path, port, 30)
    finally:
        controller.stop()
    assert len(inbox.envelopes) == 1
    assert text == ("mail for ddx11 sent to ana@lab.example, ben@lab.example, "
                            "lab@lab.example")


def test_a_refused_mail_is_said_at_once(tmp_path: Path) -> None:
    port, inbox = free_port(), Inbox()
    inbox.refuse = True
    controller = start_server(port, inbox)
    try:
        text, took = _settle(tmp_path, port, 30)
    finally:
        controller.stop()
    assert took < 10  # refused for good: no waiting for retries
    assert text.startswith("mail for ddx11 not delivered: SMTPRecipientsRefused")
    assert "550" in text and text.endswith("it stays in the outbox: chromowatch outbox")


def test_a_server_that_stays_down_is_waited_for_within_the_bound(tmp_path: Path) -> None:
    text, took = _settle(tmp_path, free_port(), 1.5, retry_base_s=0.3, retry_max_s=0.3)
    assert 1.4 <= took < 10
    assert text.startswith("mail for ddx11 not delivered: ConnectionRefusedError")
    assert text.endswith("it stays in the outbox: chromowatch outbox")


def test_the_wait_is_a_few_retries_and_at_most_three_minutes() -> None:
    assert mail_wait_s(MailSettings()) == 180
    assert mail_wait_s(MailSettings(retry_base_s=2)) == 6
