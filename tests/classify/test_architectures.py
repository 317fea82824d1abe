"""The architecture registry: every paper model builds offline with a 3-class head."""

from __future__ import annotations

import pytest
import torch

from chromowatch.classify.architectures import (
    build_model,
    get_spec,
    load_weights,
    registry,
    trainable_parameters,
)
from chromowatch.errors import ModelError

PAPER_MODELS = {
    "alexnet", "efficientnet_b7", "densenet161", "vgg19", "inception_v3", "googlenet",
    "mobilenet_v2", "shufflenet_v2_x1_0", "resnext50_32x4d", "wide_resnet101_2", "mnasnet1_0",
    "squeezenet1_1", "squeezenet1_0", "tinycnn",
}  # fmt: skip
SMALL = ["squeezenet1_1", "squeezenet1_0", "mobilenet_v2", "shufflenet_v2_x1_0", "tinycnn"]


def test_registry_has_the_paper_models() -> None:
    assert set(registry()) == PAPER_MODELS
    assert get_spec("inception_v3").input_size == (299, 299)
    assert get_spec("tinycnn").input_size == (64, 64)
    assert get_spec("squeezenet1_1").input_size == (224, 224)


def test_unknown_architecture_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="unknown model architecture 'resnet9000'"):
        build_model("resnet9000")


@pytest.mark.parametrize("arch", sorted(PAPER_MODELS))
def test_every_architecture_has_a_three_class_head_and_later_blocks(arch: str) -> None:
    model = build_model(arch, on_meta=True)  # no init, no download: instant even for VGG19
    params = dict(model.named_parameters())
    *_, last = params.values()
    assert last.shape == (3,), "the head's bias has one entry per class"
    trainable = trainable_parameters(model, arch)
    assert trainable, "later blocks name at least one parameter"
    for prefix in get_spec(arch).later_blocks:
        assert prefix == "" or any(n.startswith(prefix + ".") for n in params), prefix
    ids = {id(p) for p in trainable}
    assert id(last) in ids, "the head is always trained"


def test_later_blocks_follow_the_paper() -> None:
    def names(arch: str) -> set[str]:
        model = build_model(arch, on_meta=True)
        ids = {id(p) for p in trainable_parameters(model, arch)}
        return {n for n, p in model.named_parameters() if id(p) in ids}

    dense = names("densenet161")
    assert any(n.startswith("features.denseblock2.") for n in dense)
    assert not any(n.startswith("features.denseblock1.") for n in dense)
    assert len(names("mobilenet_v2")) == len(dict(build_model("mobilenet_v2").named_parameters()))
    shuffle = names("shufflenet_v2_x1_0")
    assert any(n.startswith("stage3.") for n in shuffle)
    assert not any(n.startswith("stage2.") for n in shuffle)
    squeeze = names("squeezenet1_1")  # Fire8 = features[11], Fire9 = features[12], Conv10
    assert {n.split(".")[1] for n in squeeze if n.startswith("features.")} == {"11", "12"}
    assert "classifier.1.weight" in squeeze


@pytest.mark.parametrize("arch", SMALL)
def test_small_architectures_run_at_their_input_size(arch: str) -> None:
    h, w = get_spec(arch).input_size
    model = build_model(arch).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, h, w))
    assert out.shape == (2, 3)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(PAPER_MODELS - set(SMALL)))
def test_large_architectures_run_at_their_input_size(arch: str) -> None:
    h, w = get_spec(arch).input_size
    model = build_model(arch).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, h, w))
    assert out.shape == (1, 3)


def test_load_weights_refuses_weights_of_another_architecture() -> None:
    state = build_model("tinycnn").state_dict()
    with pytest.raises(ModelError, match=r"somefile.*do not fit architecture squeezenet1_1"):
        load_weights("squeezenet1_1", state, 3, origin="somefile")
    model = load_weights("tinycnn", state, 3, origin="x")
    assert not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
