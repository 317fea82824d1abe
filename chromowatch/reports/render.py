"""Per-sample reports (HTML, PDF) and the summary of several samples side by side.

The store gives plain rows, aggregate.py turns them into statistics, jinja2 (autoescape on)
turns those into HTML, and weasyprint turns the HTML into PDF in a separate process with a
timeout, fetching only the report's own files. A report lives in a folder of its own with
its assets (crop images, spread thumbnails) so the HTML can be opened or copied as is.

The daemon calls `on_sample_complete` when a sample completes and whenever its labels or
the current model may have changed: a new numbered version is rendered (and queued for
mail) only when what the report shows would change.

A model's holdout confusion matrix is read from its ensemble manifest's metrics, under
"confusion_matrix" (or "confusion"), directly or one level down (e.g. metrics["holdout"]):
3x3 counts, rows the true class A, B, C and columns the predicted class.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from importlib.resources import files
from pathlib import Path
from typing import Any

from chromowatch import __version__
from chromowatch.errors import ChromowatchError, ReportError
from chromowatch.records import CLASS_NAMES
from chromowatch.reports.charts import CLASS_COLOURS, GREY, Series, grouped_bars, strip_plot
from chromowatch.reports.stats import (
    GROUPS,
    Adjusted,
    Comparison,
    CropObservation,
    SampleStats,
    adjust_for_confusion,
    compare,
    summarize,
)
from chromowatch.settings import Settings
from chromowatch.store import Store

log = logging.getLogger(__name__)

FORMATS = ("html", "pdf")
BOX_COLOURS_BGR = {  # the chart colours, for OpenCV drawing on spread thumbnails
    "A": (178, 114, 0),
    "B": (0, 159, 230),
    "C": (0, 94, 213),
    None: (150, 150, 150),
}
OVERLAY_WIDTH = 640  # pixels of a spread thumbnail, at most
OVERLAY_HEIGHT = 480
OVERLAY_MARGIN = 40  # spread pixels around the chromosomes' region


# -- the model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """The current ensemble as a report shows it."""

    name: str
    created: str
    members: int
    metrics: dict[str, Any]  # scalar holdout metrics, for display
    confusion: list[list[float]] | None  # rows true A, B, C; columns predicted
    fingerprint: str  # changes when the manifest (members, metrics) changes


def confusion_from_metrics(metrics: Mapping[str, Any] | None) -> list[list[float]] | None:
    """The 3x3 holdout confusion matrix in an ensemble's metrics, when there is one."""
    if not metrics:
        return None
    places: list[Mapping[str, Any]] = [metrics]
    places += [v for v in metrics.values() if isinstance(v, Mapping)]
    for place in places:
        for key in ("confusion_matrix", "confusion"):
            value = place.get(key)
            if (
                isinstance(value, list)
                and len(value) == 3
                and all(isinstance(r, list) and len(r) == 3 for r in value)
                and all(isinstance(v, int | float) for r in value for v in r)
            ):
                return [[float(v) for v in r] for r in value]
    return None


def current_model_info(settings: Settings) -> ModelInfo | None:
    """The current ensemble's manifest (no torch needed); None when no model is installed."""
    from chromowatch.classify.library import ModelLibrary

    library = ModelLibrary(settings.paths.models)
    try:
        info = library.ensemble_info(settings.classify.model)
        manifest = info.path.read_bytes()
    except (ChromowatchError, OSError) as exc:
        log.info("no model information for the report: %s", exc)
        return None
    metrics = dict(info.metrics or {})
    return ModelInfo(
        name=info.name,
        created=info.created,
        members=len(info.members),
        metrics={k: v for k, v in metrics.items() if isinstance(v, int | float | str)},
        confusion=confusion_from_metrics(metrics),
        fingerprint=hashlib.sha256(manifest).hexdigest()[:16],
    )


# -- gathering a sample ----------------------------------------------------------------


@dataclass(frozen=True)
class CropView:
    """One crop for galleries and overlays."""

    crop_id: int
    image_id: int
    file: str
    bbox: tuple[int, int, int, int]
    counted_as: str | None
    excluded: str | None
    predicted: str | None
    confirmed: str | None
    probs: tuple[float, float, float]

    @property
    def confidence(self) -> float:
        return max(self.probs) if self.predicted else 0.0


