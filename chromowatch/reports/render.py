"""Per-sample reports (HTML, PDF) and the summary of several samples side by side.

data.py reads what a report shows, stats.py turns it into statistics, jinja2 (autoescape
on) turns those into HTML, and pdf.py turns the HTML into PDF in a separate process with a
timeout, fetching only the report's own files. A report lives in a folder of its own with
its assets (crop images, spread thumbnails, assets.py) so the HTML can be opened or copied
as is.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path, PurePath
from typing import Any

import jinja2
from markupsafe import Markup

from chromowatch import __version__
from chromowatch.errors import ChromowatchError, ReportError
from chromowatch.files import atomic_write_text
from chromowatch.records import CLASS_COLOURS, CLASS_NAMES, UNLABELLED_COLOUR
from chromowatch.reports.assets import gallery, overlays
from chromowatch.reports.charts import Series, grouped_bars, strip_plot
from chromowatch.reports.data import (
    ModelInfo,
    SampleData,
    load_sample,
    models_behind,
    settings_hash,
)
from chromowatch.reports.pdf import render_pdf
from chromowatch.reports.stats import GROUPS, Adjusted, Comparison, SampleStats, compare
from chromowatch.reports.trust import correction_for, looks_new
from chromowatch.settings import Settings
from chromowatch.store import SampleImage, Store

log = logging.getLogger(__name__)

FORMATS = ("html", "pdf")


# -- statistics for display ------------------------------------------------------------


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


# -- the template environment ----------------------------------------------------------


def _environment() -> jinja2.Environment:
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
    env.globals["css"] = lambda: Markup(load("report.css"))
    return env


def _format_p(p: float | None) -> str:
    """"p = 0.012" style, with "p < 0.0001" for the tiny ones."""
    if p is None:
        return "p: –"
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}" if p < 0.01 else f"p = {p:.3f}"


def _svg_markup(svg: str) -> Markup:
    return Markup(svg)  # built in charts.py, every text escaped there


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class ReportFiles:
    sample: str
    folder: Path
    html: Path | None
    pdf: Path | None
    summary_text: str  # plain-text summary for mail bodies and the terminal
    summary_html: str
    demonstration: bool = False  # a demonstration model made (some of) the numbers


def file_stem(sample: str) -> str:
    """A file-name-safe form of a sample name (a short hash keeps it unique)."""
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "_"
                   for ch in sample).strip("._")[:60]
    if safe != sample or not safe:
        safe = f"{safe or 'sample'}-{hashlib.sha256(sample.encode()).hexdigest()[:6]}"
    return safe


# -- one sample's context --------------------------------------------------------------


def _control_stats(settings: Settings, store: Store,
                   control: str | None) -> tuple[SampleStats | None, str | None]:
    """(the control's statistics, None) or (None, why there are none to show)."""
    if not control:
        return None, None
    try:
        return load_sample(settings, store, control).stats, None
    except ChromowatchError:
        return None, f"The control sample {control!r} is not in the database yet."


def _bar_series(data: SampleData, adjusted: Adjusted | None, control: str | None,
                control_stats: SampleStats | None) -> list[Series]:
    """Raw, corrected (hatched) and the control's fractions, for the bar chart."""
    props = data.stats.proportions
    series = [Series(f"{data.name} (raw)", "class",
                     [props[g].fraction for g in GROUPS], [props[g].interval for g in GROUPS])]
    if adjusted is not None:
        series.append(Series(f"{data.name} (corrected)", "class",
                             [adjusted.fractions[g] for g in GROUPS],
                             [adjusted.intervals[g] for g in GROUPS], pattern=True))
    if control_stats is not None:
        cprops = control_stats.proportions
        series.append(Series(f"control {control} (raw)", UNLABELLED_COLOUR,
                             [cprops[g].fraction for g in GROUPS],
                             [cprops[g].interval for g in GROUPS]))
    return series


def _strips(data: SampleData, control: str | None,
            control_stats: SampleStats | None) -> list[tuple[str, list[float], str]]:
    """Per-metaphase B+C and C fractions (and the control's B+C), for the strip plot."""
    cells = data.stats.metaphases
    strips = [(f"{data.name} B+C", [m.fraction("B+C") for m in cells], CLASS_COLOURS["B+C"]),
              (f"{data.name} C", [m.fraction("C") for m in cells], CLASS_COLOURS["C"])]
    if control_stats is not None:
        strips.append((f"{control} B+C", [m.fraction("B+C") for m in control_stats.metaphases],
                       UNLABELLED_COLOUR))
    return strips


def _settings_rows(s: Settings) -> list[tuple[str, Any]]:
    """The settings a reader needs to judge the numbers."""
    important: list[tuple[str, Any]] = [
        ("classify.model", s.classify.model),
        ("report.min_confidence", s.report.min_confidence),
        ("report.min_chromosomes", s.report.min_chromosomes),
        ("report.min_metaphases", s.report.min_metaphases),
        ("report.bootstrap / seed", f"{s.report.bootstrap} / {s.report.seed}"),
    ]
    important += [(f"segment.{k}", v) for k, v in s.segment.model_dump().items()]
    important += [(f"enhance.{k}", v) for k, v in s.enhance.model_dump().items()]
    return important


def _charts(data: SampleData, series: list[Series],
            strips: list[tuple[str, list[float], str]]) -> dict[str, Markup]:
    return {
        "bars_svg": _svg_markup(grouped_bars(
            list(GROUPS), series, title=f"A, B, C and B+C fractions of {data.name}")),
        "strip_svg": _svg_markup(strip_plot(
            strips, title="per-metaphase fractions",
            axis_label="fraction of a metaphase's scored chromosomes (one dot per metaphase)")),
    }


def image_names(images: Sequence[SampleImage]) -> dict[int, str]:
    """Image id -> the name a reader finds on disk: the file name, with as many parent
    folders as tell it apart from another file of the same name (and its id when nothing
    else does)."""
    parts = {im.id: PurePath(im.path).parts for im in images}

    def tail(p: tuple[str, ...], depth: int) -> str:
        return "/".join(p[-depth:])

    names = {}
    for i, p in parts.items():
        others = [q for j, q in parts.items() if j != i]
        depth = next((d for d in range(1, len(p) + 1)
                      if all(tail(q, d) != tail(p, d) for q in others)), None)
        names[i] = tail(p, depth) if depth else f"{tail(p, 1)} (#{i})"
    return names


def _model_warning(behind: Sequence[ModelInfo]) -> str | None:
    """What page 1 must say about the models behind the numbers, or None."""
    if len(behind) > 1:
        names = ", ".join(f"{m.name} ({m.crops} crops)" for m in behind)
        return (f"The numbers come from {len(behind)} models: {names}. Models err "
                "differently, so these counts mix different errors; process the sample again "
                "with one model to compare like with like.")
    if behind and all(m.confusion is None for m in behind):
        m = behind[0]
        why = "it is no longer installed" if not m.installed else \
            "its metrics hold no holdout confusion matrix"
        known = " The published models often call B C." if m.published else ""
        return (f"{m.name} has no known error rate ({why}): the frequencies are the model's "
                f"calls, not corrected for its errors.{known}")
    return None


def _model_context(settings: Settings, data: SampleData,
                   model: ModelInfo | None) -> dict[str, Any]:
    """The models behind the numbers (page 1), the DEMONSTRATION banner, and the correction,
    made with the model behind the numbers when it is the only one and installed."""
    behind = models_behind(settings, data.model_versions)
    corrector = behind[0] if len(behind) == 1 and behind[0].installed else model
    correction = correction_for(settings, data, corrector)
    demo = [m.name for m in behind if m.demonstration]
    if not behind and model is not None and model.demonstration:
        demo = [model.name]
    return {
        "models_behind": behind,
        "model_warning": _model_warning(behind),
        "demonstration": ", ".join(demo),
        "correction": correction,
        "looks_new": looks_new(settings, data, corrector),
    }


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
    models = _model_context(settings, data, model)
    correction = models.pop("correction")
    adjusted = correction.adjusted
    control_stats, control_note = _control_stats(settings, store, control)
    comparison = None
    if control_stats is not None:
        comparison = comparison_view(compare(stats, control_stats,
                                             bootstrap=settings.report.bootstrap,
                                             seed=settings.report.seed))
    charts = _charts(data, _bar_series(data, adjusted, control, control_stats),
                     _strips(data, control, control_stats))
    names = image_names(data.images)
    metaphase_rows = [
        {"image": names.get(m.image_id, f"#{m.image_id}"), "metaphase": m.metaphase,
         "n": m.n, "counts": m.counts, "bc": m.fraction("B+C")}
        for m in stats.metaphases
    ]
    return {
        "sample": data.name,
        "version_label": version_label,
        "generated": _now(),
        "chromowatch_version": __version__,
        "stats": stats,
        "rows": summary_rows(stats, adjusted),
        "correction_note": correction.note,
        "adjusted": adjusted,
        "excluded": stats.excluded,
        "warnings": [w for w in (models.pop("looks_new"),) if w] + list(stats.warnings),
        "reviewers": store.reviewers(data.name),
        **charts,
        "distribution": stats.distribution("B+C"),
        "metaphase_rows": metaphase_rows,
        "control": control,
        "control_note": control_note,
        "comparison": comparison,
        "gallery": gallery(data, settings, assets),
        "overlays": overlays(data, settings, assets),
        "model": model,
        **models,
        "model_versions": data.model_versions,
        "settings_rows": _settings_rows(settings),
        "settings_hash": settings_hash(settings),
        "images": list(data.images),
        "colours": CLASS_COLOURS,
    }


def summary_text(context: Mapping[str, Any]) -> tuple[str, str]:
    """(plain text, HTML) summaries for the mail body."""
    env = _environment()
    return (env.get_template("mail.txt").render(**context),
            env.get_template("mail.html").render(**context))


# -- writing ---------------------------------------------------------------------------


def _publish_formats(settings: Settings, html_path: Path, formats: Sequence[str],
                     root: Path, pdf_name: str) -> tuple[Path | None, Path | None]:
    """Render the PDF when asked, drop the HTML when not asked; (html, pdf) as written."""
    pdf_path = None
    if "pdf" in formats:
        pdf_path = root / pdf_name
        render_pdf(html_path, pdf_path, root=root, timeout_s=settings.report.render_timeout_s)
    if "html" not in formats:
        html_path.unlink()
    return (html_path if "html" in formats else None), pdf_path


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
    html = _environment().get_template("report.html").render(**context)
    stem = file_stem(sample)
    html_path = out_dir / f"{stem}.html"
    atomic_write_text(html_path, html)
    html_out, pdf_out = _publish_formats(settings, html_path, formats, out_dir, f"{stem}.pdf")
    text, html_summary = summary_text(context)
    return ReportFiles(sample, out_dir, html_out, pdf_out, text, html_summary,
                       demonstration=bool(context["demonstration"]))


def _summary_sample(settings: Settings, store: Store, name: str,
                    model: ModelInfo | None) -> dict[str, Any]:
    data = load_sample(settings, store, name)
    correction = correction_for(settings, data, model)
    return {
        "sample": name,
        "stats": data.stats,
        "rows": summary_rows(data.stats, correction.adjusted),
        "metaphases": len(data.stats.metaphases),
        "distribution": data.stats.distribution("B+C"),
    }


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
    rows = [_summary_sample(settings, store, name, model) for name in samples]
    props = [r["stats"].proportions for r in rows]
    chart = grouped_bars(
        list(samples),
        [Series(g, CLASS_COLOURS[g], [p[g].fraction for p in props],
                [p[g].interval for p in props]) for g in GROUPS],
        title="A, B, C and B+C per sample", width=max(640, 150 * len(samples)),
    )
    context = {
        "samples": rows,
        "chart_svg": _svg_markup(chart),
        "generated": _now(),
        "chromowatch_version": __version__,
        "model": model,
        "correction_available": model is not None and model.confusion is not None,
        "settings_hash": settings_hash(settings),
    }
    html_path = out_dir / "summary.html"
    atomic_write_text(html_path, _environment().get_template("summary.html").render(**context))
    html_out, pdf_out = _publish_formats(settings, html_path, formats, out_dir, "summary.pdf")
    text = "\n".join(
        f"{r['sample']}: " + ", ".join(f"{x['group']} {x['k']}/{x['n']} ({x['fraction']:.1%})"
                                       for x in r["rows"]) for r in rows)
    return ReportFiles(",".join(samples), out_dir, html_out, pdf_out, text, "")
