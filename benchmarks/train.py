"""Training on the real labels: time of `chromowatch train` and the holdout scores of the
trained ensemble next to the published 30-model ensemble, same run, same holdout.

    .venv/bin/python benchmarks/train.py [--out JSON] [--keep DIR] [-- TRAIN_ARGS...]

In a temporary data directory (never the user's): the published ikemoto2023 SqueezeNets are
installed from $CHROMOWATCH_REAL_DATA/ikemoto2023/models/squeezenet (current, the base),
the labels are imported as the README says (ikemoto2023 WT crops with
`labels import-folder --enhanced`, ddx11 spreads 1-5 with `labels import-yolo`), then
`chromowatch train` runs as a command (its subprocess included) and is timed wall-clock.
`--published DIR` takes the published files from elsewhere; a folder holding only some of
them (the GPU machine's transfer limit) installs those as "ikemoto2023", and the comparison
is then with that many published models, as the output says.
Scores come from the training run itself: the candidate and the current (published)
ensemble on the same holdout (20% of the crops by content hash). Extra arguments after
`--` go to `chromowatch train`; settings via CHROMOWATCH_TRAINING__* (and
CHROMOWATCH_ENHANCE__* / CHROMOWATCH_SEGMENT__*, which change the imported crops) as usual.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from chromowatch.classify.published import IKEMOTO2023  # noqa: E402

PASSED_SETTINGS = ("CHROMOWATCH_TRAINING__", "CHROMOWATCH_ENHANCE__", "CHROMOWATCH_SEGMENT__")
DATA = Path(os.environ.get("CHROMOWATCH_REAL_DATA", REPO.parent / "shared" / "data"))


def _run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "chromowatch", *args], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=None, check=False)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"chromowatch {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout}")
    return time.monotonic() - started, proc.stdout


def require_real_data() -> None:
    """The shared labels (ikemoto2023 WT crops, ddx11 spreads) or a clear exit."""
    if not (DATA / "ikemoto2023").is_dir() or not (DATA / "ddx11").is_dir():
        raise SystemExit(f"real data not found at {DATA} (set CHROMOWATCH_REAL_DATA)")


def bench_env(data_dir: Path) -> dict[str, str]:
    """The environment of a `chromowatch` child working in `data_dir`: the user's own
    CHROMOWATCH_* settings left out, except those a benchmark passes on on purpose."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHROMOWATCH_")
           or k.startswith(PASSED_SETTINGS) or k == "CHROMOWATCH_REAL_DATA"}
    env["CHROMOWATCH_PATHS__DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                        if p)
    return env


def _install_some(folder: Path, models: Path) -> float:
    """The published files present in `folder` (sha256-checked) as ensemble ikemoto2023."""
    from chromowatch.classify import ModelLibrary
    from chromowatch.classify.published import fetch_published

    started = time.monotonic()
    files = [f for f in IKEMOTO2023.files if (folder / f).is_file()]
    if not files:
        raise SystemExit(f"no published SqueezeNet_N.pth in {folder}")
    print(f"note: {len(files)} of the {len(IKEMOTO2023.files)} published models found in "
          f"{folder}; 'published' below means these {len(files)}", flush=True)
    fetch_published(ModelLibrary(models), IKEMOTO2023.subset(files), folder, timeout=30)
    return time.monotonic() - started


def _fmt(m: dict[str, object] | None) -> str:
    if not m:
        return "-"
    recall = m["recall"]
    assert isinstance(recall, dict)
    f1 = m.get("f1") or {}
    assert isinstance(f1, dict)
    per = " ".join(f"{c} {recall[c]:.3f}" for c in "ABC") + ", F1 " + " ".join(
        f"{c} {f1.get(c, 0):.3f}" for c in "ABC")
    samples = m["per_sample"]
    assert isinstance(samples, dict)
    frac = ", ".join(f"{s} {v['fraction_error']:.3f}" for s, v in samples.items())
    return (f"accuracy {m['accuracy']:.4f} (n={m['n']}), recall {per}, "
            f"fraction error per sample: {frac}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--keep", help="use this data directory (kept) instead of a temporary one")
    parser.add_argument("--published", type=Path,
                        default=DATA / "ikemoto2023" / "models" / "squeezenet",
                        help="folder of the published SqueezeNet_N.pth files")
    parser.add_argument("train_args", nargs="*")
    args = parser.parse_args()
    require_real_data()
    tmp = tempfile.TemporaryDirectory(prefix="chromowatch-train-bench-")
    data_dir = Path(args.keep) if args.keep else Path(tmp.name)
    env = bench_env(data_dir)
    steps = {}
    if all((args.published / f).is_file() for f in IKEMOTO2023.files):
        steps["fetch"], _ = _run(["models", "fetch", "ikemoto2023", "--from",
                                  str(args.published)], env)
    else:
        steps["fetch"] = _install_some(args.published, data_dir / "models")
    steps["import_folder"], out1 = _run(["labels", "import-folder",
                                         str(DATA / "ikemoto2023" / "crops" / "wt"),
                                         "--enhanced"], env)
    steps["import_yolo"], out2 = _run(["labels", "import-yolo", str(DATA / "ddx11" / "images"),
                                       str(DATA / "ddx11" / "labels"), "--sample", "ddx11"], env)
    print("labels:", out1.strip(), "|", out2.strip(), flush=True)
    steps["train"], out = _run(["train", "--name", "bench", *args.train_args], env)
    print(out.strip())
    manifest = json.loads((data_dir / "models" / "ensembles" / "bench.json").read_text())
    metrics = manifest["metrics"]
    result = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "torch_threads": os.environ.get("CHROMOWATCH_TRAINING__THREADS", "default"),
        "seconds": {k: round(v, 1) for k, v in steps.items()},
        "trained": metrics["training"],
        "candidate": metrics["holdout"],
        "published": metrics["compared_with"]["holdout"],
        "train_output": out,
    }
    print(f"\ntrain wall-clock: {steps['train']:.0f} s (training subprocess "
          f"{metrics['training']['seconds']:.0f} s, of which fine-tuning "
          f"{metrics['training']['train_seconds']:.0f} s)")
    print(f"trained ensemble ({len(manifest['members'])} members): {_fmt(result['candidate'])}")
    published = json.loads((data_dir / "models" / "ensembles" / "ikemoto2023.json").read_text())
    print(f"published ikemoto2023 ({len(published['members'])} members): "
          f"{_fmt(result['published'])}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
