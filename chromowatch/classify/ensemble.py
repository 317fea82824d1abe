"""Batched inference of an ensemble: the mean of its members' softmax outputs.

Members that share preprocessing (input size, mean, std) share one resized, normalised
batch, so the 30 published SqueezeNets resize each crop once, not 30 times. The resize is
PIL's bilinear resize, i.e. exactly torchvision's `Resize((h, w))` on a PIL image, which is
what the published models were trained and evaluated with (tests measure the agreement).
On CUDA the models run in bf16 autocast, on the CPU in fp32; channels_last on both (faster
with oneDNN for SqueezeNet, MobileNetV2 and DenseNet161; see BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from chromowatch.classify.architectures import load_weights
from chromowatch.classify.bundle import Bundle
from chromowatch.errors import ModelError
from chromowatch.records import CLASS_NAMES, Prediction

log = logging.getLogger(__name__)

PARALLEL_RESIZE_MIN = 16  # crops per resizing thread, at least
PAD_MULTIPLE = 16  # CUDA batches are padded to a multiple of this (see Ensemble.padded_rows)


def resolve_device(device: str) -> torch.device:
    """"auto" -> CUDA when available, else the CPU; "cuda" without CUDA is refused."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(
            f"device {device!r} requested but CUDA is not available",
            hint='set [classify] device = "auto" or "cpu"',
        )
    try:
        return torch.device(device)
    except RuntimeError:
        raise ModelError(
            f"unknown device {device!r}", hint='use "auto", "cpu" or "cuda"'
        ) from None


@dataclass
class _Member:
    name: str
    model: nn.Module
    order: list[int]  # member output column for each of CLASS_NAMES


@dataclass(frozen=True)
class _Group:
    input_size: tuple[int, int]
    mean: torch.Tensor  # (1, 3, 1, 1) on the device
    std: torch.Tensor
    members: tuple[int, ...]  # indices into Ensemble._members


def _class_order(bundle: Bundle) -> list[int]:
    if sorted(bundle.class_names) != sorted(CLASS_NAMES):
        raise ModelError(
            f"model {bundle.origin} predicts classes {list(bundle.class_names)}, "
            f"expected {list(CLASS_NAMES)} in any order",
            hint="this model was made for another task; remove it from the ensemble",
        )
    return [bundle.class_names.index(name) for name in CLASS_NAMES]


def _build(bundle: Bundle, device: torch.device) -> nn.Module:
    """The member's network on `device`, channels_last (NHWC), ready for inference."""
    model = load_weights(
        bundle.arch, bundle.state_dict, len(bundle.class_names), origin=bundle.origin
    )
    return model.to(device=device).to(memory_format=torch.channels_last).eval()


def ensemble_version(name: str, bundles: Sequence[Bundle]) -> str:
    """name + a short hash of the members' weights: equal weights, equal version."""
    h = hashlib.sha256("\n".join(b.weights_sha256 for b in bundles).encode())
    return f"{name}-{h.hexdigest()[:12]}"


def _as_rgb(image: np.ndarray, index: int) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"image {index}: expected a uint8 numpy array")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image {index}: expected HxWx3 RGB, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image {index}: empty image")
    return image


