"""Test-time augmentation: does averaging over flips and right-angle rotations help?

    .venv/bin/python benchmarks/tta.py DATA_DIR [--device auto] [--ensembles a,b]

DATA_DIR is a chromowatch data directory with confirmed labels and installed ensembles, such
as the one `benchmarks/train.py --keep DIR` leaves. Every ensemble is scored on the
validation and the holdout crops of the training split (same hashing as `train`), with the
crop as is, with its mirror image added, with its four right-angle rotations, and with all
eight symmetries of the square; the class of a chromosome does not change under any of them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

Transform = Callable[[np.ndarray], np.ndarray]
IDENTITY: list[Transform] = [lambda a: a]
MIRROR: list[Transform] = [lambda a: a, lambda a: a[:, ::-1]]
ROT4: list[Transform] = [lambda a, k=k: np.rot90(a, k) for k in range(4)]  # type: ignore[misc]
DIHEDRAL: list[Transform] = ROT4 + [lambda a, k=k: np.rot90(a[:, ::-1], k)  # type: ignore[misc]
                                    for k in range(4)]
SETS = {"none": IDENTITY, "mirror": MIRROR, "rot4": ROT4, "dihedral8": DIHEDRAL}


def probs_with(ensemble: object, images: Sequence[np.ndarray],
               transforms: Sequence[Transform]) -> np.ndarray:
    total = None
    for t in transforms:
        p, _ = ensemble.predict_proba([np.ascontiguousarray(t(i)) for i in images])  # type: ignore[attr-defined]
        total = p if total is None else total + p
    assert total is not None
    return total / len(transforms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ensembles", help="comma-separated; default: every installed one")
    args = parser.parse_args()

    from chromowatch.classify.library import ModelLibrary
    from chromowatch.settings import Settings
    from chromowatch.store import Store
    from chromowatch.training import dataset
    from chromowatch.training.evaluate import score

    settings = Settings(paths={"data_dir": str(args.data_dir)})  # type: ignore[arg-type]
    with Store.open(settings.paths.db) as store:
        rows = store.current_labels()
    crops, _ = dataset.load_labelled(rows)
    parts = dataset.split(crops, settings.training.holdout_percent,
                          settings.training.validation_percent)
    library = ModelLibrary(settings.paths.models)
    names = (args.ensembles.split(",") if args.ensembles
             else [e.name for e in library.list_ensembles()])
    print("| ensemble | split | n | " + " | ".join(SETS) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in SETS) + " |")
    for name in names:
        ensemble = library.load_ensemble(name, device=args.device)
        for part in (dataset.VALIDATION, dataset.HOLDOUT):
            items = parts[part]
            images = [c.image for c in items]
            y = np.array([c.label for c in items])
            samples = [c.sample for c in items]
            cells = []
            for transforms in SETS.values():
                started = time.perf_counter()
                probs = probs_with(ensemble, images, transforms)
                took = time.perf_counter() - started
                m = score(probs, y, samples)
                worst = max(v["fraction_error"] for v in m["per_sample"].values())
                cells.append(f"{m['accuracy']:.3f} (frac err {worst:.3f}, {took:.1f} s)")
            print(f"| {name} | {part} | {len(items)} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
