"""A demonstration model for machines with no model and no way to fetch one.

It is trained on generated crops (chromowatch.demo.synth), enhanced by the pipeline's own step,
so everything downstream runs for real; its numbers are labelled a demonstration wherever
they are shown (the ensemble's name starts with "demo-" and its metrics say so).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from PIL import Image
from torch import nn

from chromowatch.classify.architectures import build_model
from chromowatch.classify.bundle import IMAGENET_MEAN, IMAGENET_STD, Bundle
from chromowatch.classify.library import ModelLibrary
from chromowatch.demo.synth import generate_spread
from chromowatch.enhance import enhance_crop
from chromowatch.records import CLASS_NAMES, DEMO_PREFIX
from chromowatch.segmentation.segment import segment
from chromowatch.settings import Settings

log = logging.getLogger(__name__)

DEMO_ENSEMBLE = f"{DEMO_PREFIX}synthetic"
INPUT = 64


def _batch(images: list[np.ndarray]) -> np.ndarray:
    """Resize as the ensemble does (PIL bilinear) to INPUT x INPUT, uint8 NHWC."""
    out = np.empty((len(images), INPUT, INPUT, 3), np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(image).resize((INPUT, INPUT),
                                                          Image.Resampling.BILINEAR))
    return out


def training_crops(
    settings: Settings, *, crops: int, seed: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Enhanced crops and class indices, cut from generated spreads by the real segmenter.

    Training on what the pipeline itself cuts (padding, neighbours, split touching pairs)
    rather than on ideal crops is what makes the demonstration model usable on spreads.
    Each crop takes the class of the generated chromosome it overlaps (IoU >= 0.5).
    """
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    labels: list[int] = []
    while len(images) < crops:
        spread = generate_spread(rng, class_weights=(1 / 3, 1 / 3, 1 / 3))
        for crop in segment(spread.rgb, settings.segment).crops:
            best = max(spread.objects, key=lambda o: o.bbox.iou(crop.bbox), default=None)
            if best is None or best.bbox.iou(crop.bbox) < 0.5:
                continue
            images.append(enhance_crop(crop, settings.enhance))
            labels.append(CLASS_NAMES.index(best.cls))
    order = rng.permutation(len(images))
    return [images[i] for i in order], np.array(labels, np.int64)[order]


def bootstrap_demo_model(
    library: ModelLibrary, settings: Settings, *, crops: int = 1800, epochs: int = 12,
    seed: int = 0,
) -> str:
    """Train tinycnn on generated crops, install it as the current ensemble; returns its name."""
    started = time.monotonic()
    torch.manual_seed(seed)
    images, labels = training_crops(settings, crops=crops, seed=seed)
    data = torch.from_numpy(_batch(images)).permute(0, 3, 1, 2).float().div(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    data = (data - mean) / std
    target = torch.from_numpy(labels)
    n_val = len(labels) // 5
    x_train, y_train, x_val, y_val = data[n_val:], target[n_val:], data[:n_val], target[:n_val]

    model = build_model("tinycnn")
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=3e-3, total_steps=epochs * ((len(x_train) + 63) // 64))
    loss_fn = nn.CrossEntropyLoss()
    accuracy = 0.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            x = x_train[idx]
            # Chromosomes have no up or down: random quarter turns and flips.
            x = torch.rot90(x, int(torch.randint(0, 4, ())), dims=(2, 3))
            if torch.rand(()) < 0.5:
                x = torch.flip(x, dims=(3,))
            optimiser.zero_grad()
            loss = loss_fn(model(x), y_train[idx])
            loss.backward()
            optimiser.step()
            schedule.step()
        model.eval()
        with torch.inference_mode():
            accuracy = float((model(x_val).argmax(1) == y_val).float().mean())
        log.info("demo model epoch %d/%d: accuracy on generated validation crops %.3f",
                 epoch + 1, epochs, accuracy)

    bundle = Bundle(
        arch="tinycnn",
        state_dict={k: v.detach().clone() for k, v in model.state_dict().items()},
        class_names=CLASS_NAMES,
        input_size=(INPUT, INPUT),
        meta={"demonstration": "true",
              "trained_on": f"{len(labels)} crops of generated spreads, seed {seed}"},
    )
    member = f"{DEMO_ENSEMBLE}-tinycnn"
    library.save_bundle(bundle, member)
    library.save_ensemble(DEMO_ENSEMBLE, [member], metrics={
        "demonstration": True,
        "synthetic_val_accuracy": round(accuracy, 4),
    })
    library.set_current(DEMO_ENSEMBLE)
    log.info("demo model trained in %.0f s (accuracy %.3f on generated crops)",
             time.monotonic() - started, accuracy)
    return DEMO_ENSEMBLE
