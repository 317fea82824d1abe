"""Calibration: one temperature for the whole ensemble, fitted on validation, baked in.

The ensemble's output is the mean of its members' softmax; a temperature T divides every
member's logits before that softmax and is chosen to minimise the validation negative
log-likelihood of the mean (temperature scaling, Guo et al. 2017, applied to the ensemble as
it is used). T is baked into each member's last layer (weights and bias divided by T; exact
for a final Linear, and for SqueezeNet's final conv followed by ReLU and average pooling,
which are positively homogeneous), so every consumer of the bundles (classify, the daemon,
review queues) gets calibrated probabilities without knowing about it.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    result: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return result


def ensemble_nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the mean-of-softmax over members (M, N, C)."""
    probs = softmax(logits, temperature).mean(axis=0)
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, lo: float = 0.05,
                    hi: float = 20.0) -> float:
    """The T minimising ensemble_nll, by golden-section search over log T."""
    if len(labels) == 0:
        return 1.0
    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = ensemble_nll(logits, labels, math.exp(c)), ensemble_nll(logits, labels, math.exp(d))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = ensemble_nll(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = ensemble_nll(logits, labels, math.exp(d))
    return float(math.exp((a + b) / 2))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE of the top-class confidence, equal-width bins."""
    if len(labels) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            gap = float(correct[inside].mean()) - float(confidence[inside].mean())
            ece += float(inside.mean()) * abs(gap)
    return float(ece)


def _last_layer(model: nn.Module, num_classes: int) -> nn.Module | None:
    from torch import nn

    last = None
    for module in model.modules():
        if (isinstance(module, nn.Linear) and module.out_features == num_classes) or (isinstance(
            module, nn.Conv2d
        ) and module.out_channels == num_classes):
            last = module
    return last


def bake_temperature(model: nn.Module, temperature: float, num_classes: int,
                     probe: torch.Tensor) -> bool:
    """Divide the final layer's weight and bias by T in place; checked on `probe` inputs
    (logits must become logits / T). Returns False (model unchanged) when it does not hold."""
    import torch

    if abs(temperature - 1.0) < 1e-6:
        return True
    layer = _last_layer(model, num_classes)
    if layer is None:
        return False
    model.eval()
    with torch.inference_mode():
        before = model(probe).float()
    saved = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    with torch.no_grad():
        layer.weight.div_(temperature)  # type: ignore[operator]
        if getattr(layer, "bias", None) is not None:
            layer.bias.div_(temperature)  # type: ignore[operator]
    with torch.inference_mode():
        after = model(probe).float()
    if not torch.allclose(after, before / temperature, rtol=1e-3, atol=1e-4):
        layer.load_state_dict(saved)
        log.warning("temperature could not be baked into %s; left uncalibrated",
                    type(model).__name__)
        return False
    return True
