"""Test helpers: a tiny installed model and settings rooted in a temporary folder."""

from __future__ import annotations

from pathlib import Path

from chromowatch.classify.bundle import Bundle
from chromowatch.classify.library import ModelLibrary
from chromowatch.settings import Settings, load_settings


def settings_in(tmp: Path, monkeypatch: object) -> Settings:
    """Settings whose data directory (database, crops, models) is `tmp`."""
    monkeypatch.setenv("CHROMOWATCH_PATHS__DATA_DIR", str(tmp))  # type: ignore[attr-defined]
    monkeypatch.setenv("CHROMOWATCH_CLASSIFY__DEVICE", "cpu")  # type: ignore[attr-defined]
    return load_settings().settings


def install_tiny_model(models_dir: Path, name: str = "tiny", seed: int = 0) -> str:
    """A random-weight tinycnn ensemble, made current: enough to exercise the plumbing."""
    import torch  # only the tests that install a model pay for torch

    from chromowatch.classify.architectures import build_model

    torch.manual_seed(seed)
    model = build_model("tinycnn")
    library = ModelLibrary(models_dir)
    library.save_bundle(
        Bundle(arch="tinycnn", state_dict=model.state_dict(), class_names=("A", "B", "C"),
               input_size=(64, 64)),
        f"{name}-m1",
    )
    library.save_ensemble(name, [f"{name}-m1"])
    library.set_current(name)
    return name