class Ensemble:
    """Loaded members ready to predict; build it with ModelLibrary.load_ensemble."""

    def __init__(
        self,
        name: str,
        members: Sequence[tuple[str, Bundle]],
        *,
        device: str = "auto",
        batch_size: int = 64,
    ) -> None:
        if not members:
            raise ModelError(f"ensemble {name!r} has no members", hint="save it again with members")
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        enhancements = {bundle.enhancement for _, bundle in members}
        if len(enhancements) != 1:
            detail = ", ".join(f"{n}: {b.enhancement}" for n, b in members)
            raise ModelError(
                f"ensemble {name!r} mixes members that expect different enhancements ({detail})",
                hint="an ensemble's members must all expect the same enhancement",
            )
        self.name = name
        self.enhancement: str = enhancements.pop()
        self.member_names: tuple[str, ...] = tuple(n for n, _ in members)
        self.version = ensemble_version(name, [b for _, b in members])
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self._members: list[_Member] = []
        keys: dict[tuple[object, ...], list[int]] = {}
        for index, (member_name, bundle) in enumerate(members):
            order = _class_order(bundle)
            self._members.append(_Member(member_name, _build(bundle, self.device), order))
            keys.setdefault(bundle.preprocessing_key, []).append(index)
        self._groups: list[_Group] = []
        for indices in keys.values():
            first = members[indices[0]][1]
            self._groups.append(
                _Group(
                    input_size=first.input_size,
                    mean=torch.tensor(first.mean, device=self.device).view(1, 3, 1, 1),
                    std=torch.tensor(first.std, device=self.device).view(1, 3, 1, 1),
                    members=tuple(indices),
                )
            )
        log.info(
            "ensemble %s: %d members, %d preprocessing groups, on %s",
            self.version, len(self._members), len(self._groups), self.device,
        )  # fmt: skip

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """One Prediction per RGB uint8 crop (any size), in input order."""
        ensemble, per_member = self.predict_proba(images)
        predictions = []
        for i, probs in enumerate(ensemble):
            predictions.append(
                Prediction(
                    label=CLASS_NAMES[int(np.argmax(probs))],
                    probs={c: float(p) for c, p in zip(CLASS_NAMES, probs, strict=True)},
                    member_probs={
                        m.name: [float(p) for p in per_member[j, i]]
                        for j, m in enumerate(self._members)
                    },
                    model_version=self.version,
                )
            )
        return predictions

    def predict_proba(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) ensemble probabilities and (members, N, 3) member probabilities, A/B/C order."""
        crops = [_as_rgb(img, i) for i, img in enumerate(images)]
        per_member = np.zeros((len(self._members), len(crops), len(CLASS_NAMES)), np.float32)
        # Resizing is PIL's, one crop at a time, and on a GPU it is the slow part; PIL lets go
        # of the GIL while it resizes, so threads (as many as torch's) share it out.
        threads = min(torch.get_num_threads(), len(crops) // PARALLEL_RESIZE_MIN)
        with contextlib.ExitStack() as stack, torch.inference_mode():
            pool = (stack.enter_context(ThreadPoolExecutor(threads, "resize"))
                    if threads > 1 else None)
            for start in range(0, len(crops), self.batch_size):
                chunk = crops[start : start + self.batch_size]
                for group in self._groups:
                    self._run_group(group, chunk, per_member[:, start : start + len(chunk)],
                                    pool)
        return per_member.mean(axis=0, dtype=np.float64), per_member

    def padded_rows(self, n: int) -> int:
        """Rows a batch of n crops is run with. On CUDA, cuDNN builds its kernel plans for
        every new batch shape (about half a second for DenseNet161), and a daemon's batches
        come in every size: padding to a multiple of PAD_MULTIPLE (at most batch_size) keeps
        the shapes to a handful. On the CPU padding would only cost work."""
        if self.device.type != "cuda":
            return n
        return min(max(self.batch_size, n), -(-n // PAD_MULTIPLE) * PAD_MULTIPLE)

    def _run_group(self, group: _Group, chunk: list[np.ndarray], out: np.ndarray,
                   pool: Executor | None = None) -> None:
        batch = self._prepare(group, chunk, pool)
        for index in group.members:
            out[index] = self._forward(self._members[index], batch)[: len(chunk)]

    def _prepare(self, group: _Group, chunk: list[np.ndarray],
                 pool: Executor | None = None) -> torch.Tensor:
        """PIL resize (== torchvision Resize on PIL), then ToTensor + Normalize per batch;
        rows beyond the chunk (padding, see padded_rows) are zero and their output unused."""
        height, width = group.input_size
        resized = np.zeros((self.padded_rows(len(chunk)), height, width, 3), np.uint8)
        bilinear = Image.Resampling.BILINEAR

        def resize(i: int) -> None:
            resized[i] = np.asarray(Image.fromarray(chunk[i]).resize((width, height), bilinear))

        if pool is None:
            for i in range(len(chunk)):
                resize(i)
        else:
            for _ in pool.map(resize, range(len(chunk))):
                pass  # map re-raises a worker's exception here
        # NHWC memory viewed as NCHW is channels_last already: no copy.
        batch = torch.from_numpy(resized).permute(0, 3, 1, 2)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        x = batch.float().div_(255.0)
        return x.sub_(group.mean).div_(group.std)

    def _forward(self, member: _Member, x: torch.Tensor) -> np.ndarray:
        if self.device.type == "cuda":
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                logits = member.model(x)
        else:
            logits = member.model(x)
        probs = torch.softmax(logits.float(), dim=1)[:, member.order]
        result: np.ndarray = probs.cpu().numpy()
        return result
