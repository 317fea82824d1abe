"""The review loop on the shared labels: how many reviewed crops a new sample needs before
its A/B/C fractions can be trusted, and which queue gets there first.

    .venv/bin/python benchmarks/review_loop.py [--out JSON] [--repeats R] [--cache DIR]

One sample plays the new one: ddx11 (the 342 YOLO-boxed chromosomes of spreads 1-5, cut and
enhanced by chromowatch's own `labels import-yolo`) with a model trained on the WT crops,
and WT (the 652 published crops) with a model trained on ddx11. For K = 0, 25, 50, 100,
200 reviewed crops and each queue policy (uncertain + audit, uncertain alone, random), the
crops the queue names (chromowatch.review.queue.choose, as `chromowatch review queue`
does) are answered from the labels; the model is retrained on the source sample plus the
answered uncertain crops (audit crops stay out of training: they estimate the model's error);
the new sample is re-scored; its fractions are computed as `results` computes them
(chromowatch.review.correct with the audit crops, else the validation confusion).

Retraining here is a proxy, said plainly: each member is a multinomial logistic head on the
frozen pooled features of one published SqueezeNet (members 1-4, the start points of
`chromowatch train`), not a fine-tuned network. A fine-tune takes minutes per run on this
CPU and the grid needs hundreds; the queue and the correction are the real code.
Audit draws depend on a seed, so every cell is repeated R times with different seeds and
the mean and the worst fraction error are given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Small matrices: BLAS threads only contend (6x slower on a busy 2-core machine).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
import train as train_bench  # noqa: E402

from chromowatch.records import CLASS_NAMES  # noqa: E402
from chromowatch.review.correct import audit_correction  # noqa: E402
from chromowatch.review.queue import AUDIT, Candidate, choose  # noqa: E402

DATA = train_bench.DATA
KS = (0, 25, 50, 100, 200)
POLICIES = {"uncertain+audit": 0.5, "uncertain+audit 0.25": 0.25, "uncertain": 0.0, "random": 1.0}
MEASURES = ("margin", "entropy", "disagreement")
MEMBERS = 4


@dataclass(frozen=True)
class Crops:
    sample: np.ndarray  # (N,) sample names
    label: np.ndarray  # (N,) class index
    feats: np.ndarray  # (members, N, D) pooled backbone features


# -- data ------------------------------------------------------------------------------


def _imported(env: dict[str, str]) -> None:
    published = DATA / "ikemoto2023" / "models" / "squeezenet"
    train_bench._run(["models", "fetch", "ikemoto2023", "--from", str(published)], env)
    train_bench._run(["labels", "import-folder", str(DATA / "ikemoto2023" / "crops" / "wt"),
                      "--enhanced", "--sample", "wt"], env)
    train_bench._run(["labels", "import-yolo", str(DATA / "ddx11" / "images"),
                      str(DATA / "ddx11" / "labels"), "--sample", "ddx11"], env)


def _labelled(data_dir: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    from chromowatch.store import Store
    from chromowatch.training.dataset import load_labelled

    with Store.open(data_dir / "chromowatch.sqlite3") as store:
        rows = store.current_labels()
    crops, problems = load_labelled(rows)
    if problems:
        raise SystemExit("unreadable crops: " + "; ".join(problems))
    return ([c.image for c in crops], np.array([c.sample for c in crops]),
            np.array([c.label for c in crops]))


def _features(images: Sequence[np.ndarray], models: Path) -> np.ndarray:
    """(members, N, 512): global-average-pooled features of the published members 1-4 (the
    start points `chromowatch train` fine-tunes)."""
    import torch

    from chromowatch.classify import ModelLibrary
    from chromowatch.training.dataset import to_batch
    from chromowatch.training.nets import net_from_bundle

    torch.set_num_threads(int(os.environ.get("CHROMOWATCH_TRAINING__THREADS", "2")))
    library = ModelLibrary(models)
    out = []
    for name in library.ensemble_info("ikemoto2023").members[:MEMBERS]:
        net = net_from_bundle(library.load_bundle(name))
        model = net.model.eval()
        chunks = []
        with torch.inference_mode():
            for s in range(0, len(images), 64):
                x = to_batch(images[s:s + 64], net.input_size, net.mean, net.std)
                f = model.features(x)  # type: ignore[operator]
                chunks.append(f.mean(dim=(2, 3)).numpy())
        out.append(np.concatenate(chunks))
        print(f"features of {name}: done", flush=True)
    return np.stack(out)


def load(cache: Path) -> Crops:
    """The labelled crops and their features, cached by the crops' content."""
    with tempfile.TemporaryDirectory(prefix="chromowatch-review-bench-") as tmp:
        _imported(train_bench.bench_env(Path(tmp)))
        images, samples, labels = _labelled(Path(tmp))
        digest = hashlib.sha256()
        for im in images:
            digest.update(im.tobytes())
        cache.mkdir(parents=True, exist_ok=True)
        path = cache / f"features-{digest.hexdigest()[:16]}.npy"
        if path.exists():
            feats = np.load(path)
        else:
            feats = _features(images, Path(tmp) / "models")
            np.save(path, feats)
    return Crops(samples, labels, feats)


