"""Report delivery by email, through an outbox in the database that survives restarts.

A report version's mail is composed once, in full (PDF attached), and stored in the same
transaction that records the version; `flush_outbox` sends what is due. A mail is claimed
before sending, so two senders never send it twice, and marked sent right after the server
accepted it. If the process dies between the two, the mail goes out once more at the next
flush (its Message-ID is the same, so mail clients show it once). While the server is down
the mail waits with exponential backoff; a mail the server refuses for good (5xx) is parked
as failed until `chromowatch outbox --retry`.

Sample names come from folder names: they never reach a header unsanitised.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import time
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from fnmatch import fnmatchcase

from chromowatch.errors import MailError
from chromowatch.reports.render import ReportFiles
from chromowatch.settings import MailSettings, Settings
from chromowatch.store import OutboxMail, Store

log = logging.getLogger(__name__)

SUBJECT_MAX = 120
# CRLF line ends for SMTP; headers (at most SUBJECT_MAX long) are not folded, so the subject
# reads the same in every client.
WIRE = policy.SMTP.clone(max_line_length=998)


def header_safe(text: str, limit: int = SUBJECT_MAX) -> str:
    """One line of printable text: control characters (CR, LF, tab, ...) become spaces."""
    cleaned = "".join(" " if (ord(ch) < 32 or ord(ch) == 127 or ch in "\u2028\u2029\x85")
                      else ch for ch in text)
    cleaned = " ".join(cleaned.split())
    return cleaned[:limit]


def recipients_for(settings: MailSettings, sample: str) -> tuple[str, ...]:
    """Every address of every pattern the sample matches, in order, without repeats."""
    out: list[str] = []
    for pattern, addresses in settings.recipients.items():
        if fnmatchcase(sample, pattern):
            out += [a for a in addresses if a not in out]
    return tuple(out)


def compose(settings: Settings, *, sample: str, version: int,
            report: ReportFiles) -> OutboxMail | None:
    """The mail of one report version, or None when mail is off or nobody is to get it."""
    mail = settings.mail
    if not mail.enabled:
        return None
    to = recipients_for(mail, sample)
    if not to:
        log.warning("mail is enabled but no recipients pattern matches sample %r; report "
                    "version %d is not mailed", sample, version)
        return None
    for address in (*to, mail.sender):
        if header_safe(address, 320) != address or "@" not in address:
            raise MailError(f"not a usable mail address: {address!r}",
                            hint="fix mail.recipients / mail.sender")
    demo = "DEMONSTRATION " if report.demonstration else ""
    subject = header_safe(
        f"{mail.subject_prefix} {demo}{sample} report, version {version}".strip())
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = mail.sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=True)
    domain = mail.sender.rsplit("@", 1)[-1] or "localhost"
    msg["Message-ID"] = make_msgid("chromowatch", domain=domain)
    msg.set_content(report.summary_text)
    if report.summary_html:
        msg.add_alternative(report.summary_html, subtype="html")
    if report.pdf is not None:
        msg.add_attachment(report.pdf.read_bytes(), maintype="application", subtype="pdf",
                           filename=report.pdf.name)
    return OutboxMail(sender=mail.sender, recipients=to, subject=subject,
                      message=msg.as_bytes(policy=WIRE))


def _password(settings: MailSettings) -> str:
    if settings.password_file is not None:
        try:
            return settings.password_file.expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise MailError(f"cannot read mail.password_file {settings.password_file}: {exc}",
                            hint="check the path and that this user may read it") from None
    return settings.password


def _tls_context(settings: MailSettings) -> ssl.SSLContext:
    cafile = str(settings.ca_file.expanduser()) if settings.ca_file else None
    return ssl.create_default_context(cafile=cafile)


def send(settings: MailSettings, sender: str, recipients: list[str], message: bytes) -> None:
    """Hand one message to the SMTP server (STARTTLS, SSL or plain, login when configured)."""
    if not settings.host:
        raise MailError("mail.host is not set", hint="set mail.host (and port, security)")
    server: smtplib.SMTP
    if settings.security == "ssl":
        server = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout_s,
                                  context=_tls_context(settings))
    else:
        server = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
    with server:
        server.ehlo()
        if settings.security == "starttls":
            server.starttls(context=_tls_context(settings))
            server.ehlo()
        if settings.username:
            server.login(settings.username, _password(settings))
        refused = server.sendmail(sender, recipients, message)
        if refused:
            log.warning("the server refused some recipients: %s", refused)


def _permanent(exc: BaseException) -> bool:
    """A refusal that retrying will not fix (a 5xx answer, or a bad configuration)."""
    if isinstance(exc, MailError):
        return True
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code >= 500
    return isinstance(exc, smtplib.SMTPNotSupportedError | ssl.SSLCertVerificationError)


def backoff_s(settings: MailSettings, attempts: int) -> float:
    """Wait after the attempts-th failed try: retry_base_s doubling, capped at retry_max_s."""
    return float(min(settings.retry_max_s, settings.retry_base_s * 2 ** max(0, attempts - 1)))


def flush_outbox(settings: Settings, store: Store) -> int:
    """Send every mail that is due; returns how many were sent. Never raises for a mail
    that cannot be sent: it stays in the outbox (retried later, or parked as failed)."""
    mail = settings.mail
    sent = 0
    for row in store.due_mail(time.time()):
        if not store.claim_mail(row.id, time.time()):
            continue
        recipients = list(row.recipients)
        try:
            send(mail, row.sender, recipients, row.message)
        except (OSError, smtplib.SMTPException, MailError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            if _permanent(exc):
                store.mail_failed(row.id, error)
                log.error("mail of %s version %d refused: %s (kept in the outbox; fix it, then "
                          "`chromowatch outbox --retry`)", row.sample, row.version, error)
            else:
                wait = backoff_s(mail, row.attempts + 1)
                store.mail_retry_later(row.id, error, time.time() + wait)
                log.warning("mail of %s version %d not sent (%s); next try in %.0f s",
                            row.sample, row.version, error, wait)
            continue
        store.mail_sent(row.id, time.time())
        sent += 1
        log.info("mailed %s version %d to %s", row.sample, row.version,
                 ", ".join(recipients))
    return sent

