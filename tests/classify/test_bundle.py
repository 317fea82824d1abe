"""Bundle files: atomic save, safe load, and every kind of bad file refused by name."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from chromowatch.classify.architectures import build_model
from chromowatch.classify.bundle import (
    BUNDLE_FORMAT_VERSION,
    Bundle,
    _to_payload,
    load_bundle,
    save_bundle,
)
from chromowatch.errors import ModelError


def make_bundle(
    seed: int = 0,
    *,
    arch: str = "tinycnn",
    class_names: tuple[str, ...] = ("A", "B", "C"),
    input_size: tuple[int, int] = (64, 64),
    enhancement: str = "ikemoto2023",
) -> Bundle:
    """A random-init bundle; BatchNorm statistics randomised so that outputs differ per seed."""
    torch.manual_seed(seed)
    model = build_model(arch)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for key, value in state.items():
        if key.endswith("running_mean"):
            value.normal_(0, 0.1)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
    return Bundle(
        arch=arch,
        state_dict=state,
        class_names=class_names,
        input_size=input_size,
        enhancement=enhancement,
        meta={"seed": str(seed)},
    )


def test_round_trip_keeps_weights_and_preprocessing(tmp_path: Path) -> None:
    bundle = make_bundle(1, class_names=("C", "A", "B"), input_size=(48, 56))
    path = tmp_path / "m.pt"
    sha = save_bundle(bundle, path)
    assert len(sha) == 64
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"], "no .part left behind"
    loaded = load_bundle(path, expected_sha256=sha)
    assert loaded == bundle  # dataclass equality: arch, class names, sizes, mean/std, meta
    assert loaded.origin == str(path)
    assert loaded.weights_sha256 == bundle.weights_sha256
    assert loaded.state_dict.keys() == bundle.state_dict.keys()
    for key, value in bundle.state_dict.items():
        assert torch.equal(loaded.state_dict[key], value)


def test_save_replaces_atomically_and_leaves_no_part_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.pt"
    save_bundle(make_bundle(1), path)
    before = path.read_bytes()

    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("chromowatch.files.os.fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        save_bundle(make_bundle(2), path)
    assert path.read_bytes() == before, "the old bundle is untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_truncated_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_bundle(make_bundle(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match=r"m\.pt is not a readable model bundle"):
        load_bundle(path)


def test_garbage_and_missing_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match=r"garbage\.pt is not a readable model bundle"):
        load_bundle(garbage)
    with pytest.raises(ModelError, match=r"nothere\.pt is missing") as info:
        load_bundle(tmp_path / "nothere.pt")
    assert "models fetch ikemoto2023" in str(info.value.hint)


def test_wrong_sha256_is_refused_with_both_hashes(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    sha = save_bundle(make_bundle(), path)
    with pytest.raises(ModelError, match=f"m.pt has sha256 {sha}, expected 0000"):
        load_bundle(path, expected_sha256="0000")


def _save_payload(path: Path, payload: object) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    path.write_bytes(buf.getvalue())


def test_bare_state_dict_is_not_a_bundle(tmp_path: Path) -> None:
    path = tmp_path / "bare.pt"
    _save_payload(path, build_model("tinycnn").state_dict())
    with pytest.raises(ModelError, match=r"bare\.pt is not a chromowatch model bundle"):
        load_bundle(path)


class _Evil:
    def __reduce__(self) -> tuple[object, ...]:
        return (print, ("code ran",))


def test_pickled_code_is_never_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pt"
    payload = _to_payload(make_bundle())
    payload["meta"] = {"x": _Evil()}
    _save_payload(path, payload)
    with pytest.raises(ModelError, match=r"evil\.pt is not a readable model bundle"):
        load_bundle(path)
    assert "code ran" not in capsys.readouterr().out


def test_newer_format_asks_for_an_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "new.pt"
    payload = _to_payload(make_bundle())
    payload["format_version"] = BUNDLE_FORMAT_VERSION + 1
    _save_payload(path, payload)
    with pytest.raises(ModelError, match="bundle format 2") as info:
        load_bundle(path)
    assert "upgrade chromowatch" in str(info.value.hint)


def test_changed_weights_fail_the_stored_digest(tmp_path: Path) -> None:
    path = tmp_path / "flip.pt"
    payload = _to_payload(make_bundle())
    first = next(iter(payload["state_dict"]))
    payload["state_dict"][first] = payload["state_dict"][first] + 1
    _save_payload(path, payload)
    with pytest.raises(ModelError, match="do not match the digest"):
        load_bundle(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("input_size", [64]), ("class_names", 5), ("arch", None), ("std", [0.0, 1.0, 1.0])],
)
def test_malformed_fields_are_refused(tmp_path: Path, field: str, value: object) -> None:
    path = tmp_path / "bad.pt"
    payload = _to_payload(make_bundle())
    if value is None:
        del payload[field]
    else:
        payload[field] = value
    _save_payload(path, payload)
    with pytest.raises(ModelError, match=r"bad\.pt is not a chromowatch model bundle"):
        load_bundle(path)