# -- the proxy model -------------------------------------------------------------------


@dataclass(frozen=True)
class Heads:
    mean: np.ndarray  # (members, D)
    std: np.ndarray
    w: np.ndarray  # (members, D, 3)
    b: np.ndarray  # (members, 3)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _fit_one(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Class-weighted multinomial logistic regression, L-BFGS with the exact gradient."""
    from scipy.optimize import minimize

    d = x.shape[1]
    onehot = np.eye(3)[y]
    w_i = weight / weight.sum()

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: d * 3].reshape(d, 3), theta[d * 3:]
        p = _softmax(x @ w + b)
        value = -(w_i * np.log(np.clip((p * onehot).sum(1), 1e-12, None))).sum()
        g = (p - onehot) * w_i[:, None]
        grad_w = x.T @ g + 2 * l2 * w
        return float(value + l2 * (w * w).sum()), np.concatenate([grad_w.ravel(), g.sum(0)])

    res = minimize(loss, np.zeros(d * 3 + 3), jac=True, method="L-BFGS-B",
                   options={"maxiter": 300})
    return res.x[: d * 3].reshape(d, 3), res.x[d * 3:]


def fit(feats: np.ndarray, y: np.ndarray, l2: float = 1e-2,
        extra: np.ndarray | None = None) -> Heads:
    """One class-balanced multinomial logistic head per member; `extra` multiplies each
    crop's weight (the new sample's answered crops can weigh more than the source's)."""
    counts = np.bincount(y, minlength=3).astype(float)
    weight = np.where(counts > 0, len(y) / (3 * np.maximum(counts, 1)), 0.0)[y]
    if extra is not None:
        weight = weight * extra
    means, stds, ws, bs = [], [], [], []
    for f in feats:
        mu, sd = f.mean(axis=0), f.std(axis=0) + 1e-6
        w, b = _fit_one(((f - mu) / sd).astype(np.float64), y, weight, l2)
        means.append(mu)
        stds.append(sd)
        ws.append(w)
        bs.append(b)
    return Heads(np.stack(means), np.stack(stds), np.stack(ws), np.stack(bs))


