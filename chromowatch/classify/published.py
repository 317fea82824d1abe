"""The published models of Ikemoto et al. (Sci Rep 2023): 30 SqueezeNet 1.1 classifiers.

They were published as bare torchvision state dicts (github.com/ikmtd/Classification_Demonstration,
models/SqueezeNet_based_models, MIT licence). Installing them wraps each in a bundle that states
what the paper's code assumed implicitly: classes (a, b, c) = (A, B, C), input = the enhanced
crop resized to 224x224 with torchvision `Resize((224, 224))`, ToTensor, ImageNet mean/std.

Every file is checked against a pinned sha256 before anything is installed, whether it was
downloaded or copied from a local folder: a model file is untrusted input.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from chromowatch.classify.bundle import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Bundle,
)
from chromowatch.classify.library import EnsembleInfo, ModelLibrary
from chromowatch.enhance import ENHANCEMENT
from chromowatch.errors import ModelError
from chromowatch.records import is_demonstration

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class PublishedSet:
    """A set of published state dicts that together make one ensemble."""

    name: str  # the ensemble's name; members are NAME-ARCHLABEL-NN
    member_prefix: str
    arch: str
    files: Mapping[str, str]  # file name -> pinned sha256, in member order
    class_names: tuple[str, ...]  # the published output order, mapped to A/B/C
    input_size: tuple[int, int]
    enhancement: str
    max_bytes: int  # refuse a download that grows beyond this
    citation: str
    metrics: Mapping[str, object] | None = field(default=None)

    def subset(self, names: Iterable[str]) -> PublishedSet:
        """The same set restricted to these files (pinned hashes kept, member order kept),
        without the metrics measured on the whole set. For benchmarks on machines that
        hold only some of the files."""
        wanted = set(names)
        unknown = wanted - set(self.files)
        if unknown:
            raise ValueError(f"not files of {self.name}: {sorted(unknown)}")
        files = {f: h for f, h in self.files.items() if f in wanted}
        return replace(self, files=files, metrics=None)


IKEMOTO2023 = PublishedSet(
    name="ikemoto2023",
    member_prefix="ikemoto2023-squeezenet",
    arch="squeezenet1_1",
    files={
        "SqueezeNet_1.pth": "5d67d3ac57bd9d47713281d611463364d94c626408d42c72544d7eb0d111d9f9",
        "SqueezeNet_2.pth": "397b90864335c5bb0985fc42258d06c0d32558dd71f1d6fd529be4c4418a71b9",
        "SqueezeNet_3.pth": "ac9bc54de0fe757c93461832af3f2d785a68b4bf53717842205bc2bd674993da",
        "SqueezeNet_4.pth": "a4b731259f349d342ef3e02cb9fd42b6bd676a39156d10b8bcec1db51beb464f",
        "SqueezeNet_5.pth": "c20e7d077cde73c529a79b4e72b815cbb223a4f26d06e4a72a6aa6a695a97b21",
        "SqueezeNet_6.pth": "fb9ef337e8e5d8bec16e241891bb1246cd3b4165686b8bac8f00866ebf28cc4b",
        "SqueezeNet_7.pth": "1cabeeba21c8fcf35ac8a58648f015ba4a8e514aeac096d333a015a9fed15b14",
        "SqueezeNet_8.pth": "e2e3b4465ef50c91988f11a5749f9edd1ae59feb5f4ed8d0668ef0fd69a76bc4",
        "SqueezeNet_9.pth": "e09b00cbb4a1af2b1dbc823a39f20a80b2b586ec2f7863bb91b61598a922262d",
        "SqueezeNet_10.pth": "3c6c46431fca625315b25ec1db8072e72d7c39250980a355cfd12ae791128487",
        "SqueezeNet_11.pth": "7003259ad65be9cf59e8819864b12652b7b62f21963538af9cd740ba8ba3678b",
        "SqueezeNet_12.pth": "e5fd0c4e0e82deb5414de76b8b227a2870325f129d660055e8e6ccb42c70a591",
        "SqueezeNet_13.pth": "14d6a4e81326930f8b6de1522d67aed0531918231efcfa476f32aa0911644c9c",
        "SqueezeNet_14.pth": "d987262151bc278cacd2db9de380d715e9edf5a5858a4b2f6acb635df3e213db",
        "SqueezeNet_15.pth": "a7e024075c4e6690d4b63469026600389c5a44bbb613c08b883655d06d41eebb",
        "SqueezeNet_16.pth": "100ca47fec5cb0be2fdf18e815251adcde04ed69028863581bdd8abf92e6ace6",
        "SqueezeNet_17.pth": "94726218bb0731663013c0d8433cdd628385f76a6ba823c622a463325bdf5164",
        "SqueezeNet_18.pth": "dae9b1df632e73e2a5c566751aa67eefd11aaadec64ba29af1d286e9d7b90fdb",
        "SqueezeNet_19.pth": "3432c13e730490857d2c000a1ce4672f8e841621323f1288e639808501a875bc",
        "SqueezeNet_20.pth": "ee1c2ce3e822f42bed0fc8b28ce4810b5d3921d244a38b8c0646909fbc3df380",
        "SqueezeNet_21.pth": "ffdcfa142453e5b13b4855ef9e1f42a494881b6faee79551a23aa8b1aaeb2ce4",
        "SqueezeNet_22.pth": "77cb2462a83f0418e9a117422538d8e49b316a759a4b139c48355247f48b9041",
        "SqueezeNet_23.pth": "e3888312ea1a61c09ba249669e4109574cdd0f3c6957cd5f09320cdb60b07cd7",
        "SqueezeNet_24.pth": "f06228d440e17b5a890c21e36656a3589171fbc59b278d5ea66a67493261a0a1",
        "SqueezeNet_25.pth": "eaa933471a541cc4af22b1b58d84ccc0c3a6f46940073a98848db979f08422dd",
        "SqueezeNet_26.pth": "1363fab15b8d567c0fb6c074a42dc2ef7f1e360b995698b9f920a60f85e762f7",
        "SqueezeNet_27.pth": "1d39c0ea3f5bf8b12e42b98fba4bc9e01970f204598f0add69a44dd1b2a56c1d",
        "SqueezeNet_28.pth": "9ac73cf89f1a5a7e457181bea9bc6b202f8162b822c2261714ea6f772038b39a",
        "SqueezeNet_29.pth": "fb57706bf8700d1c9bc80aa30684a7ed9e362c283ec370a215c9934e5e9f7dad",
        "SqueezeNet_30.pth": "41faa058f505981e7b8d8f3814f2fc29b6380e23a2b0de1cf5ec12583ffc7a32",
    },
    class_names=("A", "B", "C"),  # published folder names a, b, c
    input_size=(224, 224),
    enhancement=ENHANCEMENT,
    max_bytes=16 << 20,
    citation="Ikemoto et al., Sci Rep 2023; github.com/ikmtd/Classification_Demonstration (MIT)",
    # Measured by tests/test_classify_published.py on ikemoto2023/crops/wt (652 crops).
    metrics={"accuracy_ikemoto2023_wt": 0.7347, "n_ikemoto2023_wt": 652},
)


def fetch_ikemoto2023(library: ModelLibrary, source: str | Path, *, timeout: float) -> EnsembleInfo:
    """Install the 30 published SqueezeNets and the ensemble "ikemoto2023".

    `source` is a base URL (https://, http:// or file://) holding SqueezeNet_N.pth, or a local
    folder with those files. The ensemble becomes current when nothing is current yet or the
    current one is a demonstration.
    """
    return fetch_published(library, IKEMOTO2023, source, timeout=timeout)


def fetch_published(
    library: ModelLibrary, published: PublishedSet, source: str | Path, *, timeout: float
) -> EnsembleInfo:
    """Fetch, verify, convert and install a published set: all files, or nothing."""
    library.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=library.root) as tmp:
        if _is_url(source):
            files = _download_all(published, str(source), Path(tmp), timeout)
        else:
            files = _local_all(published, Path(source).expanduser())
        bundles = [
            (f"{published.member_prefix}-{i:02d}", _to_bundle(published, name, location))
            for i, (name, location) in enumerate(files.items(), start=1)
        ]
        for member, bundle in bundles:
            library.save_bundle(bundle, member)
    info = library.save_ensemble(
        published.name, [m for m, _ in bundles], metrics=published.metrics
    )
    try:
        current = library.current_name()
    except ModelError:
        current = None  # an unreadable pointer is repaired below
    if current is None or is_demonstration(current):
        library.set_current(published.name)  # a demonstration never stays before a real one
    log.info("installed %s (%d models) from %s", published.name, len(bundles), source)
    return info


def _is_url(source: str | Path) -> bool:
    return isinstance(source, str) and urllib.parse.urlsplit(source).scheme in (
        "http",
        "https",
        "file",
    )


def _verify(published: PublishedSet, name: str, data: bytes, where: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    expected = published.files[name]
    if actual != expected:
        raise ModelError(
            f"{where}: sha256 {actual} does not match the published {name} ({expected}); "
            "nothing was installed",
            hint="the file is corrupt, truncated or not the published model; "
            "download it again or take it from the original repository",
        )


def _local_all(published: PublishedSet, folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise ModelError(
            f"{folder} is not a folder",
            hint=f"pass the folder that holds {next(iter(published.files))} and the others",
        )
    found = {}
    for name in published.files:
        path = folder / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelError(
                f"{path} is missing; nothing was installed",
                hint=f"the folder must hold all {len(published.files)} published files",
            ) from None
        except OSError as exc:
            raise ModelError(f"{path} cannot be read: {exc}") from None
        _verify(published, name, data, str(path))
        found[name] = path
    return found


def _download_all(
    published: PublishedSet, base_url: str, tmp: Path, timeout: float
) -> dict[str, Path]:
    found = {}
    for name in published.files:
        url = base_url.rstrip("/") + "/" + urllib.parse.quote(name)
        target = tmp / name
        _download(url, target, timeout=timeout, max_bytes=published.max_bytes)
        _verify(published, name, target.read_bytes(), url)
        found[name] = target
    return found


def _download(url: str, target: Path, *, timeout: float, max_bytes: int) -> None:
    log.info("downloading %s", url)
    hint = "check the network and the source URL, or download the files and use --from DIR"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as fh:
            size = 0
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise ModelError(
                        f"{url} is larger than {max_bytes} bytes; not the published model",
                        hint=hint,
                    )
                fh.write(chunk)
    except urllib.error.HTTPError as exc:
        raise ModelError(f"{url}: HTTP {exc.code} {exc.reason}", hint=hint) from None
    except urllib.error.URLError as exc:
        raise ModelError(f"{url} cannot be fetched: {exc.reason}", hint=hint) from None
    except TimeoutError:
        raise ModelError(f"{url}: no answer within {timeout} s", hint=hint) from None
    except OSError as exc:
        raise ModelError(f"{url} cannot be fetched: {exc}", hint=hint) from None


def _to_bundle(published: PublishedSet, name: str, path: Path) -> Bundle:
    """Wrap a published state dict in a bundle, after checking it fits the architecture."""
    import torch  # torch only here: `chromowatch --help` imports this module

    from chromowatch.classify.architectures import load_weights

    try:
        state = torch.load(io.BytesIO(path.read_bytes()), weights_only=True, map_location="cpu")
    except Exception as exc:  # pinned hash passed, so this means an incompatible torch
        raise ModelError(
            f"{name} cannot be read by this torch ({type(exc).__name__}: {exc})",
            hint="install a torch version within chromowatch's supported range",
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelError(f"{name} is not a state dict", hint="check the published set's pins")
    state = dict(state)
    load_weights(published.arch, state, len(published.class_names), origin=name)
    return Bundle(
        arch=published.arch,
        state_dict=state,
        class_names=published.class_names,
        input_size=published.input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        enhancement=published.enhancement,
        meta={
            "published_file": name,
            "published_sha256": published.files[name],
            "citation": published.citation,
        },
    )
