"""Classification throughput: chromowatch's Ensemble next to a plain torchvision loop, same run.

    .venv/bin/python benchmarks/classify.py [--crops-ikemoto 128] [--crops-paper 64] [--rounds 2]

Two ensembles: "ikemoto2023" (the 30 published SqueezeNets, installed from
$CHROMOWATCH_REAL_DATA/ikemoto2023/models/squeezenet when present, else 30 random-weight
squeezenet1_1 bundles: the speed is the same) and "paper" (DenseNet161 + MobileNetV2 +
SqueezeNet 1.1, random weights). Crops are the published wild-type crops (cycled) when
present, else random 40-190 px crops; both sides get the same decoded RGB arrays.

chromowatch: `ModelLibrary.load_ensemble(...).predict(crops)`. Baseline: for each model, the
plain torchvision way (PIL image -> Resize((h, w)) -> ToTensor -> Normalize, batches of 64,
model.eval() under inference_mode, softmax, mean over models), no DataLoader. Rounds
alternate the two so a busy machine slows both alike; the best round of each is reported,
as wall-clock crops/s and as a ratio of this process's CPU seconds (steadier when other
work shares the cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from chromowatch.classify.bundle import Bundle

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAPER = ("densenet161", "mobilenet_v2", "squeezenet1_1")


def real_data() -> Path:
    return Path(os.environ.get("CHROMOWATCH_REAL_DATA", REPO.parent / "shared" / "data"))


def load_crops(n: int, seed: int = 0) -> tuple[list[np.ndarray], str]:
    from chromowatch.classify import read_crop

    folder = real_data() / "ikemoto2023" / "crops" / "wt"
    files = sorted(folder.glob("*/*.jpg"))
    if files:
        step = max(1, len(files) // n)
        chosen = [files[(i * step) % len(files)] for i in range(n)]
        return [read_crop(p) for p in chosen], f"{n} published wt crops ({folder})"
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        h, w = rng.integers(40, 190, size=2)
        crops.append(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    return crops, f"{n} random 40-190 px crops (no real data found)"


def install(models: Path) -> tuple[str, str]:
    """Install both ensembles; returns a description of where ikemoto2023 came from."""
    import torch

    from chromowatch.classify import ModelLibrary, fetch_ikemoto2023
    from chromowatch.classify.architectures import build_model
    from chromowatch.classify.bundle import Bundle

    library = ModelLibrary(models)
    published = real_data() / "ikemoto2023" / "models" / "squeezenet"
    torch.manual_seed(0)

    def random_bundle(arch: str, name: str) -> str:
        bundle = Bundle(arch=arch, state_dict=build_model(arch).state_dict(),
                        class_names=("A", "B", "C"), input_size=(224, 224))
        library.save_bundle(bundle, name)
        return name

    if published.is_dir():
        fetch_ikemoto2023(library, published, timeout=30)
        source = "the 30 published models"
    else:
        names = [random_bundle("squeezenet1_1", f"sq-{i:02d}") for i in range(30)]
        library.save_ensemble("ikemoto2023", names)
        source = "30 random-weight squeezenet1_1 (published models not found)"
    library.save_ensemble("paper", [random_bundle(arch, f"paper-{arch}") for arch in PAPER])
    return source, "random weights"


def baseline_predict(
    bundles: Sequence[Bundle], crops: Sequence[np.ndarray], device: str
) -> np.ndarray:
    """The plain torchvision loop, model after model."""
    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms

    total = np.zeros((len(crops), 3))
    for bundle in bundles:
        model = getattr(torchvision.models, bundle.arch)(weights=None, num_classes=3)
        model.load_state_dict(bundle.state_dict)
        model = model.to(device).eval()
        tf = transforms.Compose([
            transforms.Resize(bundle.input_size),
            transforms.ToTensor(),
            transforms.Normalize(bundle.mean, bundle.std),
        ])
        with torch.inference_mode():
            for start in range(0, len(crops), 64):
                batch = torch.stack([tf(Image.fromarray(c)) for c in crops[start:start + 64]])
                probs = torch.softmax(model(batch.to(device)), dim=1)
                total[start:start + len(batch)] += probs.cpu().numpy()
    return total / len(bundles)


@dataclass(frozen=True)
class Result:
    ensemble: str
    members: int
    crops: int
    load_s: float
    ours_s: list[float]
    base_s: list[float]
    ours_cpu_s: list[float]
    base_cpu_s: list[float]
    max_prob_diff: float
    label_agreement: float

    @property
    def ours_cps(self) -> float:
        return self.crops / min(self.ours_s)

    @property
    def base_cps(self) -> float:
        return self.crops / min(self.base_s)

    @property
    def cpu_ratio(self) -> float:
        """Ratio of CPU seconds (this process): less sensitive to other work on the machine."""
        return min(self.base_cpu_s) / min(self.ours_cpu_s)


def measure(library_root: Path, name: str, crops: list[np.ndarray], device: str,
            rounds: int) -> Result:
    from chromowatch.classify import ModelLibrary

    library = ModelLibrary(library_root)
    started = time.perf_counter()
    ensemble = library.load_ensemble(name, device=device, batch_size=64)
    load_s = time.perf_counter() - started
    bundles = [library.load_bundle(m) for m in ensemble.member_names]
    ensemble.predict(crops[:4])  # warm-up (oneDNN primitive creation)
    baseline_predict(bundles, crops[:4], device)
    ours, base, ours_cpu, base_cpu = [], [], [], []
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        ours_probs, _ = ensemble.predict_proba(crops)
        ours.append(time.perf_counter() - t)
        ours_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        base_probs = baseline_predict(bundles, crops, device)
        base.append(time.perf_counter() - t)
        base_cpu.append(time.process_time() - c)
    return Result(
        ensemble=name,
        members=len(bundles),
        crops=len(crops),
        load_s=load_s,
        ours_s=ours,
        base_s=base,
        ours_cpu_s=ours_cpu,
        base_cpu_s=base_cpu,
        max_prob_diff=float(np.abs(ours_probs - base_probs).max()),
        label_agreement=float((ours_probs.argmax(1) == base_probs.argmax(1)).mean()),
    )


def machine() -> str:
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads, load average "
            f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops-ikemoto", type=int, default=128)
    parser.add_argument("--crops-paper", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both sides use it)")
    args = parser.parse_args()

    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        source, _ = install(root)
        print(f"# ikemoto2023: {source}; paper: DenseNet161 + MobileNetV2 + SqueezeNet 1.1, "
              "random weights")
        rows = []
        for name, n in (("ikemoto2023", args.crops_ikemoto), ("paper", args.crops_paper)):
            crops, what = load_crops(n)
            print(f"# {name}: {what}", flush=True)
            rows.append(measure(root, name, crops, args.device, args.rounds))
    print(f"# after: {machine()}")
    print()
    print("| ensemble | models | crops | chromowatch crops/s | torchvision loop crops/s "
          "| ratio (wall) | ratio (CPU s) | load s | max prob diff | same label |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r.ensemble} | {r.members} | {r.crops} | {r.ours_cps:.1f} | {r.base_cps:.1f} "
              f"| {r.ours_cps / r.base_cps:.2f}x | {r.cpu_ratio:.2f}x | {r.load_s:.2f} "
              f"| {r.max_prob_diff:.1e} | {100 * r.label_agreement:.1f}% |")

    def listed(values: list[float]) -> str:
        return ", ".join(f"{v:.1f}" for v in values)

    for r in rows:
        print(f"# {r.ensemble}: chromowatch rounds {listed(r.ours_s)} s wall "
              f"({listed(r.ours_cpu_s)} s CPU); torchvision rounds {listed(r.base_s)} s wall "
              f"({listed(r.base_cpu_s)} s CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
