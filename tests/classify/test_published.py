"""Installing published models: pinned hashes, local folders and downloads, all or nothing.

Nothing here touches the internet: downloads come from file:// URLs or a tiny HTTP server on
127.0.0.1. The first tests use a fake two-model published set, so they run without the real
data; the realdata ones install the 30 real SqueezeNets from ../shared/data.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from chromowatch.classify import ModelLibrary, fetch_ikemoto2023
from chromowatch.classify.architectures import build_model
from chromowatch.classify.published import IKEMOTO2023, PublishedSet, fetch_published
from chromowatch.errors import ModelError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[functools.partial[str]]:
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 that serves that folder."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/models"

    yield functools.partial(start)
    for server in servers:
        server.shutdown()
        server.server_close()


def _fake_set(folder: Path) -> PublishedSet:
    """Two random squeezenet1_1 state dicts saved like the published ones, with their pins."""
    folder.mkdir(parents=True)
    pins = {}
    for i in (1, 2):
        torch.manual_seed(i)
        buf = io.BytesIO()
        torch.save(build_model("squeezenet1_1").state_dict(), buf)
        (folder / f"Fake_{i}.pth").write_bytes(buf.getvalue())
        pins[f"Fake_{i}.pth"] = hashlib.sha256(buf.getvalue()).hexdigest()
    return dataclasses.replace(IKEMOTO2023, name="fake", member_prefix="fake-sq", files=pins)


def test_fake_set_from_a_local_folder(tmp_path: Path) -> None:
    published = _fake_set(tmp_path / "src" / "models")
    library = ModelLibrary(tmp_path / "lib")
    info = fetch_published(library, published, tmp_path / "src" / "models", timeout=5)
    assert info.members == ("fake-sq-01", "fake-sq-02")
    assert library.current_name() == "fake"
    bundle = library.load_bundle("fake-sq-01")
    assert bundle.arch == "squeezenet1_1" and bundle.class_names == ("A", "B", "C")
    assert bundle.input_size == (224, 224) and bundle.enhancement == "ikemoto2023"
    assert bundle.meta["published_file"] == "Fake_1.pth"
    assert not [p for p in library.root.iterdir() if p.name.startswith(".fetch-")]
    assert len(library.load_ensemble("fake", device="cpu").member_names) == 2


def test_fake_set_over_http_and_file_urls(tmp_path: Path, serve: functools.partial[str]) -> None:
    published = _fake_set(tmp_path / "src" / "models")
    over_http = ModelLibrary(tmp_path / "http")
    fetch_published(over_http, published, serve(tmp_path / "src"), timeout=5)
    over_file = ModelLibrary(tmp_path / "file")
    fetch_published(over_file, published, (tmp_path / "src" / "models").as_uri(), timeout=5)
    assert [b.sha256 for b in over_http.list_bundles()] == [
        b.sha256 for b in over_file.list_bundles()
    ]


def test_corrupt_download_is_refused_and_nothing_installed(
    tmp_path: Path, serve: functools.partial[str]
) -> None:
    published = _fake_set(tmp_path / "src" / "models")
    target = tmp_path / "src" / "models" / "Fake_2.pth"
    target.write_bytes(target.read_bytes()[:-100])  # truncated in transit
    library = ModelLibrary(tmp_path / "lib")
    with pytest.raises(ModelError, match=r"Fake_2\.pth: sha256 [0-9a-f]{64} does not match") as e:
        fetch_published(library, published, serve(tmp_path / "src"), timeout=5)
    assert published.files["Fake_2.pth"] in e.value.message
    assert library.list_bundles() == [] and library.current_name() is None


def test_missing_files_and_http_errors(tmp_path: Path, serve: functools.partial[str]) -> None:
    published = _fake_set(tmp_path / "src" / "models")
    os.remove(tmp_path / "src" / "models" / "Fake_1.pth")
    library = ModelLibrary(tmp_path / "lib")
    with pytest.raises(ModelError, match=r"Fake_1\.pth is missing"):
        fetch_published(library, published, tmp_path / "src" / "models", timeout=5)
    with pytest.raises(ModelError, match=r"Fake_1\.pth: HTTP 404") as info:
        fetch_published(library, published, serve(tmp_path / "src"), timeout=5)
    assert "--from DIR" in str(info.value.hint)
    with pytest.raises(ModelError, match="is not a folder"):
        fetch_published(library, published, tmp_path / "nowhere", timeout=5)
    assert library.list_bundles() == []


def test_oversized_download_is_cut_off(tmp_path: Path, serve: functools.partial[str]) -> None:
    published = dataclasses.replace(_fake_set(tmp_path / "src" / "models"), max_bytes=1000)
    library = ModelLibrary(tmp_path / "lib")
    with pytest.raises(ModelError, match="larger than 1000 bytes"):
        fetch_published(library, published, serve(tmp_path / "src"), timeout=5)


def test_an_existing_current_ensemble_stays_current(tmp_path: Path) -> None:
    from tests.classify.test_bundle import make_bundle

    library = ModelLibrary(tmp_path / "lib")
    library.save_bundle(make_bundle(1), "own")
    library.save_ensemble("own", ["own"])
    library.set_current("own")
    published = _fake_set(tmp_path / "src")
    fetch_published(library, published, tmp_path / "src", timeout=5)
    assert library.current_name() == "own"
    assert {e.name for e in library.list_ensembles()} == {"own", "fake"}


def test_pins_cover_the_thirty_published_models() -> None:
    assert list(IKEMOTO2023.files) == [f"SqueezeNet_{i}.pth" for i in range(1, 31)]
    assert len(set(IKEMOTO2023.files.values())) == 30


@pytest.mark.realdata
def test_ikemoto2023_from_the_shared_folder(real_data: Path, tmp_path: Path) -> None:
    library = ModelLibrary(tmp_path / "lib")
    info = fetch_ikemoto2023(library, real_data / "ikemoto2023/models/squeezenet", timeout=5)
    assert info.name == "ikemoto2023" and len(info.members) == 30
    assert library.current_name() == "ikemoto2023"
    ensemble = library.load_ensemble("current", device="cpu")
    assert ensemble.enhancement == "ikemoto2023"
    assert len(ensemble.member_names) == 30


@pytest.mark.realdata
def test_ikemoto2023_download_refuses_a_corrupted_file(
    real_data: Path, tmp_path: Path, serve: functools.partial[str]
) -> None:
    mirror = tmp_path / "mirror" / "models"
    mirror.mkdir(parents=True)
    for name in IKEMOTO2023.files:
        (mirror / name).symlink_to(real_data / "ikemoto2023/models/squeezenet" / name)
    bad = mirror / "SqueezeNet_7.pth"
    data = bytearray(bad.read_bytes())
    bad.unlink()
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    library = ModelLibrary(tmp_path / "lib")
    with pytest.raises(ModelError, match=r"SqueezeNet_7\.pth: sha256") as info:
        fetch_ikemoto2023(library, serve(tmp_path / "mirror"), timeout=10)
    assert IKEMOTO2023.files["SqueezeNet_7.pth"] in info.value.message
    assert library.list_bundles() == []
    (mirror / "SqueezeNet_7.pth").unlink()
    (mirror / "SqueezeNet_7.pth").symlink_to(
        real_data / "ikemoto2023/models/squeezenet/SqueezeNet_7.pth"
    )
    fetch_ikemoto2023(library, serve(tmp_path / "mirror"), timeout=10)
    assert len(library.list_bundles()) == 30


def test_a_subset_keeps_the_pinned_hashes_and_drops_the_whole_set_metrics() -> None:
    from chromowatch.classify.published import IKEMOTO2023

    some = IKEMOTO2023.subset(["SqueezeNet_3.pth", "SqueezeNet_1.pth"])
    assert list(some.files) == ["SqueezeNet_1.pth", "SqueezeNet_3.pth"]  # member order
    assert some.files["SqueezeNet_3.pth"] == IKEMOTO2023.files["SqueezeNet_3.pth"]
    assert some.metrics is None and IKEMOTO2023.metrics is not None
    assert some.name == IKEMOTO2023.name
    with pytest.raises(ValueError, match=r"SqueezeNet_99\.pth"):
        IKEMOTO2023.subset(["SqueezeNet_99.pth"])


def test_a_demonstration_current_ensemble_gives_way_to_a_real_one(tmp_path: Path) -> None:
    from tests.classify.test_bundle import make_bundle

    library = ModelLibrary(tmp_path / "lib")
    library.save_bundle(make_bundle(1), "demo-synthetic-tinycnn")
    library.save_ensemble("demo-synthetic", ["demo-synthetic-tinycnn"],
                          metrics={"demonstration": True})
    library.set_current("demo-synthetic")
    published = _fake_set(tmp_path / "src")
    fetch_published(library, published, tmp_path / "src", timeout=5)
    assert library.current_name() == "fake"
    assert library.previous_name() == "demo-synthetic"
