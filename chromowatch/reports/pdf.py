"""Render one report's HTML to PDF with weasyprint, in a process of its own.

Run as `python -m chromowatch.reports.pdf HTML PDF --root DIR`; `render_pdf` starts it. A
separate process bounds weasyprint's time and memory (the caller kills it on timeout) and
keeps a crash out of the daemon. The URL fetcher only serves files inside the report's own
folder: a report shows crops and thumbnails it was given, never anything from the network or
elsewhere on disk.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chromowatch.errors import ReportError
from chromowatch.files import atomic_replace

log = logging.getLogger(__name__)


class FetchRefused(ValueError):
    """A report asked for a resource outside its own folder."""


def allowed_path(url: str, root: Path) -> Path:
    """The local file a file:// URL names, when it lies inside root; else FetchRefused."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme.lower() != "file" or parsed.netloc not in ("", "localhost"):
        raise FetchRefused(f"refused {url!r}: a report may only use its own files")
    path = Path(urllib.request.url2pathname(parsed.path)).resolve()
    if not path.is_relative_to(root.resolve()):
        raise FetchRefused(f"refused {url!r}: outside the report folder {root}")
    return path


def make_fetcher(root: Path) -> Any:
    """A weasyprint URL fetcher limited to root (for the old function API and the new class)."""
    from weasyprint import urls

    if hasattr(urls, "URLFetcher"):

        class RootFetcher(urls.URLFetcher):
            def fetch(self, url: str, headers: Any = None) -> Any:
                allowed_path(url, root)
                return super().fetch(url, headers)

        return RootFetcher(fail_on_errors=False)

    default: Callable[..., Any] = urls.default_url_fetcher

    def fetch(url: str, *args: Any, **kwargs: Any) -> Any:
        allowed_path(url, root)
        return default(url, *args, **kwargs)

    return fetch


def render(html_path: Path, pdf_path: Path, root: Path) -> None:
    """Write pdf_path from html_path; the PDF appears whole or not at all."""
    import weasyprint

    document = weasyprint.HTML(
        filename=str(html_path), base_url=str(root), url_fetcher=make_fetcher(root)
    )
    part = pdf_path.with_name(pdf_path.name + ".part")
    document.write_pdf(str(part))
    atomic_replace(part, pdf_path)


def render_pdf(html_path: Path, pdf_path: Path, *, root: Path, timeout_s: float) -> None:
    """Run this module in a child process; ReportError on failure or timeout."""
    # -P: a chromowatch/ folder in the working directory (a clone) cannot shadow the package
    cmd = [sys.executable, "-P", "-m", "chromowatch.reports.pdf", str(html_path), str(pdf_path),
           "--root", str(root)]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        raise ReportError(
            f"the PDF renderer took longer than {timeout_s:g} s for {html_path} and was stopped",
            hint="raise report.render_timeout_s, or lower report.max_overlays and the gallery "
            "sizes",
        ) from None
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-5:]
        raise ReportError(
            f"the PDF renderer failed for {html_path} (exit {proc.returncode}): "
            + " | ".join(tail),
            hint="the HTML report was written; check that weasyprint and its fonts are "
            "installed (scripts/setup.sh)",
        )
    log.info("rendered %s in %.1f s", pdf_path, time.monotonic() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chromowatch.reports.pdf")
    parser.add_argument("html")
    parser.add_argument("pdf")
    parser.add_argument("--root", required=True, help="the only folder resources may come from")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    render(Path(args.html), Path(args.pdf), Path(args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
