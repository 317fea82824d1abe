"""Ensemble inference: mean of softmax, class order, preprocessing shared and exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from chromowatch.classify.architectures import load_weights
from chromowatch.classify.bundle import Bundle
from chromowatch.classify.ensemble import Ensemble, resize_like_pil
from chromowatch.errors import ModelError
from chromowatch.records import CLASS_NAMES
from tests.classify.test_bundle import make_bundle


def crops(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = rng.integers(20, 130, size=2)
        out.append(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    return out


def reference_probs(bundle: Bundle, images: list[np.ndarray]) -> np.ndarray:
    """The plain torchvision way: PIL, Resize, ToTensor, Normalize, model, softmax."""
    tf = transforms.Compose(
        [
            transforms.Resize(bundle.input_size),
            transforms.ToTensor(),
            transforms.Normalize(bundle.mean, bundle.std),
        ]
    )
    model = load_weights(bundle.arch, bundle.state_dict, 3, origin="ref")
    x = torch.stack([tf(Image.fromarray(img)) for img in images])
    with torch.inference_mode():
        probs = torch.softmax(model(x), dim=1).numpy()
    order = [bundle.class_names.index(c) for c in CLASS_NAMES]
    return probs[:, order]  # type: ignore[no-any-return]


def test_mean_of_member_softmax_matches_plain_torchvision() -> None:
    bundles = [make_bundle(1), make_bundle(2, class_names=("C", "A", "B"), input_size=(48, 40))]
    images = crops(7)
    ensemble = Ensemble("t", [("one", bundles[0]), ("two", bundles[1])], device="cpu")
    predictions = ensemble.predict(images)
    refs = [reference_probs(b, images) for b in bundles]
    for i, pred in enumerate(predictions):
        np.testing.assert_allclose(pred.member_probs["one"], refs[0][i], atol=1e-5)
        np.testing.assert_allclose(pred.member_probs["two"], refs[1][i], atol=1e-5)
        mean = (refs[0][i] + refs[1][i]) / 2
        np.testing.assert_allclose([pred.probs[c] for c in CLASS_NAMES], mean, atol=1e-5)
        assert pred.label == CLASS_NAMES[int(np.argmax(mean))]
        assert abs(sum(pred.probs.values()) - 1) < 1e-5
        assert pred.model_version == ensemble.version
        assert pred.confidence == max(pred.probs.values())


def test_preprocessing_equals_torchvision_resize_on_pil() -> None:
    bundle = make_bundle(3, input_size=(224, 224))
    ensemble = Ensemble("t", [("m", bundle)], device="cpu")
    big = np.random.default_rng(9).integers(0, 256, size=(300, 260, 3), dtype=np.uint8)
    images = [*crops(5, seed=4), big]  # and one that is scaled down
    tf = transforms.Compose(
        [transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(
            bundle.mean, bundle.std)]
    )  # fmt: skip
    expected = torch.stack([tf(Image.fromarray(img)) for img in images])
    got = ensemble._prepare(ensemble._groups[0], images)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6), float((got - expected).abs().max())


def test_members_with_equal_preprocessing_share_one_resize(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    members = [
        ("a", make_bundle(1)),
        ("b", make_bundle(2)),
        ("c", make_bundle(3, input_size=(32, 32))),
    ]
    ensemble = Ensemble("t", members, device="cpu")
    calls = []
    original = Image.Image.resize

    def counting(self: Image.Image, size: tuple[int, int], *args: object) -> Image.Image:
        calls.append(size)
        return original(self, size, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", counting)
    ensemble.predict(crops(4))
    assert sorted(calls) == [(32, 32)] * 4 + [(64, 64)] * 4


def test_batch_size_does_not_change_results() -> None:
    members = [("a", make_bundle(1)), ("b", make_bundle(2))]
    images = crops(11, seed=5)
    small = Ensemble("t", members, device="cpu", batch_size=3).predict_proba(images)
    large = Ensemble("t", members, device="cpu", batch_size=64).predict_proba(images)
    np.testing.assert_allclose(small[0], large[0], atol=1e-5)
    np.testing.assert_allclose(small[1], large[1], atol=1e-5)


def test_cuda_batches_are_padded_to_few_shapes_and_padding_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ens = Ensemble("t", [("a", make_bundle(1))], device="cpu", batch_size=64)
    assert ens.padded_rows(37) == 37  # the CPU runs what it gets
    monkeypatch.setattr(ens, "device", torch.device("cuda"))  # the rule only, no CUDA used
    assert {ens.padded_rows(n) for n in range(1, 65)} == {16, 32, 48, 64}
    assert ens.padded_rows(33) == 48
    monkeypatch.setattr(ens, "device", torch.device("cpu"))
    images = crops(21)
    plain, _ = ens.predict_proba(images)
    monkeypatch.setattr(ens, "padded_rows", lambda n: 64)  # zero rows padded to every batch
    padded, members = ens.predict_proba(images)
    assert members.shape == (1, 21, 3)
    np.testing.assert_allclose(padded, plain, atol=1e-6)


def test_resizing_in_threads_gives_exactly_the_same_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from chromowatch.classify import ensemble as ensemble_module

    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    ens = Ensemble("t", [("a", make_bundle(1)), ("b", make_bundle(2))], device="cpu",
                   batch_size=32)
    images = crops(70, seed=2)
    names: set[str] = set()
    real_resize = Image.Image.resize

    def spy(self: Image.Image, *args: object, **kwargs: object) -> Image.Image:
        names.add(threading.current_thread().name)
        return real_resize(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", spy)
    threaded = ens.predict_proba(images)
    assert any(n.startswith("resize") for n in names)  # the pool did the work
    assert not any(t.name.startswith("resize") for t in threading.enumerate())  # and is gone
    monkeypatch.setattr(ensemble_module, "PARALLEL_RESIZE_MIN", 10_000)  # one thread
    names.clear()
    plain = ens.predict_proba(images)
    assert not any(n.startswith("resize") for n in names)
    np.testing.assert_array_equal(threaded[1], plain[1])


def test_grey_images_and_empty_input() -> None:
    ensemble = Ensemble("t", [("a", make_bundle(1))], device="cpu")
    grey = np.full((30, 40), 120, np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    p_grey, p_1ch, p_rgb = ensemble.predict([grey, grey[:, :, None], rgb])
    assert p_grey.probs == p_rgb.probs == p_1ch.probs
    assert ensemble.predict([]) == []
    with pytest.raises(ValueError, match="uint8"):
        ensemble.predict([rgb.astype(np.float32)])
    with pytest.raises(ValueError, match="HxWx3"):
        ensemble.predict([np.zeros((5, 5, 4), np.uint8)])


def test_members_must_agree_on_enhancement() -> None:
    members = [("a", make_bundle(1)), ("b", make_bundle(2, enhancement="none"))]
    with pytest.raises(ModelError, match="different enhancements"):
        Ensemble("t", members, device="cpu")


def test_members_must_predict_a_b_c() -> None:
    with pytest.raises(ModelError, match=r"predicts classes \['A', 'B', 'X'\]"):
        Ensemble("t", [("a", make_bundle(1, class_names=("A", "B", "X")))], device="cpu")


def test_version_is_stable_and_follows_the_weights() -> None:
    one = Ensemble("t", [("a", make_bundle(1))], device="cpu")
    again = Ensemble("t", [("renamed", make_bundle(1))], device="cpu")
    other = Ensemble("t", [("a", make_bundle(2))], device="cpu")
    assert one.version == again.version
    assert one.version != other.version
    assert one.version.startswith("t-")
    assert one.enhancement == "ikemoto2023"
    assert one.member_names == ("a",)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA refusal")
def test_cuda_without_cuda_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="CUDA is not available"):
        Ensemble("t", [("a", make_bundle(1))], device="cuda")


@pytest.mark.gpu
def test_cuda_bf16_agrees_with_cpu() -> None:
    members = [("a", make_bundle(1)), ("b", make_bundle(2, arch="squeezenet1_1",
                                                          input_size=(224, 224)))]
    images = crops(20)  # one batch padded to 32 rows on CUDA
    cpu, _ = Ensemble("t", members, device="cpu").predict_proba(images)
    gpu, _ = Ensemble("t", members, device="cuda").predict_proba(images)
    assert np.abs(cpu - gpu).max() < 0.05


def test_resize_like_pil_is_pils_bilinear_but_for_rare_rounding() -> None:
    rng = np.random.default_rng(3)
    shapes = [(20, 35), (130, 64), (224, 224), (1, 7), (224, 100), (57, 223), (1, 1)]
    shapes += [tuple(int(v) for v in rng.integers(1, 225, size=2)) for _ in range(10)]
    for target in ((224, 224), (64, 96)):
        fits = [(h, w) for h, w in shapes if h <= target[0] and w <= target[1]]
        images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in fits]
        packed = torch.full((len(images), *target, 3), 255, dtype=torch.uint8)  # no leaks
        sizes = torch.zeros((len(images), 2))
        for i, img in enumerate(images):
            packed[i, : img.shape[0], : img.shape[1]] = torch.from_numpy(img)
            sizes[i] = torch.tensor(img.shape[:2], dtype=torch.float32)
        out = resize_like_pil(packed.permute(0, 3, 1, 2).float(), sizes, target)
        for i, img in enumerate(images):
            pil = Image.fromarray(img).resize(target[::-1], Image.Resampling.BILINEAR)
            got = out[i].permute(1, 2, 0).numpy()
            diff = np.abs(got - np.asarray(pil).astype(np.float32))
            assert diff.max() <= 2.0, (img.shape, target, diff.max())
            assert float(diff.mean()) < 0.1, (img.shape, target)  # mostly equal, not just close


def test_device_preprocessing_matches_pil_preprocessing() -> None:
    """What CUDA runs (one packed upload, resized on the device; crops too big shrunk by
    PIL first, padding rows zero), checked on the CPU against the PIL path."""
    bundle = make_bundle(3, input_size=(224, 224))
    ensemble = Ensemble("t", [("m", bundle)], device="cpu")
    big = np.random.default_rng(9).integers(0, 256, size=(300, 90, 3), dtype=np.uint8)
    images = [*crops(6, seed=5), big]
    group = ensemble._groups[0]
    expected = ensemble._prepare(group, images)
    got = ensemble._prepare_on_device(group, images, None)
    assert got.shape == expected.shape
    two_levels = 2.0 / 255.0 / min(bundle.std)
    assert float((got - expected).abs().max()) <= two_levels + 1e-5
    assert float((got - expected).abs().mean()) < 0.1 / 255.0 / min(bundle.std)
    assert torch.equal(got[-1], expected[-1])  # the PIL-shrunk crop: the same pixels


@pytest.mark.gpu
def test_cuda_graphs_agree_with_eager_and_follow_batch_shapes() -> None:
    members = [("a", make_bundle(1)), ("b", make_bundle(2, arch="squeezenet1_1",
                                                          input_size=(224, 224)))]
    images = crops(40, seed=2)
    eager = Ensemble("t", members, device="cuda", batch_size=32, cuda_graphs=False)
    graphed = Ensemble("t", members, device="cuda", batch_size=32, cuda_graphs=True)
    for n in (40, 7, 40):  # rows 32 + 16, then 16 (padded); the second 40 replays graphs
        want, _ = eager.predict_proba(images[:n])
        got, _ = graphed.predict_proba(images[:n])
        assert np.abs(want - got).max() < 1e-3
    assert graphed.cuda_graphs and len(graphed._graphs) == 4  # 2 members x 2 batch shapes


@pytest.mark.gpu
def test_a_failed_capture_falls_back_to_eager(caplog: pytest.LogCaptureFixture) -> None:
    """A member doing something a CUDA graph cannot hold (a host sync) still classifies:
    the ensemble logs why, drops its graphs and runs eagerly on the default stream."""
    members = [("a", make_bundle(1)), ("b", make_bundle(2))]
    images = crops(20, seed=6)
    eager = Ensemble("t", members, device="cuda", cuda_graphs=False)
    graphed = Ensemble("t", members, device="cuda", cuda_graphs=True)
    model = graphed._members[1].model
    forward = model.forward

    def syncing(x: torch.Tensor) -> torch.Tensor:
        return forward(x) + 0.0 * float(x.sum().item())  # .item() is not capturable

    model.forward = syncing  # type: ignore[method-assign]
    want, _ = eager.predict_proba(images)
    got, _ = graphed.predict_proba(images)
    assert np.abs(want - got).max() < 1e-3
    assert not graphed.cuda_graphs and not graphed._graphs
    assert "CUDA graphs off" in caplog.text
    assert torch.cuda.current_stream() == torch.cuda.default_stream()


def test_progress_counts_crops_through_every_member_up_to_all() -> None:
    """`process` draws its per-crop bar from this: monotonic, in crops, ending at all."""
    members = [(f"m{k}", make_bundle(k)) for k in range(3)]
    ensemble = Ensemble("three", members, device="cpu", batch_size=4)
    seen: list[tuple[float, int]] = []
    ensemble.predict(crops(10), progress=lambda done, total: seen.append((done, total)))
    assert {total for _, total in seen} == {10}
    dones = [done for done, _ in seen]
    assert dones == sorted(dones) and dones[-1] == 10
    assert len(seen) == 3 * 3  # three batches of up to 4 crops, three members each
