"""A model bundle: weights plus everything needed to feed them (torchvision `Weights` style).

A bundle file is a `torch.save` of plain data only (strings, numbers, lists, tensors), so it is
read with `torch.load(weights_only=True)`: a model file is untrusted input and must never run
code. It is written atomically (`.part`, fsync, rename) so a crash never leaves half a model,
and it carries a digest of its own weights so silent corruption is refused at load time.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chromowatch.enhance import ENHANCEMENT
from chromowatch.errors import ModelError
from chromowatch.files import atomic_write_bytes

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "chromowatch-bundle"
BUNDLE_FORMAT_VERSION = 1
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# The enhancement the inputs went through before the model saw them.
ENHANCEMENT_NONE = "none"


@dataclass(frozen=True, eq=False)
class Bundle:
    """Weights of one model with the preprocessing and class order its outputs assume.

    Two bundles are equal when their description and weights digest are: tensors have no
    single truth value, so the generated dataclass equality cannot compare them.
    """

    arch: str
    state_dict: Mapping[str, torch.Tensor] = field(repr=False)
    class_names: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    enhancement: str = ENHANCEMENT
    meta: Mapping[str, str] = field(default_factory=dict)
    # Where it was read from, for error messages; not saved.
    origin: str = field(default="<memory>", compare=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bundle):
            return NotImplemented
        return self._described() == other._described()

    def _described(self) -> tuple[object, ...]:
        return (
            self.arch, self.class_names, self.input_size, self.mean, self.std,
            self.enhancement, dict(self.meta), self.weights_sha256,
        )  # fmt: skip

    @cached_property
    def weights_sha256(self) -> str:
        """Digest of the weights alone: equal for equal models, whatever the file around them."""
        return weights_digest(self.state_dict)

    @property
    def preprocessing_key(self) -> tuple[object, ...]:
        """Members with equal keys share one resized, normalised batch."""
        return (self.input_size, self.mean, self.std)


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of the tensors, in key order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        h.update(tensor.view(-1).view(dtype=_uint8()).numpy().tobytes())
    return h.hexdigest()


def _uint8() -> torch.dtype:
    import torch

    return torch.uint8


def _to_payload(bundle: Bundle) -> dict[str, Any]:
    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "arch": bundle.arch,
        "class_names": list(bundle.class_names),
        "input_size": list(bundle.input_size),
        "mean": list(bundle.mean),
        "std": list(bundle.std),
        "enhancement": bundle.enhancement,
        "meta": dict(bundle.meta),
        "weights_sha256": bundle.weights_sha256,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in bundle.state_dict.items()},
    }


def bundle_to_bytes(bundle: Bundle) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(_to_payload(bundle), buf)
    return buf.getvalue()


def save_bundle(bundle: Bundle, path: Path) -> str:
    """Write the bundle atomically; return the file's sha256 (what manifests pin)."""
    data = bundle_to_bytes(bundle)
    atomic_write_bytes(path, data)
    log.debug("saved bundle %s (%s, %d bytes)", path, bundle.arch, len(data))
    return hashlib.sha256(data).hexdigest()


def load_bundle(path: Path, *, expected_sha256: str | None = None) -> Bundle:
    """Read and check a bundle file; any problem is a ModelError naming the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(
            f"model file {path} is missing",
            hint="reinstall the model (`chromowatch models fetch ikemoto2023`, or `--from DIR`)",
        ) from None
    except OSError as exc:
        raise ModelError(f"model file {path} cannot be read: {exc}") from None
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise ModelError(
                f"model file {path} has sha256 {actual}, expected {expected_sha256}",
                hint="the file changed after it was installed; reinstall the model",
            )
    return bundle_from_bytes(data, origin=str(path))


def bundle_from_bytes(data: bytes, *, origin: str) -> Bundle:
    import torch

    try:
        payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # truncated zip, bad pickle, forbidden global: all unreadable
        raise ModelError(
            f"model file {origin} is not a readable model bundle ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})",
            hint="the file is corrupt or truncated; reinstall the model",
        ) from None
    return _from_payload(payload, origin)


def _from_payload(payload: Any, origin: str) -> Bundle:
    import torch

    def bad(why: str) -> ModelError:
        return ModelError(
            f"model file {origin} is not a chromowatch model bundle: {why}",
            hint="install models with `chromowatch models fetch`, or save them with "
            "chromowatch's own training",
        )

    if not isinstance(payload, dict) or payload.get("format") != BUNDLE_FORMAT:
        raise bad("no bundle header (is it a bare state dict?)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise bad(f"format version {version!r}")
    if version > BUNDLE_FORMAT_VERSION:
        raise ModelError(
            f"model file {origin} has bundle format {version}; this chromowatch reads up to "
            f"{BUNDLE_FORMAT_VERSION}",
            hint="upgrade chromowatch to use this model",
        )
    try:
        state_dict = payload["state_dict"]
        if not isinstance(state_dict, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
        ):
            raise bad("state_dict is not a mapping of names to tensors")
        input_size = tuple(int(v) for v in payload["input_size"])
        mean = tuple(float(v) for v in payload["mean"])
        std = tuple(float(v) for v in payload["std"])
        class_names = tuple(str(v) for v in payload["class_names"])
        meta = {str(k): str(v) for k, v in dict(payload.get("meta") or {}).items()}
        bundle = Bundle(
            arch=str(payload["arch"]),
            state_dict=state_dict,
            class_names=class_names,
            input_size=(input_size[0], input_size[1]),
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
            enhancement=str(payload["enhancement"]),
            meta=meta,
            origin=origin,
        )
        if len(input_size) != 2 or len(mean) != 3 or len(std) != 3:
            raise bad("input_size must have 2 numbers, mean and std 3")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise bad(f"missing or malformed field ({exc})") from None
    if min(bundle.input_size) <= 0 or min(bundle.std) <= 0:
        raise bad("input size and std must be positive")
    if bundle.weights_sha256 != payload.get("weights_sha256"):
        raise ModelError(
            f"model file {origin}: its weights do not match the digest stored with them",
            hint="the file is corrupt; reinstall the model",
        )
    return bundle
