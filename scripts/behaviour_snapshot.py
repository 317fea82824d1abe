"""Fingerprints of what chromowatch produces, to show that a refactor changed no behaviour.

Writes one JSON file: sha256 of every crop's pixels, mask, enhanced pixels, box, metaphase and
flags on ddx11 spreads 1-5 and three synthetic draws; and, through the CLI in a fresh data
folder, `classify --json` on the WT crops, `process --json`, `results --json` and
`export --format json` on ddx11 with the published SqueezeNet models (timestamps, paths of the
temporary folder and database ids normalised away). Run it before and after a change and diff:

    .venv/bin/python scripts/behaviour_snapshot.py before.json
    ... change ...
    .venv/bin/python scripts/behaviour_snapshot.py after.json && diff before.json after.json

`--quick` leaves out the CLI part (minutes on two cores with 30 models).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = Path(os.environ.get("CHROMOWATCH_REAL_DATA", REPO.parent / "shared" / "data"))
SYNTH_DRAWS = ((0, 2, 4), (1, 2, 4), (7, 2, 4))  # (seed, samples, spreads per sample)
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _segment_module() -> Any:
    try:
        from chromowatch.segmentation import segment as module
    except ImportError:  # before the move into chromowatch/segmentation/
        from chromowatch.segmentation import segment as module  # type: ignore[no-redef]
    return module


def _crops_fingerprint(rgb: Any, settings: Any) -> list[dict[str, Any]]:
    from chromowatch.enhance import enhance_crop

    seg = _segment_module().segment(rgb, settings.segment)
    out = []
    for crop in seg.crops:
        mask = b"" if crop.mask is None else crop.mask.tobytes()
        out.append(
            {
                "bbox": crop.bbox.as_list(),
                "metaphase": crop.metaphase,
                "flags": sorted(crop.flags),
                "rgb": _sha(crop.rgb.tobytes()),
                "mask": _sha(mask),
                "enhanced": _sha(enhance_crop(crop, settings.enhance).tobytes()),
            }
        )
    return out


def segmentation_part() -> dict[str, Any]:
    from chromowatch.ingest import read_spread
    from chromowatch.settings import Settings

    try:
        from chromowatch.demo.run.synth import dataset_spread
    except ImportError:
        from chromowatch.demo.synth import dataset_spread  # type: ignore[no-redef]

    settings = Settings()
    result: dict[str, Any] = {}
    for n in range(1, 6):
        spread = read_spread(DATA / "ddx11" / "images" / f"{n}.png", settings.ingest)
        result[f"ddx11/{n}"] = _crops_fingerprint(spread.rgb, settings)
    for seed, samples, spreads in SYNTH_DRAWS:
        for s in range(samples):
            for i in range(spreads):
                rgb = dataset_spread(seed, s, i).rgb
                result[f"synth/{seed}/{s}/{i}"] = _crops_fingerprint(rgb, settings)
    return result


def _normalise(text: str, root: str) -> Any:
    text = text.replace(root, "<TMP>")
    text = TIMESTAMP.sub("<TIME>", text)
    return json.loads(text)


def cli_part() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        # This checkout's package, whatever the venv's editable install points at.
        env = {**os.environ, "HOME": tmp, "XDG_DATA_HOME": f"{tmp}/data",
               "XDG_CONFIG_HOME": f"{tmp}/config", "PYTHONPATH": str(REPO)}

        def run(*args: str) -> str:
            proc = subprocess.run([sys.executable, "-m", "chromowatch", "-q", *args], env=env,
                                  cwd=tmp, capture_output=True, text=True, check=False)
            if proc.returncode not in (0, 3):
                raise SystemExit(f"chromowatch {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stderr}")
            return proc.stdout

        run("models", "fetch", "ikemoto2023", "--from",
            str(DATA / "ikemoto2023" / "models" / "squeezenet"))
        images = [str(DATA / "ddx11" / "images" / f"{n}.png") for n in range(1, 6)]
        return {
            "classify": _normalise(
                run("classify", "--enhanced", "--json", str(DATA / "ikemoto2023" / "crops" / "wt")),
                str(DATA),
            ),
            "process": _normalise(run("process", *images, "--sample", "ddx11", "--json"), tmp),
            "results": _normalise(run("results", "--json"), tmp),
            "export": _normalise(run("export", "--format", "json"), tmp),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true", help="segmentation part only")
    args = parser.parse_args()
    snapshot = {"segmentation": segmentation_part()}
    if not args.quick:
        snapshot["cli"] = cli_part()
    args.out.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
    crops = sum(len(v) for v in snapshot["segmentation"].values())
    print(f"{args.out}: {len(snapshot['segmentation'])} spreads, {crops} crops")


if __name__ == "__main__":
    main()
