"""The registry of model architectures a bundle may name.

A bundle stores only a state dict and the name of its architecture; the code that builds the
network lives here, so a model file never carries code (it is loaded with weights_only=True).
Every builder makes a 3-class head with `weights=None`: nothing is ever downloaded.

Each entry also names its "later blocks": the parameters that fine-tuning trains while the
rest stays frozen (Matsumoto et al. 2025: DenseNet161 from Dense Block 2, MobileNetV2 all
layers, ShuffleNetV2 from Stage 3, SqueezeNet from Fire8 to Conv10). For the other
torchvision models, which the paper compared but did not fine-tune partially, the later
blocks are the last feature stage and the head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from chromowatch.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture and what its inputs and trainable parts are."""

    name: str
    build: Callable[[int], nn.Module]
    input_size: tuple[int, int]
    # Parameter-name prefixes trained when fine-tuning; ("",) means every parameter.
    later_blocks: tuple[str, ...]


class TinyCNN(nn.Module):
    """A few conv layers on 64x64 inputs: trains in minutes on a CPU, for offline demos."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 64))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def _tv(name: str, **kwargs: object) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision

        builder = getattr(torchvision.models, name)
        return builder(weights=None, num_classes=num_classes, **kwargs)

    return build


def _specs() -> Iterator[ArchSpec]:
    s224 = (224, 224)
    yield ArchSpec("alexnet", _tv("alexnet"), s224, ("classifier",))
    yield ArchSpec(
        "efficientnet_b7", _tv("efficientnet_b7"), s224, ("features.7", "features.8", "classifier")
    )
    yield ArchSpec(
        "densenet161",
        _tv("densenet161"),
        s224,
        (
            "features.denseblock2", "features.transition2",
            "features.denseblock3", "features.transition3",
            "features.denseblock4", "features.norm5", "classifier",
        ),
    )  # fmt: skip
    yield ArchSpec("vgg19", _tv("vgg19"), s224, ("classifier",))
    # transform_input=False: inputs are ImageNet-normalised like every other member;
    # aux_logits=False: model(x) returns the logits in training mode too.
    yield ArchSpec(
        "inception_v3",
        _tv("inception_v3", aux_logits=False, transform_input=False, init_weights=True),
        (299, 299),
        ("Mixed_7a", "Mixed_7b", "Mixed_7c", "fc"),
    )
    yield ArchSpec(
        "googlenet",
        _tv("googlenet", aux_logits=False, transform_input=False, init_weights=True),
        s224,
        ("inception5a", "inception5b", "fc"),
    )
    yield ArchSpec("mobilenet_v2", _tv("mobilenet_v2"), s224, ("",))
    yield ArchSpec(
        "shufflenet_v2_x1_0", _tv("shufflenet_v2_x1_0"), s224, ("stage3", "stage4", "conv5", "fc")
    )
    yield ArchSpec("resnext50_32x4d", _tv("resnext50_32x4d"), s224, ("layer4", "fc"))
    yield ArchSpec("wide_resnet101_2", _tv("wide_resnet101_2"), s224, ("layer4", "fc"))
    yield ArchSpec(
        "mnasnet1_0", _tv("mnasnet1_0"), s224, ("layers.13", "layers.14", "layers.15", "classifier")
    )
    # SqueezeNet's Fire modules are fire2..fire9 (Iandola et al.), conv10 is classifier[1].
    # squeezenet1_1.features: Fire at 3,4,6,7,9,10,11,12 -> fire8 = features[11].
    yield ArchSpec(
        "squeezenet1_1", _tv("squeezenet1_1"), s224, ("features.11", "features.12", "classifier")
    )
    # squeezenet1_0.features: Fire at 3,4,5,7,8,9,10,12 -> fire8 = features[10].
    yield ArchSpec(
        "squeezenet1_0", _tv("squeezenet1_0"), s224, ("features.10", "features.12", "classifier")
    )
    yield ArchSpec("tinycnn", TinyCNN, (64, 64), ("",))


def registry() -> dict[str, ArchSpec]:
    """Every architecture a bundle may name, by name."""
    return {spec.name: spec for spec in _specs()}


def get_spec(arch: str) -> ArchSpec:
    specs = registry()
    if arch not in specs:
        raise ModelError(
            f"unknown model architecture {arch!r}",
            hint=f"known architectures: {', '.join(sorted(specs))}; "
            "the model may need a newer chromowatch",
        )
    return specs[arch]


def build_model(arch: str, num_classes: int = 3, *, on_meta: bool = False) -> nn.Module:
    """A fresh network (weights=None); `on_meta` skips the init when weights follow."""
    spec = get_spec(arch)
    with torch.device("meta") if on_meta else nullcontext():
        return spec.build(num_classes)


def load_weights(
    arch: str, state_dict: Mapping[str, torch.Tensor], num_classes: int, *, origin: str
) -> nn.Module:
    """The network with these weights assigned (no wasted random init), on the CPU, in fp32.

    Any mismatch between weights and architecture is a ModelError naming `origin`.
    """
    model = build_model(arch, num_classes, on_meta=True)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state_dict.items()}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelError(
            f"model {origin}: its weights do not fit architecture {arch} "
            f"({str(exc).splitlines()[0]})",
            hint="the file is corrupt or mislabelled; reinstall the model",
        ) from None
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise ModelError(
            f"model {origin}: some tensors of {arch} are missing from its weights",
            hint="the file is corrupt or mislabelled; reinstall the model",
        )
    return model.eval()


def trainable_parameters(model: nn.Module, arch: str) -> list[nn.Parameter]:
    """The parameters of the architecture's later blocks, which fine-tuning trains."""
    prefixes = get_spec(arch).later_blocks
    if prefixes == ("",):
        return list(model.parameters())
    selected = []
    for name, param in model.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            selected.append(param)
    return selected
