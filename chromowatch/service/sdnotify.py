"""systemd's notify protocol (READY, STOPPING, WATCHDOG, STATUS) without a dependency.

The daemon's supervisor loop sends WATCHDOG=1 only while every part of the daemon is alive and
moving, so a stuck daemon is restarted by systemd instead of silently doing nothing. Outside
systemd (no $NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends datagrams to $NOTIFY_SOCKET (a path, or '@name' for the abstract namespace)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        self._watchdog_s = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often systemd expects WATCHDOG=1 (half of WatchdogSec), or None when off."""
        return None if self._watchdog_s is None else self._watchdog_s / 2

    def send(self, *lines: str) -> bool:
        if self.address is None:
            return False
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                # never block the supervisor: a full socket drops the message
                sock.send("\n".join(lines).encode(), socket.MSG_DONTWAIT)
        except OSError as exc:  # systemd gone, socket unreachable or full: never fatal
            log.debug("sd_notify %s failed: %s", lines, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", f"STATUS={status}") if status else self.send("READY=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """WatchdogSec in seconds when it is meant for this process (WATCHDOG_PID, if set)."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None
