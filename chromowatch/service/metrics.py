"""Prometheus text-format metrics of the daemon: served on a local port and/or written to a file.

The supervisor renders a snapshot every few seconds; the HTTP thread only hands out the last
rendering, so a scrape never touches the database or blocks the daemon. Off by default.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from chromowatch.files import atomic_write_text
from chromowatch.settings import MetricsSettings

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


class Family:
    """One metric name with its help, type and samples."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list[tuple[dict[str, str], float]] = []

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((labels, float(value)))
        return self

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            lines.append(f"{self.name}{_labels(labels)} {value:.10g}")
        return "\n".join(lines)


def render(families: Iterable[Family]) -> str:
    return "\n".join(f.render() for f in families) + "\n"


def daemon_families(snapshot: Mapping[str, Any]) -> list[Family]:
    """The daemon's metrics from the snapshot the supervisor collects."""
    fams = [
        Family("chromowatch_up", "gauge", "1 while the daemon runs.").add(1),
        Family("chromowatch_start_time_seconds", "gauge", "When the daemon started (unix time).")
        .add(snapshot["started_at"]),
    ]
    files = Family("chromowatch_files_total", "counter",
                   "Files finished by this daemon process, by outcome.")
    for outcome, n in sorted(snapshot["outcomes"].items()):
        files.add(n, outcome=outcome)
    fams.append(files)
    fams.append(Family("chromowatch_crops_total", "counter",
                       "Crops classified and stored by this daemon process.")
                .add(snapshot["crops"]))
    states = Family("chromowatch_ledger_files", "gauge", "Files in the ledger, by state.")
    for state, n in snapshot["ledger"].items():
        states.add(n, state=state)
    fams.append(states)
    fams.append(Family("chromowatch_backlog_files", "gauge",
                       "Files seen but not finished (waiting, in flight or to be retried).")
                .add(snapshot["backlog"]))
    fams.append(Family("chromowatch_throughput_files_per_second", "gauge",
                       "Files finished per second over the last minute.")
                .add(snapshot["files_per_s"]))
    fams.append(Family("chromowatch_throughput_crops_per_second", "gauge",
                       "Crops stored per second over the last minute.")
                .add(snapshot["crops_per_s"]))
    up = Family("chromowatch_source_up", "gauge", "1 when a watched folder is online and readable.")
    for source in snapshot["sources"]:
        up.add(1 if source["online"] else 0, root=source["root"])
    fams.append(up)
    model = Family("chromowatch_model_info", "gauge", "The ensemble in use (value 1).")
    if snapshot.get("model_version"):
        model.add(1, name=snapshot.get("model_name") or "", version=snapshot["model_version"])
    fams.append(model)
    fams.append(Family("chromowatch_model_reloads_total", "counter",
                       "Times a newly promoted ensemble was loaded without a restart.")
                .add(snapshot["model_reloads"]))
    fams.append(Family("chromowatch_worker_replacements_total", "counter",
                       "Worker processes replaced after a hang or a crash.")
                .add(snapshot["worker_replacements"]))
    if snapshot.get("retrain_last_success") is not None:
        fams.append(Family("chromowatch_retrain_last_success_time_seconds", "gauge",
                           "When retraining last succeeded (unix time).")
                    .add(snapshot["retrain_last_success"]))
    return fams


def write_textfile(path: Path, text: str) -> None:
    """Atomically replace the file (node_exporter's textfile collector reads it any time)."""
    atomic_write_text(path, text)


class MetricsServer:
    """GET /metrics on host:port, answering with the latest rendering."""

    def __init__(self, host: str, port: int) -> None:
        self._text = "# no metrics yet\n"
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = outer.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics: " + format, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics",
                                        daemon=True)

    @property
    def text(self) -> str:
        with self._lock:
            return self._text

    def update(self, text: str) -> None:
        with self._lock:
            self._text = text

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class MetricsPublisher:
    """The daemon's metrics as [metrics] asks: served on a port, written to a file, or off."""

    def __init__(self, settings: MetricsSettings) -> None:
        self.settings = settings
        self._server: MetricsServer | None = None

    def start(self) -> None:
        m = self.settings
        if not m.port:
            return
        try:
            server = MetricsServer(m.host, m.port)
        except OSError as exc:
            log.error("metrics: cannot listen on %s:%d (%s); metrics are off", m.host, m.port, exc)
            return
        server.start()
        self._server = server
        log.info("metrics on http://%s:%d/metrics", m.host, server.port)

    def publish(self, snapshot: Mapping[str, Any]) -> None:
        path = self.settings.textfile
        if self._server is None and path is None:
            return
        text = render(daemon_families(snapshot))
        if self._server is not None:
            self._server.update(text)
        if path is not None:
            try:
                write_textfile(path, text)
            except OSError as exc:
                log.error("metrics: cannot write %s: %s", path, exc)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
