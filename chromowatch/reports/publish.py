"""Numbered report versions for the daemon, and their mail.

The daemon calls `on_sample_complete` when a sample completes and whenever its labels or
the current model may have changed: a new numbered version is rendered (and queued for
mail) only when what the report shows would change, which its fingerprint tells.
"""

from __future__ import annotations

import hashlib
import logging

from chromowatch.reports.data import (
    ModelInfo,
    SampleData,
    control_for,
    current_model_info,
    load_sample,
    settings_hash,
)
from chromowatch.reports.mail import compose
from chromowatch.reports.render import file_stem, write_report
from chromowatch.settings import Settings
from chromowatch.store import ReportVersionExists, Store

log = logging.getLogger(__name__)


def fingerprint(settings: Settings, data: SampleData, model: ModelInfo | None,
                control: str | None) -> str:
    """Changes whenever the report would show something else (labels, crops, model, control,
    configuration)."""
    parts = [data.state, model.fingerprint if model else "-", control or "-",
             settings_hash(settings)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def version_label_for(store: Store, sample: str, current: str) -> str:
    """"version N" when the current state is recorded version N, else say it is not one."""
    latest = store.latest_report(sample)
    if latest is None:
        return "rendered on demand (no version recorded yet)"
    if latest.fingerprint == current:
        return f"version {latest.version}"
    return f"rendered on demand (newer than version {latest.version})"


def on_sample_complete(settings: Settings, store: Store, sample: str) -> None:
    """Render a new report version of `sample` and queue its mail, unless nothing it would
    show has changed since the last version (then it does nothing). Called by the daemon
    when a sample completes and when its labels or the current model change."""
    if sample not in store.sample_names():
        # Every file of this sample had the content of another sample's file: stored once,
        # under the first sample, so this one has nothing of its own to report.
        log.warning("sample %s completed with no images of its own (its files duplicate "
                    "other samples' files); no report", sample)
        return
    data = load_sample(settings, store, sample)
    model = current_model_info(settings)
    control = control_for(settings, sample)
    current = fingerprint(settings, data, model, control)
    latest = store.latest_report(sample)
    if latest is not None and latest.fingerprint == current:
        log.info("report of %s: unchanged since version %d", sample, latest.version)
        return
    version = latest.version + 1 if latest is not None else 1
    folder = settings.paths.data / "reports" / file_stem(sample) / f"v{version}"
    formats = list(settings.report.formats)
    if settings.mail.enabled and "pdf" not in formats:
        formats.append("pdf")  # the mail carries the PDF
    files = write_report(settings, store, sample, out_dir=folder, control=control,
                         formats=formats, model=model, version_label=f"version {version}",
                         data=data)
    mail = compose(settings, sample=sample, version=version, report=files)
    try:
        store.record_report(
            sample=sample, version=version, fingerprint=current,
            model=model.name if model else None, control=control,
            html_path=str(files.html) if files.html else None,
            pdf_path=str(files.pdf) if files.pdf else None, mail=mail,
        )
    except ReportVersionExists:
        log.warning("report %s version %d was recorded by another process", sample, version)
        return
    log.info("report of %s: version %d in %s%s", sample, version, folder,
             " (mail queued)" if mail else "")

