"""Daemon benchmark: end-to-end throughput, latency at low load, memory under a huge backlog.

Runs the real daemon (`python -m chromowatch run`) on temporary folders, with an ensemble of
random-weight bundles (throughput does not depend on the weights), and measures in the same run
the same ensemble's raw classify throughput on the same crops (Ensemble.predict on crops
already in memory), so the daemon's cost is a ratio, not a guess.

    .venv/bin/python benchmarks/daemon.py throughput --spreads 40
    .venv/bin/python benchmarks/daemon.py throughput --spreads 200 --ensemble paper --device cuda
    .venv/bin/python benchmarks/daemon.py latency --files 20
    .venv/bin/python benchmarks/daemon.py backlog --files 100000

throughput: all spreads are renamed into the inbox at once; spreads/s and crops/s from the first
file becoming stable to the last file's results committed (the ledger's stable_at and
finished_at). latency: one spread every --interval seconds; per file, stable -> committed
(p50, p95) and written -> committed. backlog: N small distinct PNGs are put in the inbox before
start; the peak resident memory (VmHWM) of the daemon and its workers is read while it scans,
ledgers and starts working through them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chromowatch.classify.architectures import build_model  # noqa: E402
from chromowatch.classify.bundle import Bundle  # noqa: E402
from chromowatch.classify.library import ModelLibrary  # noqa: E402
from chromowatch.demo.synth import write_dataset  # noqa: E402
from chromowatch.pipeline import prepare  # noqa: E402
from chromowatch.settings import Settings  # noqa: E402

ENSEMBLES = {
    "tiny": [("tinycnn", 64)],
    "paper": [("densenet161", 224), ("mobilenet_v2", 224), ("squeezenet1_1", 224)],
}


def random_bundles(which: str) -> list[tuple[str, Bundle]]:
    """(arch, bundle) of the ensemble `which` with random weights, the same every call."""
    torch.manual_seed(0)
    return [(arch, Bundle(arch=arch, state_dict=build_model(arch).state_dict(),
                          class_names=("A", "B", "C"), input_size=(size, size)))
            for arch, size in ENSEMBLES[which]]


def install_ensemble(models: Path, which: str) -> str:
    library = ModelLibrary(models)
    names = []
    for arch, bundle in random_bundles(which):
        library.save_bundle(bundle, f"bench-{arch}")
        names.append(f"bench-{arch}")
    library.save_ensemble(f"bench-{which}", names)
    library.set_current(f"bench-{which}")
    return f"bench-{which}"


def spreads(n: int, seed: int = 5) -> list[bytes]:
    """n distinct synthetic spreads as PNG bytes (variants of a few generated ones)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_dataset(Path(tmp), samples=1, spreads=min(n, 6), seed=seed)
        base = [np.asarray(cv2.imread(str(p), cv2.IMREAD_COLOR)) for p in paths]
    out = []
    for i in range(n):
        img = base[i % len(base)].copy()
        img[0, 0] = (i % 256, (i // 256) % 256, 7)
        out.append(cv2.imencode(".png", img)[1].tobytes())
    return out


def config(tmp: Path, inbox: Path, models: Path, args: argparse.Namespace) -> Path:
    path = tmp / "bench.toml"
    path.write_text(f"""
[paths]
data_dir = "{tmp / 'data'}"
models_dir = "{models}"
[classify]
device = "{args.device}"
batch_size = {args.batch_size}
[watch]
roots = ["{inbox}"]
stable_s = 1.0
closed_stable_s = 0.25
[daemon]
workers = {args.workers}
queue_size = {args.queue_size}
heartbeat_s = 1.0
[schedule]
retrain = false
""")
    return path


def start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "chromowatch", "--config", str(cfg), "run"],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO)
    return proc


def rows(db: Path) -> list[sqlite3.Row]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM watched_files").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def wait_done(db: Path, n: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(r["state"] in ("done", "quarantined") for r in rows(db)) >= n:
            return
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with {proc.returncode}")
        time.sleep(0.2)
    raise SystemExit(f"not done within {timeout} s")