def predict(h: Heads, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) ensemble probabilities (mean of the members' softmax) and (members, N, 3)."""
    z = np.einsum("mnd,mdk->mnk", (feats - h.mean[:, None]) / h.std[:, None], h.w)
    p = _softmax(z + h.b[:, None])
    return p.mean(axis=0), p


def cv_confusion(feats: np.ndarray, y: np.ndarray, folds: int = 5) -> np.ndarray:
    """Counts (true x predicted) of 5-fold cross-validation: the 'validation confusion' a
    sample without audits is corrected with."""
    conf = np.zeros((3, 3))
    fold = np.arange(len(y)) % folds
    np.random.default_rng(0).shuffle(fold)
    for k in range(folds):
        tr, te = fold != k, fold == k
        p, _ = predict(fit(feats[:, tr], y[tr]), feats[:, te])
        for t, q in zip(y[te], p.argmax(axis=1), strict=True):
            conf[t, q] += 1
    return conf


# -- one cell of the grid --------------------------------------------------------------


def truth_fractions(y: np.ndarray) -> np.ndarray:
    return np.bincount(y, minlength=3) / len(y)


ANSWERS = ("soft", "hard", "strata", "soft+shrink", "strata+shrink")
DEFAULT = "strata+shrink"  # what chromowatch.review.correct.audit_correction does by default


def corrected(y: np.ndarray, probs: np.ndarray, reviewed: dict[int, str],
              validation: np.ndarray, min_audit: int) -> tuple[dict[str, np.ndarray], str]:
    """The sample's fractions as `results` gives them, per audit estimator: the audit
    correction with enough audit crops, else the validation confusion (adjusted
    classify-and-count; then all three are the same)."""
    from chromowatch.reports.stats import adjust_for_confusion

    confirmed = {c: 0 for c in CLASS_NAMES}
    for i in reviewed:
        confirmed[CLASS_NAMES[y[i]]] += 1
    unrev = np.array([i for i in range(len(y)) if i not in reviewed], dtype=int)
    audits = np.array([i for i, r in reviewed.items() if r == AUDIT], dtype=int)
    if len(audits) >= min_audit:
        out = {}
        for answer in ANSWERS:
            a = audit_correction(confirmed, probs[unrev], probs[audits],
                                 [CLASS_NAMES[y[i]] for i in audits],
                                 answer=answer.split("+")[0],  # type: ignore[arg-type]
                                 shrink=answer.endswith("+shrink"))
            out[answer] = np.array([a.fractions[c] for c in CLASS_NAMES])
        return out, "audit"
    pred = np.bincount(probs[unrev].argmax(axis=1), minlength=3)
    adj = adjust_for_confusion({c: int(pred[i]) for i, c in enumerate(CLASS_NAMES)},
                               validation, confirmed=confirmed, n_boot=100)
    fr = np.array([adj.fractions[c] for c in CLASS_NAMES])
    return dict.fromkeys(ANSWERS, fr), "validation"


@dataclass(frozen=True)
class Direction:
    name: str
    src: np.ndarray  # indices of the source (training) sample
    dst: np.ndarray  # indices of the new sample
    new_weight: float = 0.0  # the answered new crops' total weight against the source's


def run_cell(crops: Crops, d: Direction, base: tuple[np.ndarray, np.ndarray],
             validation: np.ndarray, k: int, share: float, measure: str, seed: int,
             min_audit: int) -> dict[str, object]:
    y = crops.label[d.dst]
    probs, members = base
    cands = [Candidate(i, tuple(probs[i]), tuple(tuple(m[i]) for m in members))
             for i in range(len(y))]
    picks = choose(cands, k, audit_share=share, measure=measure, seed=seed)  # type: ignore[arg-type]
    reviewed = {p.crop_id: p.reason for p in picks}
    learn = [i for i, r in reviewed.items() if r != AUDIT]
    if learn:
        feats = np.concatenate([crops.feats[:, d.src], crops.feats[:, d.dst[learn]]], axis=1)
        labels = np.concatenate([crops.label[d.src], y[learn]])
        extra = np.concatenate([np.ones(len(d.src)),
                                np.full(len(learn), max(1.0, d.new_weight * len(d.src) /
                                                        len(learn)))])
        heads = fit(feats, labels, extra=extra)
        probs, _ = predict(heads, crops.feats[:, d.dst])
    raw = probs.argmax(axis=1).copy()
    for i in reviewed:
        raw[i] = y[i]
    unrev = np.array([i for i in range(len(y)) if i not in reviewed], dtype=int)
    fr, method = corrected(y, probs, reviewed, validation, min_audit)
    truth = truth_fractions(y)
    return {
        "raw_error": float(np.abs(truth_fractions(raw) - truth).max()),
        **{f"error_{a}": float(np.abs(fr[a] - truth).max()) for a in ANSWERS},
        "method": method,
        "unreviewed_accuracy": float((probs[unrev].argmax(axis=1) == y[unrev]).mean())
        if len(unrev) else None,
        "audits": sum(r == AUDIT for r in reviewed.values()),
    }


def summarise(cells: list[dict[str, object]]) -> dict[str, object]:
    """Mean, 90th percentile and worst over the audit seeds; share within 0.03."""
    out: dict[str, object] = {}
    for a in ANSWERS:
        err = np.array([c[f"error_{a}"] for c in cells], dtype=float)
        out[a] = {"mean": round(float(err.mean()), 4),
                  "p90": round(float(np.quantile(err, 0.9)), 4),
                  "max": round(float(err.max()), 4),
                  "within_0.03": round(float((err <= 0.03).mean()), 3)}
    raw = np.array([c["raw_error"] for c in cells], dtype=float)
    acc = [float(c["unreviewed_accuracy"]) for c in cells  # type: ignore[arg-type]
           if c["unreviewed_accuracy"] is not None]
    out["raw_error_mean"] = round(float(raw.mean()), 4)
    out["unreviewed_accuracy"] = round(float(np.mean(acc)), 4) if acc else None
    out["method"] = cells[0]["method"]
    out["audits"] = cells[0]["audits"]
    return out


def run_direction(crops: Crops, d: Direction, repeats: int, min_audit: int
                  ) -> dict[str, object]:
    heads = fit(crops.feats[:, d.src], crops.label[d.src])
    base = predict(heads, crops.feats[:, d.dst])
    validation = cv_confusion(crops.feats[:, d.src], crops.label[d.src])
    y = crops.label[d.dst]
    out: dict[str, object] = {
        "n": len(y), "truth": [round(float(v), 4) for v in truth_fractions(y)],
        "base_accuracy": round(float((base[0].argmax(axis=1) == y).mean()), 4),
        "base_fractions": [round(float(v), 4) for v in truth_fractions(base[0].argmax(1))],
    }
    grid: dict[str, dict[str, object]] = {}
    for policy, share in POLICIES.items():
        for k in KS:
            cells = [run_cell(crops, d, base, validation, k, share, "margin", seed, min_audit)
                     for seed in range(repeats)]
            grid[f"{policy}|{k}"] = summarise(cells)
            print(d.name, policy, k, grid[f"{policy}|{k}"], flush=True)
    for measure in MEASURES:
        for k in (100,):
            cells = [run_cell(crops, d, base, validation, k, POLICIES["uncertain+audit"],
                              measure, seed, min_audit) for seed in range(repeats)]
            grid[f"measure:{measure}|{k}"] = summarise(cells)
            print(d.name, measure, k, grid[f"measure:{measure}|{k}"], flush=True)
    out["grid"] = grid
    return out


def markdown(result: dict[str, object]) -> str:
    """The tables BENCHMARKS.md shows: per direction, fraction error (mean over the audit
    seeds, share of seeds within 0.03) of the default estimator per K and policy, the
    unreviewed crops' accuracy, then the estimators and measures at K = 100."""
    lines = []
    for name in ("WT -> ddx11", "ddx11 -> WT"):
        d = result[name]
        assert isinstance(d, dict)
        lines += [f"**{name}** ({d['n']} crops, true A/B/C {d['truth']}; before review the "
                  f"model's accuracy {d['base_accuracy']}, fractions {d['base_fractions']})", "",
                  "| K | " + " | ".join(POLICIES) + " |", "|---" * (len(POLICIES) + 1) + "|"]
        grid = d["grid"]
        for k in KS:
            cells = []
            for policy in POLICIES:
                g = grid[f"{policy}|{k}"]
                e = g[DEFAULT]
                cells.append(f"{e['mean']:.3f} ({e['within_0.03']:.0%}); "
                             f"raw {g['raw_error_mean']:.3f}; acc {g['unreviewed_accuracy']}")
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        lines += ["", "| K = 100, uncertain+audit | " + " | ".join(ANSWERS) + " |",
                  "|---" * (len(ANSWERS) + 1) + "|"]
        for measure in MEASURES:
            g = grid[f"measure:{measure}|100"]
            lines.append(f"| {measure} | " + " | ".join(
                f"{g[a]['mean']:.3f} / p90 {g[a]['p90']:.3f}" for a in ANSWERS) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--repeats", type=int, default=20, help="audit seeds per cell")
    parser.add_argument("--min-audit", type=int, default=20,
                        help="audit crops needed before the audit correction is used")
    parser.add_argument("--new-weight", type=float, default=1.0,
                        help="in retraining, the answered crops of the new sample weigh this "
                        "share of the source sample's total (1: each sample the same, as "
                        "training.balance_samples does; 0: one crop, one vote)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) /
                        "chromowatch-review-bench", help="where features are cached")
    args = parser.parse_args()
    train_bench.require_real_data()
    started = time.monotonic()
    crops = load(args.cache)
    wt = np.flatnonzero(crops.sample == "wt")
    ddx = np.flatnonzero(crops.sample == "ddx11")
    result: dict[str, object] = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
        "min_audit": args.min_audit,
    }
    result["new_weight"] = args.new_weight
    for d in (Direction("WT -> ddx11", wt, ddx, args.new_weight),
              Direction("ddx11 -> WT", ddx, wt, args.new_weight)):
        result[d.name] = run_direction(crops, d, args.repeats, args.min_audit)
    result["seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(markdown(result))


if __name__ == "__main__":
    main()
