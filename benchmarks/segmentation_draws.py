"""Segmentation floors on many synthetic draws, one row per draw.

The issue's floors (recall >= 0.97 for each class, precision >= 0.95 at IoU >= 0.5) hold for a
set of spreads; one synthetic draw (chromowatch.demo.synth.write_dataset: 3 samples of N spreads,
one seed) is such a set, and draws differ in how many chromosomes are drawn pressed together.
This script draws seeds (or reuses drawn ones from `--cache`), segments every spread with
chromowatch only (matching and reading as benchmarks/segmentation.py does), and prints each
draw's recall and precision (bold: under a floor), how many draws meet every floor, and the
counts pooled over all draws, touching and free chromosomes apart. No timing: use
segmentation.py for speed.

    .venv/bin/python benchmarks/segmentation_draws.py --seeds 0-79 --cache /tmp/draws
    .venv/bin/python benchmarks/segmentation_draws.py --seeds 48-79 --json

Drawing and measuring one seed (30 spreads) takes about 14 s on this 2-core machine; seeds
0-79 about 9 minutes, 2 with the draws cached. One process per core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import segmentation as bench

from chromowatch.demo import synth

RECALL_FLOOR = 0.97
PRECISION_FLOOR = 0.95


def parse_seeds(text: str) -> list[int]:
    """'0-79', '3', '1,5,9-11' -> the seeds, in order, each once."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        first = int(low)
        last = int(high) if high else first
        if last < first:
            raise argparse.ArgumentTypeError(f"seed range {part!r} runs backwards")
        seeds.extend(s for s in range(first, last + 1) if s not in seeds)
    return seeds


def _draw(job: tuple[Path, int, int]) -> Path:
    """Write one draw's spreads unless the folder already holds them (truth.json written last)."""
    root, seed, spreads = job
    out = root / f"seed-{seed}"
    if len(list(out.glob("*/truth.json"))) < 3:
        synth.write_dataset(out, samples=3, spreads=spreads, seed=seed)
    return out


def _measure(folder: Path) -> bench.Tally:
    segmenters = {k: v for k, v in bench.make_segmenters().items() if k == "chromowatch"}
    return bench.evaluate(folder, segmenters, repeat=1)["chromowatch"]


def meets_floors(t: bench.Tally) -> bool:
    return (
        all(t.recall(c) >= RECALL_FLOOR for c in range(3)) and t.precision >= PRECISION_FLOOR
    )


def table(rows: Sequence[tuple[int, bench.Tally]]) -> str:
    def cell(value: float, floor: float) -> str:
        return f"**{value:.4f}**" if value < floor else f"{value:.3f}"

    lines = [
        "| draw | labelled A / B / C | recall A | recall B | recall C | precision | crops |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for seed, t in rows:
        recalls = " | ".join(cell(t.recall(c), RECALL_FLOOR) for c in range(3))
        lines.append(
            f"| seed {seed} | {t.truth[0]} / {t.truth[1]} / {t.truth[2]} | {recalls} "
            f"| {cell(t.precision, PRECISION_FLOOR)} | {t.crops} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-9"),
                        help="seeds to draw, e.g. 0-79 or 1,5,9-11 (default 0-9)")
    parser.add_argument("--spreads", type=int, default=10, help="spreads per sample (3 samples)")
    parser.add_argument("--cache", type=Path, help="keep draws here and reuse them")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per core; 1: none)")
    args = parser.parse_args(argv)
    if args.spreads < 1 or args.processes < 1:
        parser.error("--spreads and --processes must be at least 1")

    with tempfile.TemporaryDirectory() as tmp:
        root = args.cache or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        jobs = [(root, s, args.spreads) for s in args.seeds]
        if args.processes == 1:
            bench._one_thread()
            tallies = [_measure(_draw(job)) for job in jobs]
        else:
            with Pool(args.processes, initializer=bench._one_thread) as pool:
                tallies = pool.map(_measure, pool.map(_draw, jobs))
    rows = list(zip(args.seeds, tallies, strict=True))
    failing = [seed for seed, t in rows if not meets_floors(t)]
    pooled = bench.pooled("pooled", tallies)
    if args.json:
        out = {
            "draws": len(rows),
            "meeting_every_floor": len(rows) - len(failing),
            "under_a_floor": failing,
            "pooled": pooled.as_dict(timing=False),
            "per_draw": {f"seed {s}": t.as_dict(timing=False) for s, t in rows},
        }
        print(json.dumps(out, indent=2))
        return 0
    print(table(rows))
    print()
    print(
        f"draws meeting every floor: {len(rows) - len(failing)} of {len(rows)}"
        + (f" (under a floor: seeds {', '.join(map(str, failing))})" if failing else "")
    )
    print(
        "pooled: recall " + " / ".join(f"{pooled.recall(c):.3f}" for c in range(3))
        + f", precision {pooled.precision:.3f}; drawn touching another: "
        + " / ".join(f"{pooled.touching_recall(c):.3f}" for c in range(3))
        + ", the rest: " + " / ".join(f"{pooled.free_recall(c):.3f}" for c in range(3))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