def wait_running(db: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                ok = conn.execute("SELECT 1 FROM daemon_state").fetchone()
                conn.close()
                if ok:
                    return
            except sqlite3.OperationalError:
                pass
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with {proc.returncode}")
        time.sleep(0.2)
    raise SystemExit("the daemon did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)


def raw_classify(models: Path, name: str, blobs: list[bytes], args: argparse.Namespace,
                 tmp: Path) -> tuple[float, int]:
    """The same ensemble's crops/s on the crops of the same spreads, already in memory."""
    crops = enhanced_crops(blobs[: args.raw_spreads], tmp / "raw")
    ensemble = ModelLibrary(models).load_ensemble(name, device=args.device,
                                                  batch_size=args.batch_size)
    ensemble.predict(crops[: args.batch_size])  # warm-up
    best = 0.0
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ensemble.predict(crops)
        best = max(best, len(crops) / (time.perf_counter() - t0))
    return best, len(crops)


def enhanced_crops(blobs: list[bytes], folder: Path) -> list[np.ndarray]:
    """The enhanced crops of these spreads, as the daemon's workers make them (files and
    data under `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = Settings(paths={"data_dir": str(folder / "data")})  # type: ignore[arg-type]
    crops: list[np.ndarray] = []
    for i, blob in enumerate(blobs):
        path = folder / f"spread{i}.png"
        path.write_bytes(blob)
        crops.extend(c.enhanced for c in prepare(path, settings).crops)
    return crops


def cmd_throughput(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    models = tmp / "models"
    name = install_ensemble(models, args.ensemble)
    blobs = spreads(args.spreads)
    inbox = tmp / "inbox"
    staging = tmp / "staging" / "S1"
    (inbox / "S1").mkdir(parents=True)
    staging.mkdir(parents=True)
    for i, blob in enumerate(blobs):
        (staging / f"s{i:05d}.png").write_bytes(blob)
    cfg = config(tmp, inbox, models, args)
    db = tmp / "data" / "chromowatch.sqlite3"
    proc = start(cfg, tmp / "daemon.log")
    try:
        wait_running(db, proc)
        for f in sorted(staging.iterdir()):
            os.rename(f, inbox / "S1" / f.name)
        wait_done(db, len(blobs), args.timeout, proc)
    finally:
        stop(proc)
    done = [r for r in rows(db) if r["state"] == "done"]
    first = min(r["stable_at"] for r in done)
    last = max(r["finished_at"] for r in done)
    crops = sum(r["crops"] for r in done)
    raw, raw_n = raw_classify(models, name, blobs, args, tmp)
    e2e = crops / (last - first)
    return {
        "spreads": len(done), "crops": crops, "seconds": round(last - first, 2),
        "spreads_per_s": round(len(done) / (last - first), 2),
        "crops_per_s": round(e2e, 1),
        "raw_classify_crops_per_s": round(raw, 1), "raw_classify_crops": raw_n,
        "end_to_end_over_raw_classify": round(e2e / raw, 3),
    }


def cmd_latency(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    models = tmp / "models"
    install_ensemble(models, args.ensemble)
    blobs = spreads(args.files)
    inbox = tmp / "inbox"
    (inbox / "S1").mkdir(parents=True)
    cfg = config(tmp, inbox, models, args)
    db = tmp / "data" / "chromowatch.sqlite3"
    proc = start(cfg, tmp / "daemon.log")
    written: dict[str, float] = {}
    try:
        wait_running(db, proc)
        for i, blob in enumerate(blobs):
            part = inbox / "S1" / f"l{i:04d}.png.part"
            part.write_bytes(blob)
            final = inbox / "S1" / f"l{i:04d}.png"
            os.rename(part, final)  # written, then renamed into place, as exporters do
            written[str(final)] = time.time()
            time.sleep(args.interval)
        wait_done(db, len(blobs), args.timeout, proc)
    finally:
        stop(proc)
    done = [r for r in rows(db) if r["state"] == "done"]
    commit = sorted(r["finished_at"] - r["stable_at"] for r in done)
    total = sorted(r["finished_at"] - written[r["path"]] for r in done)

    def pct(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)), 3)

    return {
        "files": len(done), "interval_s": args.interval,
        "stable_to_committed_p50_s": pct(commit, 50),
        "stable_to_committed_p95_s": pct(commit, 95),
        "written_to_committed_p50_s": pct(total, 50),
        "written_to_committed_p95_s": pct(total, 95),
        "mean_crops": round(statistics.mean(r["crops"] for r in done), 1),
    }


def _hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cmd_backlog(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    models = tmp / "models"
    install_ensemble(models, "tiny")
    inbox = tmp / "inbox"
    t0 = time.monotonic()
    rng = np.random.default_rng(0)
    base = rng.integers(180, 220, (48, 48, 3), dtype=np.uint8)
    for i in range(args.files):
        d = inbox / f"S{i // 10000:02d}"
        if i % 10000 == 0:
            d.mkdir(parents=True)
        img = base.copy()
        img[0, 0] = (i % 256, (i // 256) % 256, (i // 65536) % 256)
        (d / f"b{i:06d}.png").write_bytes(cv2.imencode(".png", img)[1].tobytes())
    made = time.monotonic() - t0
    cfg = config(tmp, inbox, models, args)
    db = tmp / "data" / "chromowatch.sqlite3"
    proc = start(cfg, tmp / "daemon.log")
    peak_main = peak_total = 0
    samples = []
    try:
        wait_running(db, proc)
        started = time.monotonic()
        while time.monotonic() - started < args.watch_s:
            main = _hwm_kib(proc.pid)
            total = main + sum(_hwm_kib(c) for c in _children(proc.pid))
            peak_main, peak_total = max(peak_main, main), max(peak_total, total)
            if int(time.monotonic() - started) % 15 == 0:
                counts: dict[str, int] = {}
                for r in rows(db):
                    counts[r["state"]] = counts.get(r["state"], 0) + 1
                samples.append((round(time.monotonic() - started), counts))
            time.sleep(1.0)
    finally:
        stop(proc)
    counts = {}
    for r in rows(db):
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return {
        "files": args.files, "made_in_s": round(made, 1), "watched_s": args.watch_s,
        "peak_rss_main_mib": round(peak_main / 1024, 1),
        "peak_rss_total_mib": round(peak_total / 1024, 1),
        "ledger_at_end": counts,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["throughput", "latency", "backlog"])
    p.add_argument("--spreads", type=int, default=40)
    p.add_argument("--files", type=int, default=20)
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--ensemble", choices=sorted(ENSEMBLES), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--queue-size", type=int, default=8)
    p.add_argument("--raw-spreads", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--watch-s", type=float, default=120.0)
    p.add_argument("--timeout", type=float, default=1800.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="cw-bench-") as tmp:
        result = {"throughput": cmd_throughput, "latency": cmd_latency,
                  "backlog": cmd_backlog}[args.mode](args, Path(tmp))
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
