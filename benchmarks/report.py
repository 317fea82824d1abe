"""Benchmark: HTML + PDF report of a 2,000-crop sample with galleries and spread overlays.

    .venv/bin/python benchmarks/report.py [--crops 2000] [--spreads 40] [--repeat 3]

Builds a temporary database (synthetic rows and real PNG files: 1440x1024 spreads, one crop
image per chromosome) plus a 500-crop control, then times `write_report` (statistics with
the adjusted correction and the control comparison, assets, HTML, PDF in its subprocess).
Peak memory: this process's max RSS and the largest child's (the PDF renderer).
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from chromowatch.records import BBox, Prediction
from chromowatch.reports.data import ModelInfo
from chromowatch.reports.render import write_report
from chromowatch.settings import Settings
from chromowatch.store import ImageRow, Store, StoredCrop

CONFUSION: list[list[float]] = [[97, 3, 0], [2, 85, 13], [0, 2, 98]]


def fill(store: Store, root: Path, sample: str, crops: int, spreads: int, seed: int) -> None:
    import cv2

    rng = np.random.default_rng(seed)
    per_spread = -(-crops // spreads)
    made = 0
    for s in range(spreads):
        n = min(per_spread, crops - made)
        if n <= 0:
            break
        spread = np.full((1024, 1440, 3), 190, np.uint8)
        spread += rng.integers(0, 12, spread.shape, dtype=np.uint8)
        items = []
        sha = hashlib.sha256(f"{sample}/{s}".encode()).hexdigest()
        for i in range(n):
            x, y = 20 + (i % 20) * 70, 20 + (i // 20) * 110
            spread[y + 10:y + 90, x + 25:x + 40] = 70
            crop = np.full((100, 60, 3), 255, np.uint8)
            crop[10:90, 22:38] = 60
            path = root / "crops" / sample / f"{s:03d}-{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), crop)
            p = rng.dirichlet([4, 2, 2])
            label = "ABC"[int(np.argmax(p))]
            probs = {"A": float(p[0]), "B": float(p[1]), "C": float(p[2])}
            flags = frozenset({"touching"}) if rng.random() < 0.03 else frozenset()
            items.append(StoredCrop(i, BBox(x, y, 60, 100), 0, flags, str(path),
                                    Prediction(label, probs, {"m": list(p)}, "bench-0001")))
        image = root / "spreads" / sample / f"{s:03d}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image), spread)
        row = ImageRow(path=str(image), sample=sample, sha256=sha, size=1, width=1440,
                       height=1024, metaphases=1)
        store.save_image(row, items)
        made += n


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crops", type=int, default=2000)
    parser.add_argument("--spreads", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(paths={"data_dir": str(root / "data")})  # type: ignore[arg-type]
        model = ModelInfo("bench", "", 3, {"accuracy": 0.93}, CONFUSION, "b")
        with Store.open(settings.paths.db) as store:
            t = time.perf_counter()
            fill(store, root, "sample", args.crops, args.spreads, seed=1)
            fill(store, root, "control", 500, 10, seed=2)
            print(f"setup: {time.perf_counter() - t:.1f} s (not part of the timing)")
            times: dict[str, list[float]] = {"html": [], "html+pdf": []}
            for r in range(args.repeat):
                for label, formats in (("html", ["html"]), ("html+pdf", ["html", "pdf"])):
                    t = time.perf_counter()
                    files = write_report(settings, store, "sample", out_dir=root / f"r{r}{label}",
                                         control="control", formats=formats, model=model)
                    times[label].append(time.perf_counter() - t)
            assert files.pdf is not None
            pdf_mb = files.pdf.stat().st_size / 2**20
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"sample: {args.crops} crops on {args.spreads} spreads; control 500 crops")
    for label, values in times.items():
        print(f"{label:>9}: median {statistics.median(values):.2f} s "
              f"(runs: {', '.join(f'{v:.2f}' for v in values)})")
    print(f"PDF size: {pdf_mb:.1f} MiB")
    print(f"peak RSS: this process {self_mb:.0f} MiB, PDF renderer {child_mb:.0f} MiB")
    ok = max(times["html+pdf"]) < 10 and max(self_mb, child_mb) < 1024
    print("within the budget (< 10 s, < 1 GiB)" if ok else "OVER the budget (10 s, 1 GiB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
