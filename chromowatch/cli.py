"""The command line: the only place that configures logging and turns errors into exit codes.

Modules that bring in torch, cv2 or weasyprint (ingest, segmentation, pipeline, training,
the daemon) are imported inside the commands that need them, so `chromowatch --help` and
`chromowatch config validate` start fast; everything else is imported here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chromowatch import __version__
from chromowatch.classify.library import ModelLibrary
from chromowatch.classify.published import fetch_ikemoto2023
from chromowatch.demo.synth import write_dataset
from chromowatch.errors import ChromowatchError, InputImageError, UsageError
from chromowatch.files import remove_files
from chromowatch.progress import Progress
from chromowatch.records import CLASS_NAMES, is_demonstration
from chromowatch.reports import data as report_data
from chromowatch.reports import publish, render
from chromowatch.reports.export import export
from chromowatch.reports.mail import flush_outbox
from chromowatch.reports.tables import format_counts_table
from chromowatch.settings import (
    LoadedSettings,
    Settings,
    effective_values,
    generate_example,
    load_settings,
)
from chromowatch.store import Store

if TYPE_CHECKING:
    from chromowatch.classify.ensemble import Ensemble

log = logging.getLogger(__name__)

EXIT_PARTIAL = 3  # some input files were skipped; the rest were processed
DEMO_MODEL = "trained on generated spreads, its numbers are not a measurement"


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _load_ensemble(settings: Settings, name: str | None) -> Ensemble:
    return ModelLibrary(settings.paths.models).load_configured(settings.classify, name)


def _input_files(paths: Sequence[str], settings: Settings, what: str, give: str) -> list[Path]:
    """The image files named or found below the named folders; none is a usage error."""
    from chromowatch import ingest

    files = ingest.list_images([Path(p) for p in paths], settings.ingest)
    if not files:
        raise UsageError(f"no {what} found in " + ", ".join(paths),
                         hint=f"give {give} (" + ", ".join(settings.ingest.extensions) + ")")
    return files


def _set_threads(settings: Settings) -> None:
    if settings.classify.threads:
        import torch

        torch.set_num_threads(settings.classify.threads)


# -- config ----------------------------------------------------------------------------


def _args_config(p: argparse.ArgumentParser) -> None:
    csub = p.add_subparsers(dest="config_cmd", required=True)
    show = csub.add_parser("show", help="effective values and where each came from")
    show.add_argument("--json", action="store_true")
    csub.add_parser("validate", help="check the configuration; exit 2 naming a bad key")
    csub.add_parser("generate", help="print a commented example configuration")


def cmd_config(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    if args.config_cmd == "generate":
        sys.stdout.write(generate_example())
    elif args.config_cmd == "validate":
        where = loaded.file or "no file (defaults and environment)"
        print(f"configuration is valid: {where}")
    else:
        rows = effective_values(loaded)
        if args.json:
            _print_json([{"key": k, "value": v, "source": s} for k, v, s in rows])
        else:
            width = max(len(k) for k, _, _ in rows)
            for key, value, source in rows:
                print(f"{key:<{width}} = {json.dumps(value)}    # {source}")
    return 0


# -- image stages ----------------------------------------------------------------------


def _args_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--spreads", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)


def cmd_synth(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    paths = write_dataset(Path(args.out_dir), samples=args.samples, spreads=args.spreads,
                          seed=args.seed)
    print(f"wrote {len(paths)} synthetic spreads under {args.out_dir} (not real data: for "
          "tests and demonstrations only)")
    return 0


def _args_segment(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="JSON list, one object per image")
    p.add_argument("--overlay", metavar="OUT", help="write the spread with its boxes (PNG, or "
                   "a folder for several images)")


def cmd_segment(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    import cv2

    from chromowatch import ingest
    from chromowatch.segmentation import segment
    from chromowatch.segmentation.overlay import draw_overlay

    settings = loaded.settings
    files = ingest.list_images([Path(p) for p in args.images], settings.ingest)
    if args.overlay and len(files) > 1 and not Path(args.overlay).is_dir():
        raise UsageError("--overlay takes a folder when several images are given",
                         hint="create the folder first, or give one image")
    out: list[dict[str, Any]] = []
    failed = 0
    progress = Progress(len(files), "segment")
    for path in files:
        try:
            spread = ingest.read_spread(path, settings.ingest)
        except InputImageError as exc:
            log.error("%s", exc)
            failed += 1
            out.append({"image": str(path), "error": exc.problem, "crops": []})
            progress.advance(path.name)
            continue
        seg = segment.segment(
            spread.rgb, settings.segment, chroma_subsampled=spread.chroma_subsampled
        )
        out.append({
            "image": str(path),
            "width": spread.width,
            "height": spread.height,
            "metaphases": seg.metaphases,
            "note": seg.note,
            "crops": [
                {"bbox": c.bbox.as_list(), "metaphase": c.metaphase, "flags": sorted(c.flags)}
                for c in seg.crops
            ],
        })
        if args.overlay:
            target = Path(args.overlay)
            if target.is_dir():
                target = target / f"{path.stem}.overlay.png"
            picture = draw_overlay(spread.rgb, seg)
            if not cv2.imwrite(str(target), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
                raise UsageError(f"cannot write the overlay to {target}",
                                 hint="give a writable .png path")
        progress.advance(path.name)
    progress.close()
    if args.json:
        _print_json(out)
    else:
        for item in out:
            if "error" in item:
                print(f"{item['image']}: skipped ({item['error']})")
            else:
                note = f" ({item['note']})" if item["note"] else ""
                print(f"{item['image']}: {len(item['crops'])} crops, "
                      f"{item['metaphases']} metaphase(s){note}")
    return EXIT_PARTIAL if failed else 0


def _args_classify(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="CROP_IMAGE_OR_DIR")
    p.add_argument("--model", help="ensemble name (default: classify.model, i.e. current)")
    p.add_argument("--enhanced", action="store_true",
                   help="the crops are already enhanced (white background): skip enhancement")
    p.add_argument("--json", action="store_true")


def cmd_classify(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from chromowatch.pipeline import classify_files

    settings = loaded.settings
    _set_threads(settings)
    files = _input_files(args.paths, settings, "crop images", "image files or folders")
    ensemble = _load_ensemble(settings, args.model)
    results = classify_files(files, settings=settings, ensemble=ensemble, enhanced=args.enhanced)
    failed = 0
    rows: list[dict[str, Any]] = []
    for path, res in results:
        if isinstance(res, InputImageError):
            failed += 1
            rows.append({"path": str(path), "error": res.problem})
        else:
            rows.append({"path": str(path), "label": res.label,
                         "probs": {k: round(v, 6) for k, v in res.probs.items()}})
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            if "error" in row:
                print(f"{row['path']}: skipped ({row['error']})")
            else:
                probs = " ".join(f"{k}={v:.3f}" for k, v in row["probs"].items())
                print(f"{row['path']}: {row['label']}  {probs}")
        counts = {c: sum(1 for r in rows if r.get("label") == c) for c in CLASS_NAMES}
        print(f"{len(rows) - failed} crops classified with {ensemble.name}: " +
              ", ".join(f"{c} {n}" for c, n in counts.items()))
    return EXIT_PARTIAL if failed else 0


def _args_process(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--sample", required=True, help="sample name the spreads belong to")
    p.add_argument("--model", help="ensemble name (default: classify.model, i.e. current)")
    p.add_argument("--json", action="store_true")


def cmd_process(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from chromowatch.pipeline import check_model_fits, process_file

    settings = loaded.settings
    _set_threads(settings)
    files = _input_files(args.paths, settings, "images", "spread files or folders")
    ensemble = _load_ensemble(settings, args.model)
    check_model_fits(ensemble)
    results = []
    with Store.open(settings.paths.db) as store:
        for n, path in enumerate(files, 1):
            # One bar per file, in crops: 30 models on a CPU take a minute or more a spread.
            bar = Progress(0, f"{n}/{len(files)} {path.name[:24]}", unit="crops")
            results.append(process_file(path, sample=args.sample, settings=settings,
                                        store=store, ensemble=ensemble, progress=bar.update))
            bar.close()
        # Files already stored under another sample stay there: show that sample too.
        names = set(store.sample_names())
        shown = [args.sample, *sorted({r.sample for r in results} - {args.sample})]
        counts = [c for name in shown if name in names for c in store.sample_counts(name)]
    failed = sum(r.status == "failed" for r in results)
    if args.json:
        _print_json({
            "sample": args.sample,
            "model": ensemble.version,
            "demonstration": is_demonstration(ensemble.version),
            "images": [r.as_dict() for r in results],
            "results": [c.as_dict() for c in counts],
        })
    else:
        for r in results:
            if r.status == "failed":
                print(f"{r.path}: skipped: {r.error}")
            elif r.status == "duplicate":
                print(f"{r.path}: already processed (image {r.image_id}, sample {r.sample}), "
                      "stored once")
            else:
                note = f" ({r.note})" if r.note else ""
                print(f"{r.path}: {len(r.crops)} crops{note}")
        print()
        demo = is_demonstration(ensemble.version)
        print(f"model: {ensemble.version}" + (f" (DEMONSTRATION: {DEMO_MODEL})" if demo else ""))
        print(format_counts_table(counts))
        print(f"\nresults stored in {settings.paths.db}")
    return EXIT_PARTIAL if failed else 0


def _args_results(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample")
    p.add_argument("--json", action="store_true")


def cmd_results(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from chromowatch.reports.data import current_model_info
    from chromowatch.reports.trust import results_extra

    settings = loaded.settings
    if not settings.paths.db.exists():
        raise UsageError(f"no database at {settings.paths.db} yet",
                         hint="process some spreads first: chromowatch process PATH --sample NAME")
    with Store.open(settings.paths.db) as store:
        rows = store.sample_counts(args.sample)
        model = current_model_info(settings)
        extra = {r.sample: results_extra(settings, store, r.sample, model) for r in rows}
    if args.json:
        _print_json([r.as_dict() | extra[r.sample] for r in rows])
        return 0
    print(format_counts_table(rows) if rows else "no samples processed yet")
    for r in rows:
        print(_trust_lines(r.sample, extra[r.sample]), end="")
    return 0


def _trust_lines(sample: str, extra: dict[str, Any]) -> str:
    """What `results` says under the table of one sample: corrected fractions, reviews, and
    the 'looks new' warning."""
    out = ""
    corrected = extra["corrected"]
    if corrected:
        ci = extra["corrected_interval"]
        parts = ", ".join(f"{c} {corrected[c]:.1%} ({ci[c][0]:.1%}-{ci[c][1]:.1%})"
                          for c in "ABC")
        out += (f"{sample}: corrected ({extra['correction_method']}): {parts}; "
                f"{extra['reviewed']} crops reviewed\n")
    if extra["looks_new"]:
        out += f"warning: {sample}: {extra['looks_new']}\n"
    return out


def _args_crops(p: argparse.ArgumentParser) -> None:
    csub = p.add_subparsers(dest="crops_cmd", required=True)
    ci = csub.add_parser("import", help="store single-chromosome crop images (cut elsewhere) "
                         "as a sample's crops and classify them with the current model")
    ci.add_argument("folder", metavar="DIR", help="crop images, at any depth")
    ci.add_argument("--sample", required=True, help="the sample they belong to (created "
                    "when new)")
    ci.add_argument("--enhanced", action="store_true",
                    help="the crops are already enhanced (white background): store as they are")
    ci.add_argument("--json", action="store_true", help="a JSON list, one object per crop")


def cmd_crops(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from chromowatch.service.crops import import_crops  # cv2 and torch

    settings = loaded.settings
    _set_threads(settings)
    ensemble = _load_ensemble(settings, None)  # no model: nothing is read or written
    with Store.open(settings.paths.db) as store:
        result = import_crops(store, settings, ensemble, Path(args.folder),
                              sample=args.sample, enhanced=args.enhanced)
    if args.json:
        _print_json([c.as_dict() for c in result.crops])
    for path in result.skipped:
        print(f"{path}: skipped (not a readable crop image)", file=sys.stderr)
    if not args.json:
        print(result.line())
    return EXIT_PARTIAL if result.skipped else 0


def _args_reclassify(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample", help="one sample (default: all)")
    p.add_argument("--json", action="store_true")


def cmd_reclassify(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from chromowatch.service.rescore import reclassify  # torch

    settings = loaded.settings
    with _open_existing_store(settings) as store:
        if args.sample is not None:
            store.sample_images(args.sample)  # an unknown sample before a model is loaded
        _set_threads(settings)
        ensemble = _load_ensemble(settings, None)
        bar = Progress(0, "reclassify", unit="crops")
        run = reclassify(store, settings, ensemble, sample=args.sample, progress=bar.update)
        bar.close()
        counts = store.sample_counts(args.sample)
    if args.json:
        _print_json({"model": ensemble.version, "scored": run.scored,
                     "unreadable": run.unreadable, "samples": sorted(run.changed),
                     "results": [c.as_dict() for c in counts]})
    else:
        print(run.line())
        print(format_counts_table(counts) if counts else "no samples stored yet")
    return 0


# -- models ----------------------------------------------------------------------------


def _args_models(p: argparse.ArgumentParser) -> None:
    msub = p.add_subparsers(dest="models_cmd", required=True)
    ls = msub.add_parser("list", help="installed ensembles; * marks the current one")
    ls.add_argument("--json", action="store_true")
    fetch = msub.add_parser("fetch", help="install the published models")
    fetch.add_argument("name", choices=["ikemoto2023"])
    fetch.add_argument("--from", dest="source", metavar="DIR",
                       help="local copies of SqueezeNet_1..30.pth instead of downloading")
    use = msub.add_parser("use", help="make an installed ensemble current")
    use.add_argument("name")
    promote = msub.add_parser("promote", help="make an ensemble current after checking that "
                              "every member loads (a corrupt one is refused)")
    promote.add_argument("name")
    msub.add_parser("rollback", help="make the previous ensemble current again")


def cmd_models(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    settings = loaded.settings
    library = ModelLibrary(settings.paths.models)
    if args.models_cmd == "fetch":
        source: str | Path = Path(args.source) if args.source else settings.models.published_source
        try:
            before = library.current_name()
        except ChromowatchError:
            before = None  # an unreadable pointer: the fetch repairs it
        info = fetch_ikemoto2023(library, source, timeout=settings.models.download_timeout_s)
        print(f"installed ensemble {info.name} ({len(info.members)} models) in {library.root}")
        now = library.current_name()
        replaced = f" (was {before}, a DEMONSTRATION model)" if before and before != now else ""
        print(f"current ensemble: {now}{replaced}")
        return 0
    if args.models_cmd == "use":
        library.set_current(args.name)
        print(f"current ensemble: {args.name}")
        return 0
    if args.models_cmd == "promote":
        before = library.promote(args.name)
        print(f"current ensemble: {args.name} (was {before})")
        return 0
    if args.models_cmd == "rollback":
        before = library.current_name()
        now = library.rollback()
        print(f"current ensemble: {now} (was {before})")
        return 0
    ensembles = library.list_ensembles()
    current = library.current_name()
    if args.json:
        _print_json({
            "current": current,
            "ensembles": [
                {"name": e.name, "members": list(e.members), "created": e.created,
                 "cross_sample": _cross_sample(e.metrics), "metrics": e.metrics}
                for e in ensembles
            ],
            "bundles": [b.name for b in library.list_bundles()],
        })
        return 0
    if not ensembles:
        print(f"no models installed in {library.root}\n"
              "  -> chromowatch models fetch ikemoto2023 [--from DIR]")
        return 0
    for e in ensembles:
        mark = "*" if e.name == current else " "
        print(f"{mark} {e.name:<24} {len(e.members):>3} member(s)  {_metrics_line(e.metrics)}")
    print(f"({len(library.list_bundles())} bundles in {library.root}; * = current)")
    return 0


def _cross_sample(metrics: Any) -> dict[str, Any] | None:
    """The headline cross-sample figures of a trained ensemble's metrics (whole samples or
    spreads left out of training); None when it has none."""
    if not metrics or metrics.get("cross_sample_accuracy") is None:
        return None
    return {"accuracy": metrics["cross_sample_accuracy"],
            "fraction_error_max": metrics.get("cross_sample_fraction_error_max"),
            "groups": metrics.get("cross_sample_groups")}


def _metrics_line(metrics: Any) -> str:
    """Holdout accuracy, per-class recall and fraction error first, then the cross-sample
    figures; other scalars after."""
    if not metrics:
        return ""
    if "holdout_accuracy" in metrics:
        recall = "/".join(f"{metrics.get(f'recall_{c}') or 0:.2f}" for c in CLASS_NAMES)
        cross = _cross_sample(metrics)
        cross_text = (f"cross-sample acc {cross['accuracy']:.3f}, worst-group fraction error "
                      f"{cross['fraction_error_max']} ({cross['groups']} left-out groups)"
                      if cross else "cross-sample: none")
        return (f"holdout acc {metrics['holdout_accuracy']:.3f} (n={metrics.get('n_holdout')}), "
                f"recall A/B/C {recall}, fraction error {metrics.get('fraction_error_max')}; "
                f"{cross_text}")
    return ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in metrics.items() if not isinstance(v, dict | list))


# -- labels and training ---------------------------------------------------------------


def _args_labels(p: argparse.ArgumentParser) -> None:
    lsub = p.add_subparsers(dest="labels_cmd", required=True)
    lf = lsub.add_parser("import-folder", help="crops sorted into a/, b/, c/ folders")
    lf.add_argument("folder", metavar="DIR")
    lf.add_argument("--enhanced", action="store_true",
                    help="the crops are already enhanced (white background): store as they are")
    lf.add_argument("--sample", help="sample name (default: the folder's name)")
    ly = lsub.add_parser("import-yolo", help="spreads with YOLO boxes (class cx cy w h; "
                         "0=A 1=B 2=C): crops cut from the boxes and enhanced")
    ly.add_argument("images_dir", metavar="IMAGES_DIR")
    ly.add_argument("labels_dir", metavar="LABELS_DIR")
    ly.add_argument("--sample", required=True)
    lc = lsub.add_parser("import-csv", help="labels (crop_id, class) of a review done elsewhere")
    lc.add_argument("file", metavar="FILE")
    for q in (lf, ly, lc):
        q.add_argument("--who", help="who confirmed the labels (default: the user name)")
    le = lsub.add_parser("export-csv", help="every confirmed label (crop_id, class, sample, "
                         "file, source, who, when)")
    le.add_argument("--out", metavar="FILE", help="write here instead of stdout")


def cmd_labels(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from chromowatch.training import labels  # cv2, through ingest

    settings = loaded.settings
    with Store.open(settings.paths.db) as store:
        if args.labels_cmd == "export-csv":
            if args.out:
                with open(args.out, "w", encoding="utf-8", newline="") as fh:
                    n = labels.export_csv(store, fh)
                print(f"wrote {n} labels to {args.out}", file=sys.stderr)
            else:
                labels.export_csv(store, sys.stdout)
            return 0
        if args.labels_cmd == "import-folder":
            summary = labels.import_folder(store, settings, Path(args.folder),
                                           enhanced=args.enhanced, sample=args.sample,
                                           who=args.who)
        elif args.labels_cmd == "import-yolo":
            summary = labels.import_yolo(store, settings, Path(args.images_dir),
                                         Path(args.labels_dir), sample=args.sample, who=args.who)
        else:
            summary = labels.import_csv(store, Path(args.file), who=args.who)
    print(summary.line())
    return EXIT_PARTIAL if summary.skipped else 0


def _args_review(p: argparse.ArgumentParser) -> None:
    rsub = p.add_subparsers(dest="review_cmd", required=True)
    rq = rsub.add_parser("queue", help="the crops of a sample a person should look at next: "
                         "the least certain, and some drawn at random (the audit)")
    rq.add_argument("--sample", required=True)
    rq.add_argument("--count", type=int, help="how many (default: [review] count)")
    rq.add_argument("--json", action="store_true", help="one JSON object per crop")


def cmd_review(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from chromowatch.review.queue import next_for_review

    settings = loaded.settings
    count = args.count if args.count is not None else settings.review.count
    if count < 1:
        raise UsageError(f"--count must be at least 1, not {count}")
    with _open_existing_store(settings) as store:
        entries = next_for_review(store, settings.review, args.sample, count)
    if args.json:
        _print_json([e.as_dict() for e in entries])
        return 0
    if not entries:
        print(f"nothing to review in {args.sample}: every scored crop is answered, or none "
              "has a prediction yet (`chromowatch reclassify --sample NAME`)")
        return 0
    for e in entries:
        probs = " ".join(f"{c} {v:.2f}" for c, v in e.probs.items())
        print(f"{e.crop_id:>8}  {e.reason:<9}  {e.label}  ({probs})  {e.file}")
    print("answer with `chromowatch labels import-csv FILE` (columns crop_id,class)",
          file=sys.stderr)
    return 0


def _args_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", metavar="ENSEMBLE", help="start points (default: training.base)")
    p.add_argument("--members", help="comma-separated architectures, e.g. "
                   "densenet161,mobilenet_v2,squeezenet1_1 (default: training.members)")
    p.add_argument("--name", help="the new ensemble's name (default: trained-<UTC time>)")
    p.add_argument("--force", action="store_true", help="train even if no label changed")


def cmd_train(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from chromowatch.training.runner import train

    members = [m.strip() for m in args.members.split(",") if m.strip()] if args.members else None
    level = "DEBUG" if args.verbose else "ERROR" if args.quiet else loaded.settings.logging.level
    outcome = train(loaded.settings, base=args.base, members=members, name=args.name,
                    force=args.force, log_level=level)
    print(outcome.message)
    if outcome.result:
        _print_train_scores(outcome.result, outcome.candidate)
    print(f"current ensemble: {outcome.current}")
    return 0


def _print_train_scores(result: dict[str, Any], candidate: str | None) -> None:
    """Holdout, then cross-sample figures (whole groups left out), candidate and current."""
    current = result.get("current")
    for label, m in ((candidate, result["candidate_holdout"]),
                     (current, result.get("current_holdout"))):
        if m:
            recall = " ".join(f"{c}={m['recall'][c]}" for c in CLASS_NAMES)
            f1 = " ".join(f"{c}={m.get('f1', {}).get(c)}" for c in CLASS_NAMES)
            print(f"  {label}: holdout accuracy {m['accuracy']} (n={m['n']}), recall "
                  f"{recall}, F1 {f1}, fraction error {m['fraction_error_max']}")
    for label, x in ((candidate, result.get("cross_sample")),
                     (current, result.get("current_cross_sample"))):
        if x:
            groups = ", ".join(f"{f['group']} {f['accuracy']}/{f['fraction_error']}"
                               for f in x.get("folds", []))
            print(f"  {label}: cross-sample accuracy {x['accuracy']} (n={x.get('n')}), worst-group "
                  f"fraction error {x['fraction_error_max']} (accuracy/fraction error: {groups}; "
                  f"{x.get('source')})")


def _args_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spreads", type=int, default=3, help="generated spreads per sample")
    p.add_argument("--models-from", help="folder with local copies of the published models")
    p.add_argument("--offline", action="store_true", help="do not try to download models")


def cmd_demo(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from chromowatch.demo.run import run_demo

    return run_demo(loaded.settings, spreads=args.spreads,
                    models_from=Path(args.models_from) if args.models_from else None,
                    offline=args.offline)


# -- the daemon ------------------------------------------------------------------------


def _args_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--until-complete", action="store_true",
                   help="exit once every sample is complete and nothing waits, saying where "
                   "the results are (exit 3 when files were quarantined)")


def cmd_run(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from chromowatch.service.daemon import run_daemon

    return run_daemon(loaded.settings, config=args.config, until_complete=args.until_complete)


def _args_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def cmd_status(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from chromowatch.service.status import collect_status, format_status

    settings = loaded.settings
    if not settings.paths.db.exists():
        raise UsageError(f"no database at {settings.paths.db} yet",
                         hint="start the daemon: chromowatch run")
    with Store.open(settings.paths.db) as store:
        status = collect_status(settings, store)
    if args.json:
        _print_json(status)
    else:
        print(format_status(status))
    return 0


def _args_retry(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE")
    p.add_argument("--failed", action="store_true", help="every failed and quarantined file")


def cmd_retry(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from chromowatch.service.ledger import Ledger

    settings = loaded.settings
    if bool(args.files) == bool(args.failed):
        raise UsageError("give FILE... or --failed", hint="chromowatch retry --failed")
    with Store.open(settings.paths.db) as store:
        ledger = Ledger(store, settings.daemon)
        if args.failed:
            n = ledger.retry(None)
        else:
            paths = [os.path.abspath(f) for f in args.files]
            known = ledger.lookup(paths)
            missing = [p for p in paths if p not in known]
            if missing:
                raise UsageError(f"not in the ledger: {', '.join(missing)}",
                                 hint="`chromowatch status` lists failed and quarantined files")
            n = ledger.retry(paths)
    print(f"{n} file(s) queued again; the running daemon picks them up")
    return 0


def _args_sample(p: argparse.ArgumentParser) -> None:
    ssub = p.add_subparsers(dest="sample_cmd", required=True)
    close = ssub.add_parser("close", help="mark a sample complete (its report follows once "
                            "its files are processed)")
    close.add_argument("name")
    delete = ssub.add_parser("delete", help="remove a sample: its images, crops, predictions, "
                             "confirmed labels, crop files and reports (asks first)")
    delete.add_argument("name")
    delete.add_argument("--yes", action="store_true", help="do not ask (needed off a terminal)")
    rename = ssub.add_parser("rename", help="give a sample another name (not an existing one)")
    rename.add_argument("old", metavar="OLD")
    rename.add_argument("new", metavar="NEW")


def cmd_sample(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    settings = loaded.settings
    if args.sample_cmd == "delete":
        with _open_existing_store(settings) as store:
            return _sample_delete(settings, store, args.name, yes=args.yes)
    if args.sample_cmd == "rename":
        with _open_existing_store(settings) as store:
            store.rename_sample(args.old, args.new)
        print(f"sample {args.old} is now {args.new}; its report versions keep their files; "
              "files still in a watched folder named after the old name go on arriving "
              "under it (move the folder too)")
        return 0
    with Store.open(settings.paths.db) as store:
        closed = store.sample_state_close(args.name, "closed by hand", time.time())
    print(f"sample {args.name} closed; the daemon completes it once its files are processed"
          if closed else f"sample {args.name} was already closed")
    return 0


def _sample_delete(settings: Settings, store: Store, name: str, *, yes: bool) -> int:
    """Confirmed labels are a person's work: say how many go, and delete only when asked
    on a terminal or given --yes."""
    contents = store.sample_contents(name)
    warning = (f"; its {contents.labels} confirmed label(s) go too (keep them first: "
               "chromowatch labels export-csv --out FILE)" if contents.labels else "")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"would delete {contents.line()}{warning}",
                             hint=f"confirm with: chromowatch sample delete {name} --yes")
        print(f"this deletes {contents.line()}, its crop files and reports{warning}")
        if input(f"delete sample {name}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 0
    deleted = store.delete_sample(name)
    crops = settings.paths.crops  # only files chromowatch wrote there are removed
    files = remove_files([f for f in deleted.crop_files if Path(f).is_relative_to(crops)],
                         root=crops)
    reports = settings.paths.data / "reports" / render.file_stem(name)
    gone = f"{files} crop file(s)"
    if reports.is_dir():
        shutil.rmtree(reports)
        gone += f" and {reports}"
    print(f"deleted {deleted.line()}; removed {gone}")
    return 0


# -- reports, mail, export --------------------------------------------------------------


def _open_existing_store(settings: Settings) -> Store:
    if not settings.paths.db.exists():
        raise UsageError(f"no database at {settings.paths.db} yet",
                         hint="process some spreads first: chromowatch process PATH --sample NAME")
    return Store.open(settings.paths.db)


def _args_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("samples", nargs="+", metavar="SAMPLE")
    p.add_argument("--control", metavar="NAME", help="compare with this sample (default: "
                   "report.controls)")
    p.add_argument("--format", default="html,pdf", help="html, pdf or html,pdf (default)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: "
                   "<data_dir>/reports/<sample>/on-demand)")


def cmd_report(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    settings = loaded.settings
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    if not formats or set(formats) - set(render.FORMATS):
        raise UsageError(f"--format {args.format!r}: use html, pdf or html,pdf")
    model = report_data.current_model_info(settings)
    with _open_existing_store(settings) as store:
        several = len(args.samples) > 1
        for sample in args.samples:
            data = report_data.load_sample(settings, store, sample)
            control = args.control or report_data.control_for(settings, sample)
            label = publish.version_label_for(
                store, sample, publish.fingerprint(settings, data, model, control))
            stem = render.file_stem(sample)
            if args.out:
                out = Path(args.out) / stem if several else Path(args.out)
            else:
                out = settings.paths.data / "reports" / stem / "on-demand"
            files = render.write_report(settings, store, sample, out_dir=out, control=control,
                                        formats=formats, model=model, version_label=label,
                                        data=data)
            for path in (files.html, files.pdf):
                if path is not None:
                    print(path)
        if several:
            out = Path(args.out) if args.out else settings.paths.data / "reports" / "summary"
            files = render.write_summary(settings, store, args.samples, out_dir=out,
                                         formats=formats, model=model)
            for path in (files.html, files.pdf):
                if path is not None:
                    print(path)
    return 0


def _args_outbox(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retry", nargs="*", type=int, metavar="ID",
                   help="make unsent mail due now (all, or these ids) and send")
    p.add_argument("--pending", action="store_true", help="leave out mail already sent")
    p.add_argument("--json", action="store_true")


def cmd_outbox(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    settings = loaded.settings
    with _open_existing_store(settings) as store:
        if args.retry is not None:
            revived = store.retry_mail(time.time(), args.retry or None)
            sent = flush_outbox(settings, store)
            print(f"{revived} mail(s) retried now, {sent} sent")
        rows = store.outbox_rows(include_sent=not args.pending)
    if args.json:
        _print_json([asdict(r) for r in rows])  # recipients: a list
        return 0
    if not rows:
        print("the outbox is empty")
        return 0
    for r in rows:
        when = r.sent_at if r.status == "sent" else r.next_attempt_at
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else "-"
        what = "sent" if r.status == "sent" else "next try" if r.status == "pending" \
            else r.status
        error = f"  ({r.last_error})" if r.last_error and r.status != "sent" else ""
        print(f"{r.id:>4} {r.sample} v{r.version}  {r.status:<8} "
              f"tries {r.attempts}  {what} {stamp}{error}")
    return 0


def _args_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample", help="one sample (default: all)")
    p.add_argument("--format", choices=["csv", "json"], required=True)
    p.add_argument("--level", choices=["crops", "metaphases", "samples"], default="crops",
                   help="one row per crop (default), metaphase or sample")
    p.add_argument("--out", metavar="FILE", help="write here instead of stdout")


def cmd_export(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    settings = loaded.settings
    with _open_existing_store(settings) as store:
        samples = [args.sample] if args.sample else store.sample_names()
        if args.out:
            with open(args.out, "w", encoding="utf-8", newline="") as fh:
                n = export(settings, store, fh, samples=samples, level=args.level,
                           fmt=args.format)
            print(f"wrote {n} {args.level} rows to {args.out}", file=sys.stderr)
        else:
            export(settings, store, sys.stdout, samples=samples, level=args.level,
                   fmt=args.format)
    return 0


def _args_users(p: argparse.ArgumentParser) -> None:
    usub = p.add_subparsers(dest="users_cmd", required=True)
    ua = usub.add_parser("add", help="add a user of the web app")
    ua.add_argument("name", metavar="NAME")
    ua.add_argument("--role", required=True, choices=("viewer", "reviewer", "admin"),
                    help="viewer: reads; reviewer: also labels; admin: everything")
    up = usub.add_parser("passwd", help="set a user's password")
    up.add_argument("name", metavar="NAME")
    for q in (ua, up):
        q.add_argument("--password-file", required=True, metavar="FILE",
                       help="a file whose first line is the password (8 characters or more)")
    usub.add_parser("list", help="the users and their roles")
    ur = usub.add_parser("remove", help="remove a user (their labels stay)")
    ur.add_argument("name", metavar="NAME")


def cmd_users(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from chromowatch.web import users

    with Store.open(loaded.settings.paths.db) as store:
        if args.users_cmd == "add":
            print(users.add_user(store, args.name, args.role, Path(args.password_file)))
        elif args.users_cmd == "passwd":
            print(users.set_password(store, args.name, Path(args.password_file)))
        elif args.users_cmd == "remove":
            print(users.remove_user(store, args.name))
        else:
            for line in users.list_users(store):
                print(line)
    return 0


def _args_web(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default: [web] host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: [web] port, 8765)")


def cmd_web(args: argparse.Namespace, loaded: LoadedSettings) -> int:
    from chromowatch.web.serve import serve

    return serve(loaded.settings, args.host, args.port)


# -- parser ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One subcommand: its name and help line, the arguments it takes, what runs it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, LoadedSettings], int]


# In the order `chromowatch --help` lists them.
COMMANDS: tuple[Command, ...] = (
    Command("config", "show, validate or generate the configuration", _args_config, cmd_config),
    Command("demo", "the main job on an embedded default: generated spreads, installed (or "
            "bootstrapped) models, the per-sample A/B/C table", _args_demo, cmd_demo),
    Command("synth", "write synthetic spreads with known boxes (tests, demos)", _args_synth,
            cmd_synth),
    Command("segment", "find the chromosomes of spreads", _args_segment, cmd_segment),
    Command("classify", "classify single-chromosome crop images", _args_classify, cmd_classify),
    Command("process", "segment, enhance, classify and store spreads", _args_process,
            cmd_process),
    Command("results", "A/B/C counts and fractions per sample", _args_results, cmd_results),
    Command("crops", "import single-chromosome crops cut elsewhere and classify them",
            _args_crops, cmd_crops),
    Command("reclassify", "classify the stored crops again with the current model",
            _args_reclassify, cmd_reclassify),
    Command("models", "install, list and choose models", _args_models, cmd_models),
    Command("labels", "import and export confirmed labels", _args_labels, cmd_labels),
    Command("review", "the review queue: which crops a person should answer next",
            _args_review, cmd_review),
    Command("train", "fine-tune an ensemble on the confirmed labels; promote it only if it "
            "beats the current one on the holdout", _args_train, cmd_train),
    Command("run", "the daemon: watch the export folders and process every new spread, once",
            _args_run, cmd_run),
    Command("status", "the daemon's files per state, backlog, throughput, model and sources",
            _args_status, cmd_status),
    Command("retry", "queue failed or quarantined files again", _args_retry, cmd_retry),
    Command("sample", "sample commands", _args_sample, cmd_sample),
    Command("report", "render sample reports (HTML, PDF); several samples also give a summary "
            "side by side", _args_report, cmd_report),
    Command("outbox", "report mails: list them, retry the unsent now", _args_outbox, cmd_outbox),
    Command("export", "per-crop, per-metaphase or per-sample results as CSV or JSON",
            _args_export, cmd_export),
    Command("web", "the review web app: samples, review grid, reports (needs a user: "
            "`users add`)", _args_web, cmd_web),
    Command("users", "people who may log in to the web app, and their roles", _args_users,
            cmd_users),
)


def build_parser() -> argparse.ArgumentParser:
    """The global options, then one subparser per entry of COMMANDS."""
    parser = argparse.ArgumentParser(
        prog="chromowatch",
        description="Score sister-chromatid cohesion (class A/B/C) on metaphase spreads.",
    )
    parser.add_argument("--version", action="version", version=f"chromowatch {__version__}")
    parser.add_argument("--config", help="TOML configuration file (else $CHROMOWATCH_CONFIG, "
                        "else ~/.config/chromowatch/chromowatch.toml when present)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors in the log")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def configure_logging(level: str, verbose: int, quiet: bool) -> None:
    if quiet:
        level = "ERROR"
    elif verbose:
        level = "DEBUG"
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace, LoadedSettings], int] = args.func
    try:
        loaded = load_settings(args.config)
        configure_logging(loaded.settings.logging.level, args.verbose, args.quiet)
        return func(args, loaded)
    except ChromowatchError as exc:
        print(f"chromowatch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("chromowatch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
