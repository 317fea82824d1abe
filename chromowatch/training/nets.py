"""Networks for fine-tuning: start points, frozen trunks, trainable heads, fast scoring.

A member is split into a frozen trunk (the blocks before the later blocks) and the rest.
Members whose trunks have the same weights share one trunk pass per batch: fine-tuning
several SqueezeNets from the published models (which all share the ImageNet features and
differ only in their classifier) costs one trunk pass plus each member's later blocks, and
scoring the 30 published models on a holdout costs little more than one. Architectures
without a known split keep the whole network as "head" behind an identity trunk, so the same
loop trains them (only slower).

Start points, in order: a bundle of the architecture in the base ensemble (e.g. the
published ikemoto2023 SqueezeNets), ImageNet weights that torchvision finds in its cache
(TORCH_HOME; downloaded when `training.imagenet_download` and online), random init with a
warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from chromowatch.classify.architectures import build_model, get_spec, load_weights
from chromowatch.classify.bundle import IMAGENET_MEAN, IMAGENET_STD, Bundle, weights_digest
from chromowatch.records import CLASS_NAMES
from chromowatch.training.dataset import to_batch

log = logging.getLogger(__name__)

# The classifier head of each architecture: what the first, head-only epochs train.
HEADS: dict[str, tuple[str, ...]] = {
    "shufflenet_v2_x1_0": ("fc",),
    "inception_v3": ("fc",),
    "googlenet": ("fc",),
    "resnext50_32x4d": ("fc",),
    "wide_resnet101_2": ("fc",),
}
# Architectures whose forward is flatten(classifier(features(x))): split inside `features`.
_FEATURES_CLASSIFIER = {"squeezenet1_1", "squeezenet1_0"}


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


def later_blocks(arch: str, unfreeze: Mapping[str, Sequence[str]] | None = None) -> tuple[str, ...]:
    if unfreeze and arch in unfreeze:
        return tuple(unfreeze[arch])
    return get_spec(arch).later_blocks


def head_blocks(arch: str) -> tuple[str, ...]:
    return HEADS.get(arch, ("classifier",))


def set_trainable(model: nn.Module, prefixes: Sequence[str]) -> list[nn.Parameter]:
    """requires_grad on exactly the parameters under these prefixes; returns them."""
    params = []
    for name, param in model.named_parameters():
        on = _matches(name, prefixes)
        param.requires_grad_(on)
        if on:
            params.append(param)
    return params


def train_mode(model: nn.Module) -> None:
    """model.train(), but batch norms whose weights are frozen keep their running stats."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters(recurse=False)
        ):
            module.eval()


@dataclass
class Net:
    """A network with its frozen trunk and its head (the rest), and its preprocessing."""

    arch: str
    model: nn.Module
    trunk: nn.Module
    head: Callable[[torch.Tensor], torch.Tensor]
    trunk_key: str  # members with equal keys (and preprocessing) share one trunk pass
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    start: str  # where its weights came from

    @property
    def group_key(self) -> tuple[object, ...]:
        return (self.trunk_key, self.input_size, self.mean, self.std)


def make_net(arch: str, model: nn.Module, prefixes: Sequence[str], *, input_size: tuple[int, int],
             mean: tuple[float, float, float], std: tuple[float, float, float], start: str) -> Net:
    """Split the model before its first later block where the architecture allows it."""
    cut = None
    if arch in _FEATURES_CLASSIFIER and "" not in prefixes:
        indices = [int(p.split(".")[1]) for p in prefixes
                   if p.startswith("features.") and p.split(".")[1].isdigit()]
        if indices:
            cut = min(indices)
        elif all(p.startswith("classifier") for p in prefixes):
            cut = len(model.features)  # type: ignore[arg-type]
    if cut is None or cut == 0:
        return Net(arch, model, nn.Identity(), model, "identity", input_size, mean, std, start)
    features: nn.Sequential = model.features  # type: ignore[assignment]
    trunk = features[:cut]
    rest = features[cut:]
    classifier: nn.Module = model.classifier  # type: ignore[assignment]

    def head(t: torch.Tensor) -> torch.Tensor:
        return torch.flatten(classifier(rest(t)), 1)

    key = f"{arch}|{cut}|{weights_digest(trunk.state_dict())}"
    return Net(arch, model, trunk, head, key, input_size, mean, std, start)


def net_from_bundle(bundle: Bundle, prefixes: Sequence[str] | None = None) -> Net:
    if tuple(bundle.class_names) != CLASS_NAMES:
        raise ValueError(f"bundle {bundle.origin} has classes {bundle.class_names}")
    model = load_weights(bundle.arch, bundle.state_dict, len(CLASS_NAMES), origin=bundle.origin)
    if prefixes is None:
        prefixes = later_blocks(bundle.arch)
    return make_net(bundle.arch, model, prefixes, input_size=bundle.input_size, mean=bundle.mean,
                    std=bundle.std, start=f"bundle {Path(bundle.origin).stem}")


