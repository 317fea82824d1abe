"""Cross-sample validation on the real labels: train on one sample, test on the other.

    .venv/bin/python benchmarks/cross_sample.py [--out JSON] [--keep DIR] [--work DIR]
                                                [-- TRAIN_ARGS...]

Three data directories (in --work DIR, else a temporary one), each with the 30 published
ikemoto2023 SqueezeNets installed (current, and the base every training starts from):
"wt" with the ikemoto2023 WT crops (`labels import-folder --enhanced`), "ddx11" with the
342 boxes of ddx11 spreads 1-5 (`labels import-yolo`), "both" with both. `chromowatch train`
runs in each (as a command, its subprocess included, timed): "on-wt" and "on-ddx11" are the
candidates trained with one sample left out; "on-both" (the "current" ensemble) is what
`chromowatch train` builds from all labels with the default settings (its own cross-sample
validation included, whose figures the manifest records and this prints too; settings for
this run alone with --current-setting KEY=VALUE, e.g. max_epochs=6).

Then, per direction (trained on WT, tested on ddx11; and the reverse), on every labelled
crop of the test sample: the published ensemble (never trained on either), "on-both" (current: it
saw both samples, the test crops included apart from its holdout: optimistic), and the
candidate trained on the other sample only. Accuracy, per-class recall, true and predicted
A/B/C fractions and the fraction error (largest of the three differences).

--keep DIR copies the models folders of "wt" and "ddx11" (ensembles on-wt and on-ddx11, and
the published models) to DIR/trained-on-wt/models and DIR/trained-on-ddx11/models, with
DIR/kept.json saying what is where. Extra arguments after `--` go to every `chromowatch
train`; settings via CHROMOWATCH_TRAINING__* as usual.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "benchmarks"))
import train as train_bench  # noqa: E402

DATA = train_bench.DATA
SAMPLES = {"wt": "wt", "ddx11": "ddx11"}  # data directory -> sample name
CANDIDATE = {"wt": "on-wt", "ddx11": "on-ddx11"}


def _env(data_dir: Path) -> dict[str, str]:
    return train_bench.bench_env(data_dir)


def _run(args: list[str], data_dir: Path, extra: dict[str, str] | None = None
         ) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "chromowatch", *args],
                          env={**_env(data_dir), **(extra or {})},
                          text=True, stdout=subprocess.PIPE, stderr=None, check=False)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"chromowatch {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout}")
    return time.monotonic() - started, proc.stdout


def _prepare(data_dir: Path, which: list[str], published: Path) -> None:
    _run(["models", "fetch", "ikemoto2023", "--from", str(published)], data_dir)
    if "wt" in which:
        _run(["labels", "import-folder", str(DATA / "ikemoto2023" / "crops" / "wt"),
              "--enhanced", "--sample", "wt"], data_dir)
    if "ddx11" in which:
        _run(["labels", "import-yolo", str(DATA / "ddx11" / "images"),
              str(DATA / "ddx11" / "labels"), "--sample", "ddx11"], data_dir)


def _test_crops(data_dir: Path) -> list[Any]:
    from chromowatch.store import Store
    from chromowatch.training import dataset

    with Store.open(data_dir / "chromowatch.sqlite3") as store:
        crops, problems = dataset.load_labelled(store.current_labels())
    if problems:
        print("left out:", problems, flush=True)
    return crops


def _score(models_dir: Path, ensemble: str, crops: list[Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from chromowatch.classify.library import ModelLibrary
    from chromowatch.training import nets
    from chromowatch.training.calibrate import softmax
    from chromowatch.training.evaluate import score

    library = ModelLibrary(models_dir)
    members = [nets.net_from_bundle(library.load_bundle(m))
               for m in library.ensemble_info(ensemble).members]
    logits = nets.member_logits(members, [c.image for c in crops], torch.device("cpu"))
    labels = np.array([c.label for c in crops], np.int64)
    s = score(softmax(logits).mean(axis=0), labels, [c.sample for c in crops])
    per = next(iter(s["per_sample"].values()))
    return {"ensemble": ensemble, "members": len(members), "n": s["n"],
            "accuracy": s["accuracy"], "recall": s["recall"], "f1": s["f1"],
            "true_fractions": per["true_fractions"],
            "predicted_fractions": per["predicted_fractions"],
            "fraction_error": per["fraction_error"], "confusion_matrix": s["confusion_matrix"]}


def _line(label: str, r: dict[str, Any]) -> str:
    rec = " / ".join(f"{r['recall'][c]:.3f}" for c in "ABC")
    true = " / ".join(f"{r['true_fractions'][c]:.3f}" for c in "ABC")
    pred = " / ".join(f"{r['predicted_fractions'][c]:.3f}" for c in "ABC")
    return (f"| {label} | {r['accuracy']:.4f} | {rec} | {true} | {pred} | "
            f"{r['fraction_error']:.3f} |")


def _headline(cross: dict[str, Any] | None) -> str:
    if not cross:
        return "none"
    return f"accuracy {cross['accuracy']}, worst-group fraction error {cross['fraction_error_max']}"


def _keep(work: Path, keep: Path) -> None:
    keep.mkdir(parents=True, exist_ok=True)
    kept = {}
    for d in ("wt", "ddx11"):
        dest = keep / f"trained-on-{d}" / "models"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(work / d / "models", dest, ignore=shutil.ignore_patterns(".training"))
        kept[f"trained-on-{d}"] = {"models": str(dest), "ensemble": CANDIDATE[d],
                                   "trained_on_sample": SAMPLES[d],
                                   "also": "ikemoto2023 (the published 30, start points)"}
    (keep / "kept.json").write_text(json.dumps(kept, indent=2))
    print(f"kept: {keep}/trained-on-wt/models, {keep}/trained-on-ddx11/models "
          f"(ensembles on-wt, on-ddx11; CHROMOWATCH_PATHS__MODELS_DIR=... and --model)")


def _train_all(work: Path, published: Path, train_args: list[str],
               current_settings: dict[str, str]) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    outputs: dict[str, str] = {}
    for d, which, name in (("wt", ["wt"], "on-wt"), ("ddx11", ["ddx11"], "on-ddx11"),
                           ("both", ["wt", "ddx11"], "on-both")):
        manifest = work / d / "models" / "ensembles" / f"{name}.json"
        if manifest.is_file():  # a rerun with --work: trained already
            print(f"{name}: trained already in {work / d}", flush=True)
            continue
        _prepare(work / d, which, published)
        print(f"training {name} on {'+'.join(which)} ...", flush=True)
        seconds[name], outputs[name] = _run(["train", "--name", name, *train_args], work / d,
                                            current_settings if d == "both" else None)
        print(f"  {seconds[name]:.0f} s: {outputs[name].strip()}", flush=True)
    return {"seconds": seconds, "outputs": outputs}


def _directions(work: Path) -> dict[str, Any]:
    import torch

    torch.set_num_threads(int(os.environ.get("CHROMOWATCH_TRAINING__THREADS", "0") or 0)
                          or torch.get_num_threads())
    out = {}
    for train_on, test_on in (("wt", "ddx11"), ("ddx11", "wt")):
        crops = _test_crops(work / test_on)
        rows = {
            "published": _score(work / test_on / "models", "ikemoto2023", crops),
            "current on-both (saw both: optimistic)": _score(work / "both" / "models",
                                                             "on-both", crops),
            f"candidate {CANDIDATE[train_on]}": _score(work / train_on / "models",
                                                       CANDIDATE[train_on], crops),
        }
        out[f"trained on {train_on}, tested on {test_on}"] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--keep", type=Path, help="copy the on-wt and on-ddx11 models here")
    parser.add_argument("--work", type=Path, help="data directories here (kept), else temporary")
    parser.add_argument("--published", type=Path,
                        default=DATA / "ikemoto2023" / "models" / "squeezenet")
    parser.add_argument("--current-setting", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting for the on-both (current) run only")
    parser.add_argument("train_args", nargs="*")
    args = parser.parse_args()
    train_bench.require_real_data()
    tmp = tempfile.TemporaryDirectory(prefix="chromowatch-xval-bench-")
    work = args.work or Path(tmp.name)
    current_settings = {f"CHROMOWATCH_TRAINING__{k.upper()}": v for k, v in
                        (kv.split("=", 1) for kv in args.current_setting)}
    trained = _train_all(work, args.published, args.train_args, current_settings)
    if args.keep:
        _keep(work, args.keep)
    directions = _directions(work)
    manifest = json.loads((work / "both" / "models" / "ensembles" / "on-both.json").read_text())
    metrics = manifest["metrics"]
    print("\n| ensemble | accuracy | recall A / B / C | true A / B / C | predicted A / B / C "
          "| fraction error |\n| --- | --- | --- | --- | --- | --- |")
    for direction, rows in directions.items():
        print(f"| **{direction}** | | | | | |")
        for label, r in rows.items():
            print(_line(label, r))
    cross, published_cross = metrics.get("cross_sample"), metrics["compared_with"].get(
        "cross_sample")
    print("\n`chromowatch train` of on-both (both samples): holdout accuracy "
          f"{metrics['holdout_accuracy']}, cross-sample (in-job) {_headline(cross)}; "
          f"published on the same left-out groups: {_headline(published_cross)}")
    for label, c in (("current recipe", cross), ("published", published_cross)):
        for f in (c or {}).get("folds", []):
            print(f"  {label}: {f['group']} n={f['n']} accuracy {f['accuracy']} "
                  f"fraction error {f['fraction_error']} predicted {f['predicted_fractions']}")
    print(f"training: {metrics['training']['seconds']} s in the subprocess, of which the "
          f"cross-sample folds {metrics['training'].get('cross_sample_seconds')} s")
    result = {"current_settings": current_settings,
              "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
              "torch_threads": os.environ.get("CHROMOWATCH_TRAINING__THREADS", "default"),
              "train": trained, "directions": directions,
              "current_metrics": {k: v for k, v in metrics.items() if k != "training"},
              "current_training": metrics["training"]}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
