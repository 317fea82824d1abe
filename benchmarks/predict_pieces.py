"""Where `Ensemble.predict_proba`'s time goes, and what CUDA graphs change, on one device.

    python3 benchmarks/predict_pieces.py --device cuda [--spreads 40] [--against OLD.py]

The DenseNet161 + MobileNetV2 + SqueezeNet 1.1 ensemble (random weights: speed does not
depend on them) on the enhanced crops of synthetic spreads (what the daemon classifies),
best of 3 after a warm-up, at batch sizes 64 and 256:

- the whole `predict_proba`, eager and (on CUDA) with CUDA graphs, and the largest
  difference in member probabilities between the two;
- the preprocessing alone (`Ensemble._prepare`: on CUDA packing, one upload, resizing there);
- each member's forward pass alone on a prepared batch.

`--against FILE`: also time another version of chromowatch/classify/ensemble.py (say, the
file as it was at an earlier commit: `git show REV:chromowatch/classify/ensemble.py > old.py`)
on the same crops and weights, and report the largest difference from it: a before/after
in one run.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from daemon import enhanced_crops, random_bundles, spreads  # noqa: E402

from chromowatch.classify import ensemble as current  # noqa: E402
from chromowatch.classify.bundle import Bundle  # noqa: E402

Members = list[tuple[str, Bundle]]

def load_other(path: Path) -> ModuleType:
    """Another ensemble.py, importable beside the current one (same package)."""
    spec = importlib.util.spec_from_file_location("chromowatch.classify._other", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def best_of(fn: Callable[[], object], cuda: bool, rounds: int = 3) -> float:
    """The fastest of `rounds` runs, in seconds (the device synchronised around each)."""
    fastest = float("inf")
    for _ in range(rounds):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        fastest = min(fastest, time.perf_counter() - t0)
    return fastest


def predict_table(args: argparse.Namespace, members: Members, crops: list[np.ndarray]) -> None:
    """The whole predict_proba per variant and batch size, and its difference from eager."""
    cuda = args.device.startswith("cuda")
    variants: list[tuple[str, Callable[[int], current.Ensemble]]] = []
    if args.against is not None:
        other = load_other(args.against)
        variants.append(("--against", lambda bs: other.Ensemble(
            "t", members, device=args.device, batch_size=bs)))
    variants.append(("eager", lambda bs: current.Ensemble(
        "t", members, device=args.device, batch_size=bs, cuda_graphs=False)))
    if cuda:
        variants.append(("cuda graphs", lambda bs: current.Ensemble(
            "t", members, device=args.device, batch_size=bs, cuda_graphs=True)))

    print("\n| predict_proba | batch | crops/s | first call s | max prob difference from eager |")
    print("| --- | --- | --- | --- | --- |")
    for bs in args.batch_sizes:
        results = {}
        rows = []
        for name, make in variants:
            ens = make(bs)
            t0 = time.perf_counter()
            ens.predict_proba(crops)  # warm-up: cuDNN plans, graph captures
            first = time.perf_counter() - t0
            seconds = best_of(functools.partial(ens.predict_proba, crops), cuda)
            results[name] = ens.predict_proba(crops)[1]
            rows.append((name, len(crops) / seconds, first))
            del ens
            if cuda:
                torch.cuda.empty_cache()
        for name, rate, first in rows:
            diff = float(np.abs(results[name] - results["eager"]).max())
            print(f"| {name} | {bs} | {rate:,.0f} | {first:.1f} | {diff:.4f} |")


def _forward_10(ens: current.Ensemble, index: int, x: torch.Tensor) -> None:
    for _ in range(10):
        ens._forward(index, x)


def pieces_table(args: argparse.Namespace, members: Members, crops: list[np.ndarray]) -> None:
    """Preprocessing alone, then each member's forward pass alone."""
    cuda = args.device.startswith("cuda")
    ens = current.Ensemble("t", members, device=args.device, batch_size=64)
    group = ens._groups[0]
    seconds = best_of(lambda: [ens._prepare(group, crops[s:s + 64])
                               for s in range(0, len(crops), 64)], cuda)
    print(f"\npreprocessing alone (batches of 64): {len(crops) / seconds:,.0f} crops/s")
    print("\n| forward pass alone | batch | crops/s |")
    print("| --- | --- | --- |")
    with torch.inference_mode():
        for bs in args.batch_sizes:
            x = ens._prepare(group, (crops * (1 + bs // len(crops)))[:bs])
            for index, (arch, _) in enumerate(members):
                ens._forward(index, x)
                seconds = best_of(functools.partial(_forward_10, ens, index, x), cuda)
                graphs = " (graph)" if ens.cuda_graphs else ""
                print(f"| {arch}{graphs} | {bs} | {10 * bs / seconds:,.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--spreads", type=int, default=40)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--against", type=Path, help="another ensemble.py to compare with")
    args = parser.parse_args()

    cuda = args.device.startswith("cuda")
    members: Members = random_bundles("paper")
    with tempfile.TemporaryDirectory() as tmp:
        crops = enhanced_crops(spreads(args.spreads), Path(tmp))
    device_name = torch.cuda.get_device_name(0) if cuda else platform.processor()
    print(f"{len(crops)} crops of {args.spreads} synthetic spreads; {device_name}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    predict_table(args, members, crops)
    pieces_table(args, members, crops)
    if cuda:
        print(f"\npeak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