@dataclass(frozen=True)
class SampleData:
    """Everything about one sample a report needs, read from the store once."""

    name: str
    stats: SampleStats
    crops: tuple[CropView, ...]
    images: tuple[dict[str, Any], ...]
    model_versions: dict[str, int]  # prediction model version -> crops
    state: str  # hash of what the statistics depend on


def load_sample(settings: Settings, store: Store, sample: str) -> SampleData:
    rows = store.sample_crop_rows(sample)
    min_conf = settings.report.min_confidence
    observations: list[CropObservation] = []
    views: list[CropView] = []
    versions: Counter[str] = Counter()
    digest = hashlib.sha256()
    for r in rows:
        flags = frozenset(f for f in (r["flags"] or "").split(",") if f)
        probs = (float(r["p_a"] or 0), float(r["p_b"] or 0), float(r["p_c"] or 0))
        obs = CropObservation(
            crop_id=int(r["id"]),
            image_id=int(r["image_id"]),
            metaphase=int(r["metaphase"]),
            predicted=r["predicted"],
            confidence=max(probs) if r["predicted"] else 0.0,
            confirmed=r["confirmed"],
            flags=flags,
        )
        observations.append(obs)
        label, reason = obs.counted_as(min_conf)
        views.append(CropView(
            crop_id=obs.crop_id, image_id=obs.image_id, file=str(r["file"]),
            bbox=(int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"])),
            counted_as=label, excluded=reason, predicted=r["predicted"],
            confirmed=r["confirmed"], probs=probs,
        ))
        if r["model_version"]:
            versions[str(r["model_version"])] += 1
        digest.update(
            f"{r['id']}|{r['flags']}|{r['pred_id']}|{r['predicted']}|{r['confirmed']}\n".encode()
        )
    images = tuple(dict(r) for r in store.sample_images(sample))
    for im in images:
        digest.update(f"i{im['id']}|{im['status']}\n".encode())
    stats = summarize(
        sample,
        observations,
        min_confidence=min_conf,
        min_chromosomes=settings.report.min_chromosomes,
        min_metaphases=settings.report.min_metaphases,
    )
    return SampleData(sample, stats, tuple(views), images, dict(versions), digest.hexdigest())


def control_for(settings: Settings, sample: str) -> str | None:
    """The control a sample is compared with (report.controls, first matching pattern)."""
    for pattern, control in settings.report.controls.items():
        if fnmatchcase(sample, pattern) and control != sample:
            return control
    return None


def settings_hash(settings: Settings) -> str:
    """A short hash of the whole configuration, mail credentials left out."""
    data = settings.model_dump(mode="json", exclude={"mail": {"password", "username"}})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def fingerprint(settings: Settings, data: SampleData, model: ModelInfo | None,
                control: str | None) -> str:
    """Changes whenever the report would show something else (labels, crops, model, control,
    configuration)."""
    parts = [data.state, model.fingerprint if model else "-", control or "-",
             settings_hash(settings)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


# -- statistics for display ------------------------------------------------------------


@dataclass(frozen=True)
class Correction:
    adjusted: Adjusted | None
    note: str


def correction_for(settings: Settings, data: SampleData, model: ModelInfo | None) -> Correction:
    """Adjusted classify-and-count with the current model's holdout confusion, or why not."""
    if model is None:
        return Correction(None, "No model is installed, so no holdout confusion matrix: the "
                          "frequencies are not corrected for the model's errors.")
    if model.confusion is None:
        return Correction(None, f"The current model {model.name} has no holdout confusion "
                          "matrix in its metrics: the frequencies are not corrected for its "
                          "errors (B is often called C).")
    stats = data.stats
    try:
        adjusted = adjust_for_confusion(
            stats.predicted_only, model.confusion, confirmed=stats.confirmed,
            n_boot=settings.report.bootstrap, seed=settings.report.seed,
        )
    except ValueError as exc:
        return Correction(None, f"No correction: {exc}.")
    note = (f"Corrected with the holdout confusion matrix of {model.name} (adjusted "
            "classify-and-count; 95% bootstrap intervals over the sample and the holdout).")
    others = sorted(v for v in data.model_versions if not v.startswith(model.name + "-")
                    and v != model.name)
    if others:
        note += (" Some predictions come from another model (" + ", ".join(others) +
                 "): the correction assumes they err like the current one.")
    if adjusted.holdout is None:
        note += " The matrix holds rates, not counts: the holdout's own uncertainty is left out."
    if adjusted.clipped:
        note += " The raw correction fell outside 0-100% and was projected back."
    return Correction(adjusted, note)


def summary_rows(stats: SampleStats, adjusted: Adjusted | None) -> list[dict[str, Any]]:
    rows = []
    for group, prop in stats.proportions.items():
        lo, hi = prop.interval
        row: dict[str, Any] = {"group": group, "k": prop.k, "n": prop.n,
                               "fraction": prop.fraction, "low": lo, "high": hi}
        if adjusted is not None:
            row["adjusted"] = adjusted.fractions[group]
            row["adjusted_low"], row["adjusted_high"] = adjusted.intervals[group]
        rows.append(row)
    return rows


def comparison_view(cmp: Comparison) -> dict[str, Any]:
    return {
        "control": cmp.control,
        "table": [{"group": c, "sample": s, "control": k} for c, (s, k) in
                  zip(CLASS_NAMES, cmp.table, strict=True)],
        "test": cmp.test,
        "statistic": cmp.statistic,
        "dof": cmp.dof,
        "p_value": cmp.p_value,
        "difference": cmp.difference_bc,
        "difference_interval": cmp.difference_interval,
        "mw_u": cmp.mann_whitney_u,
        "mw_p": cmp.mann_whitney_p,
        "cells": cmp.cells,
        "notes": list(cmp.notes),
    }


# -- assets ----------------------------------------------------------------------------


def _copy_crop(view: CropView, assets: Path) -> str | None:
    source = Path(view.file)
    target = assets / f"crop-{view.crop_id}{source.suffix.lower() or '.png'}"
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        log.warning("crop %d: its image %s cannot be read (%s)", view.crop_id, source, exc)
        return None
    return f"assets/{target.name}"


def gallery(data: SampleData, settings: Settings, assets: Path) -> dict[str, Any]:
    """Example crops per class (confirmed first, then the most confident) and the least
    confident crops, copied into the report's folder."""

    def item(v: CropView) -> dict[str, Any]:
        return {
            "src": _copy_crop(v, assets),
            "id": v.crop_id,
            "label": v.counted_as or v.predicted or "?",
            "confirmed": v.confirmed,
            "excluded": v.excluded,
            "probs": dict(zip(CLASS_NAMES, v.probs, strict=True)),
            "confidence": v.confidence,
        }

    per_class: dict[str, list[dict[str, Any]]] = {}
    n = settings.report.gallery_per_class
    for c in CLASS_NAMES:
        chosen = sorted((v for v in data.crops if v.counted_as == c),
                        key=lambda v: (v.confirmed is None, -v.confidence, v.crop_id))[:n]
        per_class[c] = [item(v) for v in chosen]
    uncertain = sorted((v for v in data.crops if v.predicted and not v.confirmed),
                       key=lambda v: (v.confidence, v.crop_id))[: settings.report.gallery_uncertain]
    return {"per_class": per_class, "uncertain": [item(v) for v in uncertain]}


def overlays(data: SampleData, settings: Settings, assets: Path) -> list[dict[str, Any]]:
    """Thumbnails of the spreads, cut to the region holding chromosomes (so they are big
    enough to see), with each crop's box in its class colour."""
    import cv2

    by_image: dict[int, list[CropView]] = {}
    for v in data.crops:
        by_image.setdefault(v.image_id, []).append(v)
    out: list[dict[str, Any]] = []
    done = [im for im in data.images if im["status"] == "done"]
    for im in done[: settings.report.max_overlays]:
        name = Path(str(im["path"])).name
        picture = cv2.imread(str(im["path"]), cv2.IMREAD_COLOR)
        if picture is None:
            out.append({"name": name, "src": None, "crops": im["crops"],
                        "note": "the spread's file is no longer readable"})
            continue
        views = by_image.get(int(im["id"]), [])
        height, width = picture.shape[:2]
        x0, y0, x1, y1 = 0, 0, width, height
        if views:
            margin = OVERLAY_MARGIN
            x0 = max(0, min(v.bbox[0] for v in views) - margin)
            y0 = max(0, min(v.bbox[1] for v in views) - margin)
            x1 = min(width, max(v.bbox[0] + v.bbox[2] for v in views) + margin)
            y1 = min(height, max(v.bbox[1] + v.bbox[3] for v in views) + margin)
        region = picture[y0:y1, x0:x1]
        scale = min(OVERLAY_WIDTH / region.shape[1], OVERLAY_HEIGHT / region.shape[0])
        thumb = cv2.resize(region, (max(1, round(region.shape[1] * scale)),
                                    max(1, round(region.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        for v in views:
            x, y, w, h = v.bbox
            p1 = (int((x - x0) * scale), int((y - y0) * scale))
            p2 = (int((x + w - x0) * scale), int((y + h - y0) * scale))
            cv2.rectangle(thumb, p1, p2, BOX_COLOURS_BGR.get(v.counted_as, (150, 150, 150)), 2)
        # JPEG: weasyprint embeds it as is, where a PNG is decoded and compressed again.
        target = assets / f"spread-{im['id']}.jpg"
        cv2.imwrite(str(target), thumb, [cv2.IMWRITE_JPEG_QUALITY, 88])
        shown = "" if (x0, y0, x1, y1) == (0, 0, width, height) else " (the chromosomes' region)"
        out.append({"name": name + shown, "src": f"assets/{target.name}", "crops": im["crops"],
                    "note": None})
    return out


# -- rendering -------------------------------------------------------------------------


def _environment() -> Any:
    import jinja2

    root = files("chromowatch.templates")

    def load(name: str) -> str:
        return root.joinpath(name).read_text(encoding="utf-8")

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        autoescape=lambda name: not (name or "").endswith(".txt"),  # HTML always escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v, d=1: "–" if v is None else f"{100 * v:.{d}f}%"
    env.filters["pval"] = _format_p
    env.globals["css"] = lambda: jinja2.utils.markupsafe.Markup(load("report.css"))
    return env


def _format_p(p: float | None) -> str:
    """"p = 0.012" style, with "p < 0.0001" for the tiny ones."""
    if p is None:
        return "p: –"
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}" if p < 0.01 else f"p = {p:.3f}"


def _svg_markup(svg: str) -> Any:
    from markupsafe import Markup

    return Markup(svg)  # built in report_charts.py, every text escaped there


def _write_text(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


def render_pdf(html_path: Path, pdf_path: Path, *, root: Path, timeout_s: float) -> None:
    """Run chromowatch.reports.pdf in a child process; ReportError on failure or timeout."""
    cmd = [sys.executable, "-m", "chromowatch.reports.pdf", str(html_path), str(pdf_path),
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


@dataclass(frozen=True)
class ReportFiles:
    sample: str
    folder: Path
    html: Path | None
    pdf: Path | None
    summary_text: str  # plain-text summary for mail bodies and the terminal
    summary_html: str


def file_stem(sample: str) -> str:
    """A file-name-safe form of a sample name (a short hash keeps it unique)."""
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "_"
                   for ch in sample).strip("._")[:60]
    if safe != sample or not safe:
        safe = f"{safe or 'sample'}-{hashlib.sha256(sample.encode()).hexdigest()[:6]}"
    return safe


def build_context(
    settings: Settings,
    store: Store,
    data: SampleData,
    *,
    control: str | None,
    model: ModelInfo | None,
    version_label: str,
    assets: Path,
) -> dict[str, Any]:
    """Everything the sample template shows, as plain values."""
    stats = data.stats
    correction = correction_for(settings, data, model)
    adjusted = correction.adjusted
    props = stats.proportions
    series = [Series(f"{data.name} (raw)", "class",
                     [props[g].fraction for g in GROUPS], [props[g].interval for g in GROUPS])]
    if adjusted is not None:
        series.append(Series(f"{data.name} (corrected)", "class",
                             [adjusted.fractions[g] for g in GROUPS],
                             [adjusted.intervals[g] for g in GROUPS], pattern=True))
    comparison = None
    control_note = None
    control_stats: SampleStats | None = None
    if control:
        try:
            control_stats = load_sample(settings, store, control).stats
        except ChromowatchError:
            control_note = f"The control sample {control!r} is not in the database yet."
    if control_stats is not None:
        cprops = control_stats.proportions
        series.append(Series(f"control {control} (raw)", GREY,
                             [cprops[g].fraction for g in GROUPS],
                             [cprops[g].interval for g in GROUPS]))
        comparison = comparison_view(compare(stats, control_stats,
                                             bootstrap=settings.report.bootstrap,
                                             seed=settings.report.seed))
    strips = [(f"{data.name} B+C", [m.fraction("B+C") for m in stats.metaphases],
               CLASS_COLOURS["B+C"]),
              (f"{data.name} C", [m.fraction("C") for m in stats.metaphases],
               CLASS_COLOURS["C"])]
    if control_stats is not None:
        strips.append((f"{control} B+C", [m.fraction("B+C") for m in control_stats.metaphases],
                       GREY))
    distribution = stats.distribution("B+C")
    s = settings
    important = [
        ("classify.model", s.classify.model),
        ("report.min_confidence", s.report.min_confidence),
        ("report.min_chromosomes", s.report.min_chromosomes),
        ("report.min_metaphases", s.report.min_metaphases),
        ("report.bootstrap / seed", f"{s.report.bootstrap} / {s.report.seed}"),
    ]
    important += [(f"segment.{k}", v) for k, v in s.segment.model_dump().items()]
    important += [(f"enhance.{k}", v) for k, v in s.enhance.model_dump().items()]
    metaphase_rows = [
        {"image": m.image_id, "metaphase": m.metaphase, "n": m.n, "counts": m.counts,
         "bc": m.fraction("B+C")}
        for m in stats.metaphases
    ]
    return {
        "sample": data.name,
        "version_label": version_label,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "chromowatch_version": __version__,
        "stats": stats,
        "rows": summary_rows(stats, adjusted),
        "correction_note": correction.note,
        "adjusted": adjusted,
        "excluded": stats.excluded,
        "warnings": list(stats.warnings),
        "bars_svg": _svg_markup(grouped_bars(
            list(GROUPS), series, title=f"A, B, C and B+C fractions of {data.name}")),
        "strip_svg": _svg_markup(strip_plot(
            strips, title="per-metaphase fractions",
            axis_label="fraction of a metaphase's scored chromosomes (one dot per metaphase)")),
        "distribution": distribution,
        "metaphase_rows": metaphase_rows,
        "control": control,
        "control_note": control_note,
        "comparison": comparison,
        "gallery": gallery(data, settings, assets),
        "overlays": overlays(data, settings, assets),
        "model": model,
        "model_versions": data.model_versions,
        "settings_rows": important,
        "settings_hash": settings_hash(settings),
        "images": list(data.images),
        "colours": CLASS_COLOURS,
    }


def summary_text(context: Mapping[str, Any]) -> tuple[str, str]:
    """(plain text, HTML) summaries for the mail body."""
    env = _environment()
    return (env.get_template("mail.txt").render(**context),
            env.get_template("mail.html").render(**context))


def write_report(
    settings: Settings,
    store: Store,
    sample: str,
    *,
    out_dir: Path,
    control: str | None = None,
    formats: Sequence[str] = FORMATS,
    model: ModelInfo | None = None,
    version_label: str = "rendered on demand",
    data: SampleData | None = None,
) -> ReportFiles:
    """Render one sample's report into out_dir (created; assets/ beside the files)."""
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ReportError(f"unknown report format(s) {sorted(unknown) or formats}",
                          hint="use html, pdf or html,pdf")
    data = data or load_sample(settings, store, sample)
    out_dir.mkdir(parents=True, exist_ok=True)
    assets = out_dir / "assets"
    assets.mkdir(exist_ok=True)
    context = build_context(settings, store, data, control=control, model=model,
                            version_label=version_label, assets=assets)
    env = _environment()
    html = env.get_template("report.html").render(**context)
    stem = file_stem(sample)
    html_path = out_dir / f"{stem}.html"
    _write_text(html_path, html)
    pdf_path = None
    if "pdf" in formats:
        pdf_path = out_dir / f"{stem}.pdf"
        render_pdf(html_path, pdf_path, root=out_dir, timeout_s=settings.report.render_timeout_s)
    if "html" not in formats:
        html_path.unlink()
    text, html_summary = summary_text(context)
    return ReportFiles(sample, out_dir, html_path if "html" in formats else None, pdf_path,
                       text, html_summary)


def write_summary(
    settings: Settings,
    store: Store,
    samples: Sequence[str],
    *,
    out_dir: Path,
    formats: Sequence[str] = FORMATS,
    model: ModelInfo | None = None,
) -> ReportFiles:
    """Several samples side by side: one table and one chart."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    series_values: dict[str, list[float]] = {c: [] for c in GROUPS}
    series_ci: dict[str, list[tuple[float, float] | None]] = {c: [] for c in GROUPS}
    for name in samples:
        data = load_sample(settings, store, name)
        correction = correction_for(settings, data, model)
        props = data.stats.proportions
        for g in GROUPS:
            series_values[g].append(props[g].fraction)
            series_ci[g].append(props[g].interval)
        rows.append({
            "sample": name,
            "stats": data.stats,
            "rows": summary_rows(data.stats, correction.adjusted),
            "metaphases": len(data.stats.metaphases),
            "distribution": data.stats.distribution("B+C"),
        })
    chart = grouped_bars(
        list(samples),
        [Series(g, CLASS_COLOURS[g], series_values[g], series_ci[g]) for g in GROUPS],
        title="A, B, C and B+C per sample", width=max(640, 150 * len(samples)),
    )
    context = {
        "samples": rows,
        "chart_svg": _svg_markup(chart),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "chromowatch_version": __version__,
        "model": model,
        "correction_available": model is not None and model.confusion is not None,
        "settings_hash": settings_hash(settings),
    }
    html_path = out_dir / "summary.html"
    _write_text(html_path, _environment().get_template("summary.html").render(**context))
    pdf_path = None
    if "pdf" in formats:
        pdf_path = out_dir / "summary.pdf"
        render_pdf(html_path, pdf_path, root=out_dir, timeout_s=settings.report.render_timeout_s)
    if "html" not in formats:
        html_path.unlink()
    text = "\n".join(
        f"{r['sample']}: " + ", ".join(f"{x['group']} {x['k']}/{x['n']} ({x['fraction']:.1%})"
                                       for x in r["rows"]) for r in rows)
    return ReportFiles(",".join(samples), out_dir, html_path if "html" in formats else None,
                       pdf_path, text, "")


# -- versions, for the daemon ----------------------------------------------------------


def version_label_for(store: Store, sample: str, current: str) -> str:
    """"version N" when the current state is recorded version N, else say it is not one."""
    latest = store.latest_report(sample)
    if latest is None:
        return "rendered on demand (no version recorded yet)"
    if latest["fingerprint"] == current:
        return f"version {latest['version']}"
    return f"rendered on demand (newer than version {latest['version']})"


def on_sample_complete(settings: Settings, store: Store, sample: str) -> None:
    """Render a new report version of `sample` and queue its mail, unless nothing it would
    show has changed since the last version (then it does nothing). Called by the daemon
    when a sample completes and when its labels or the current model change."""
    from chromowatch.reports.mail import compose

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
    if latest is not None and latest["fingerprint"] == current:
        log.info("report of %s: unchanged since version %d", sample, latest["version"])
        return
    version = (int(latest["version"]) + 1) if latest is not None else 1
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
    except Exception as exc:  # another process recorded this version first
        import sqlite3

        if isinstance(exc, sqlite3.IntegrityError):
            log.warning("report %s version %d was recorded by another process", sample, version)
            return
        raise
    log.info("report of %s: version %d in %s%s", sample, version, folder,
             " (mail queued)" if mail else "")


def refresh_reports(settings: Settings, store: Store) -> list[str]:
    """Re-render every reported sample whose labels, crops or model changed; returns them."""
    changed = []
    for sample in store.reported_samples():
        before = store.latest_report(sample)
        on_sample_complete(settings, store, sample)
        after = store.latest_report(sample)
        if before is None or after is None or after["version"] != before["version"]:
            changed.append(sample)
    return changed