def _imagenet_state(arch: str, download: bool) -> tuple[dict[str, torch.Tensor], str] | None:
    """torchvision's default ImageNet weights of `arch` from its cache (or downloaded)."""
    try:
        import torchvision

        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except Exception:  # not a torchvision model (tinycnn), or no weights known
        return None
    filename = os.path.basename(urlparse(weights.url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not cached.is_file() and not download:
        return None
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as exc:  # offline, or a broken cache file
        log.warning("%s: ImageNet weights not available (%s: %s)", arch, type(exc).__name__, exc)
        return None
    return dict(state), f"imagenet {filename}"


def fresh_net(arch: str, prefixes: Sequence[str], *, imagenet_download: bool) -> Net:
    """ImageNet weights (new 3-class head) when torchvision has them, else random init."""
    spec = get_spec(arch)
    model = build_model(arch, len(CLASS_NAMES))
    found = _imagenet_state(arch, imagenet_download)
    if found is not None:
        state, start = found
        own = model.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        missing = [k for k in own if k not in usable]
        model.load_state_dict(usable, strict=False)
        log.info("%s: starting from %s (%d tensors; new: %s)", arch, start, len(usable),
                 ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else ""))
    else:
        start = "random initialisation"
        log.warning("%s: no installed bundle and no ImageNet weights in torchvision's cache "
                    "(%s): starting from random initialisation; expect a weak model",
                    arch, torch.hub.get_dir())
    return make_net(arch, model, prefixes, input_size=spec.input_size, mean=IMAGENET_MEAN,
                    std=IMAGENET_STD, start=start)


def start_nets(members: Sequence[str], base: Sequence[Bundle], *,
               unfreeze: Mapping[str, Sequence[str]] | None, imagenet_download: bool) -> list[Net]:
    """One Net per member: the i-th member of an architecture starts from the i-th bundle
    of that architecture in the base ensemble (cycling), else as fresh_net says."""
    by_arch: dict[str, list[Bundle]] = {}
    for bundle in base:
        if tuple(bundle.class_names) == CLASS_NAMES:
            by_arch.setdefault(bundle.arch, []).append(bundle)
    seen: dict[str, int] = {}
    nets: list[Net] = []
    for arch in members:
        get_spec(arch)  # unknown names fail here, before any work
        i = seen.get(arch, 0)
        seen[arch] = i + 1
        prefixes = later_blocks(arch, unfreeze)
        if by_arch.get(arch):
            bundle = by_arch[arch][i % len(by_arch[arch])]
            net = net_from_bundle(bundle, prefixes)
        else:
            net = fresh_net(arch, prefixes, imagenet_download=imagenet_download)
        log.info("member %d (%s) starts from %s", len(nets), arch, net.start)
        nets.append(net)
    return nets


def forward_groups(nets: Sequence[Net], device: torch.device
                   ) -> dict[tuple[object, ...], list[int]]:
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, net in enumerate(nets):
        groups.setdefault(net.group_key, []).append(i)
    return groups


def autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=device.type == "cuda")


def member_logits(nets: Sequence[Net], images: Sequence[np.ndarray], device: torch.device,
                  batch_size: int = 64) -> np.ndarray:
    """(members, N, 3) logits of every net on these crops (no augmentation), sharing trunks.

    Inputs are prepared exactly as the ensemble prepares them (PIL bilinear resize,
    ImageNet normalisation), so softmax of these logits is what `classify` would give.
    """
    out = np.zeros((len(nets), len(images), len(CLASS_NAMES)), np.float32)
    to_device(nets, device)
    for model in {id(n.model): n.model for n in nets}.values():
        model.eval()
    with torch.inference_mode():
        for indices in forward_groups(nets, device).values():
            first = nets[indices[0]]
            for start in range(0, len(images), batch_size):
                chunk = images[start:start + batch_size]
                x = to_batch(chunk, first.input_size, first.mean, first.std)
                x = x.to(device).contiguous(memory_format=torch.channels_last)  # type: ignore[attr-defined]
                with autocast(device):
                    t = first.trunk(x)
                    for i in indices:
                        logits = nets[i].head(t)
                        out[i, start:start + len(chunk)] = logits.float().cpu().numpy()
    return out


def to_device(nets: Sequence[Net], device: torch.device) -> None:
    """Move every net to `device` (channels_last); a no-op for nets already there."""
    for net in nets:
        net.model.to(device).to(memory_format=torch.channels_last)
