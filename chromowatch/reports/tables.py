"""Plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence

from chromowatch.records import CLASS_NAMES
from chromowatch.store import SampleCounts

DEMO_NOTE = ("DEMONSTRATION: the samples so marked were scored by a model trained on generated "
             "spreads, not on expert labels; their numbers are not a measurement. Install a "
             "real model: chromowatch models fetch ikemoto2023 [--from DIR]")


def format_counts_table(rows: Sequence[SampleCounts]) -> str:
    """The per-sample A/B/C table people read in a terminal."""
    header = f"{'sample':<24} {'images':>6} {'scored':>6} " + " ".join(
        f"{c:>14}" for c in CLASS_NAMES
    ) + f" {'excluded':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = " ".join(f"{r.counts[c]:>5} ({r.fraction(c):6.1%})" for c in CLASS_NAMES)
        failed = f"  ({r.failed_images} failed)" if r.failed_images else ""
        demo = "  DEMONSTRATION" if r.demonstration else ""
        lines.append(f"{r.sample:<24} {r.images:>6} {r.scored:>6} {cells} {r.excluded:>8}"
                     f"{failed}{demo}")
    if any(r.demonstration for r in rows):
        lines.append(DEMO_NOTE)
    return "\n".join(lines)
