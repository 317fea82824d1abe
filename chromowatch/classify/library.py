"""The installed models: bundles, named ensembles and the "current" pointer, on disk.

Layout under the models dir:

    bundles/NAME.pt         a bundle (see bundle.py)
    bundles/NAME.json       its description for listings (arch, sha256, created)
    ensembles/NAME.json     an ensemble: member bundle files with their sha256, metrics
    current.json            {"name": ..., "previous": ...}: the ensemble in use

Every file is written atomically, so a reader (the daemon reloading) sees the old or the new
state, never a half-written one; promotion is one rename of current.json, and the previous
name is kept for going back. Loading checks each member's sha256 against the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chromowatch.classify.bundle import Bundle, load_bundle, save_bundle
from chromowatch.errors import ModelError
from chromowatch.files import atomic_write_bytes

if TYPE_CHECKING:
    from chromowatch.classify.ensemble import Ensemble
    from chromowatch.settings import ClassifySettings

log = logging.getLogger(__name__)

ENSEMBLE_FORMAT = "chromowatch-ensemble"
ENSEMBLE_FORMAT_VERSION = 1
CURRENT = "current"
FETCH_HINT = (
    "install the published models with `chromowatch models fetch ikemoto2023` "
    "(or `chromowatch models fetch ikemoto2023 --from DIR` from a local copy)"
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_VERSION = re.compile(r"(.+)-[0-9a-f]{12}")


@dataclass(frozen=True)
class BundleInfo:
    """One installed bundle, as its description file tells (None: description missing)."""

    name: str
    path: Path
    arch: str | None
    enhancement: str | None
    sha256: str | None
    created: str | None


@dataclass(frozen=True)
class EnsembleInfo:
    """One installed ensemble: its member bundles, when it was made, and how well it did."""

    name: str
    members: tuple[str, ...]
    created: str
    metrics: Mapping[str, Any] | None
    enhancement: str
    path: Path


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def ensemble_of_version(version: str) -> str:
    """The ensemble name in a prediction's model version (NAME-<12 hex>, ensemble.py)."""
    match = _VERSION.fullmatch(version)
    return match.group(1) if match else version


def check_name(name: str, what: str) -> None:
    if not _NAME.match(name) or name == CURRENT:
        raise ModelError(
            f"invalid {what} name {name!r}",
            hint='use letters, digits, ".", "_" and "-" (not "current"), at most 100 characters',
        )


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(
            f"{path} cannot be read: {exc}", hint="the file is corrupt; reinstall the model"
        ) from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object", hint="reinstall the model")
    return data


class ModelLibrary:
    """The models dir: save and list bundles and ensembles, load an ensemble to predict."""

    def __init__(self, models_dir: Path) -> None:
        self.root = Path(models_dir).expanduser()
        self.bundles_dir = self.root / "bundles"
        self.ensembles_dir = self.root / "ensembles"
        self.current_file = self.root / "current.json"

    def bundle_path(self, name: str) -> Path:
        return self.bundles_dir / f"{name}.pt"

    def ensemble_path(self, name: str) -> Path:
        return self.ensembles_dir / f"{name}.json"

    # -- bundles -------------------------------------------------------------------------

    def save_bundle(self, bundle: Bundle, name: str) -> BundleInfo:
        """Install (or replace) a bundle under `name`."""
        check_name(name, "bundle")
        path = self.bundle_path(name)
        sha256 = save_bundle(bundle, path)
        info = BundleInfo(name, path, bundle.arch, bundle.enhancement, sha256, _now())
        _write_json(
            path.with_suffix(".json"),
            {
                "name": name,
                "arch": bundle.arch,
                "enhancement": bundle.enhancement,
                "sha256": sha256,
                "created": info.created,
            },
        )
        return info

    def list_bundles(self) -> list[BundleInfo]:
        infos = []
        for path in sorted(self.bundles_dir.glob("*.pt")):
            try:
                desc = _read_json(path.with_suffix(".json"))
            except ModelError:
                desc = {}
            infos.append(
                BundleInfo(
                    name=path.stem,
                    path=path,
                    arch=desc.get("arch"),
                    enhancement=desc.get("enhancement"),
                    sha256=desc.get("sha256"),
                    created=desc.get("created"),
                )
            )
        return infos

    def load_bundle(self, name: str) -> Bundle:
        path = self.bundle_path(name)
        if not path.is_file():
            raise ModelError(f"no model bundle named {name!r} in {self.root}", hint=FETCH_HINT)
        return load_bundle(path)

    # -- ensembles -----------------------------------------------------------------------

    def save_ensemble(
        self, name: str, member_names: Sequence[str], metrics: Mapping[str, Any] | None = None
    ) -> EnsembleInfo:
        """Record an ensemble of installed bundles, pinning each member file's sha256."""
        check_name(name, "ensemble")
        if not member_names:
            raise ModelError(f"ensemble {name!r} needs at least one member")
        if len(set(member_names)) != len(member_names):
            raise ModelError(f"ensemble {name!r} names a member twice: {list(member_names)}")
        members = []
        enhancements: dict[str, str] = {}
        for member in member_names:
            path = self.bundle_path(member)
            if not path.is_file():
                raise ModelError(
                    f"ensemble {name!r}: no bundle named {member!r} in {self.bundles_dir}",
                    hint="save the bundle first (ModelLibrary.save_bundle)",
                )
            data = path.read_bytes()
            sha256 = hashlib.sha256(data).hexdigest()
            bundle = load_bundle(path, expected_sha256=sha256)  # full check before pinning
            enhancements[member] = bundle.enhancement
            members.append({"name": member, "file": f"bundles/{path.name}", "sha256": sha256})
        if len(set(enhancements.values())) != 1:
            raise ModelError(
                f"ensemble {name!r}: members expect different enhancements {enhancements}",
                hint="an ensemble's members must all expect the same enhancement",
            )
        created = _now()
        enhancement = next(iter(enhancements.values()))
        _write_json(
            self.ensemble_path(name),
            {
                "format": ENSEMBLE_FORMAT,
                "format_version": ENSEMBLE_FORMAT_VERSION,
                "name": name,
                "created": created,
                "enhancement": enhancement,
                "members": members,
                "metrics": dict(metrics) if metrics is not None else None,
            },
        )
        log.info("saved ensemble %s (%d members)", name, len(members))
        return EnsembleInfo(
            name,
            tuple(member_names),
            created,
            dict(metrics) if metrics is not None else None,
            enhancement,
            self.ensemble_path(name),
        )

    def _manifest(self, name: str) -> dict[str, Any]:
        path = self.ensemble_path(name)
        if not path.is_file():
            raise ModelError(f"no ensemble named {name!r} in {self.root}",
                             hint=self._installed_hint())
        data = _read_json(path)
        if data.get("format") != ENSEMBLE_FORMAT:
            raise ModelError(f"{path} is not a chromowatch ensemble manifest", hint=FETCH_HINT)
        version = data.get("format_version")
        if not isinstance(version, int) or version > ENSEMBLE_FORMAT_VERSION:
            raise ModelError(
                f"{path} has ensemble format {version!r}; this chromowatch reads up to "
                f"{ENSEMBLE_FORMAT_VERSION}",
                hint="upgrade chromowatch to use this ensemble",
            )
        members = data.get("members")
        if (
            not isinstance(members, list)
            or not members
            or not all(
                isinstance(m, dict) and {"name", "file", "sha256"} <= m.keys() for m in members
            )
        ):
            raise ModelError(f"{path}: malformed member list", hint="reinstall the model")
        return data

    def _installed_hint(self) -> str:
        """What can be named instead: the installed ensembles, or how to install one."""
        names = sorted(p.stem for p in self.ensembles_dir.glob("*.json"))
        if not names:
            return f"no ensemble is installed; {FETCH_HINT}"
        return (f"installed ensembles: {', '.join(names)} (`chromowatch models list`); "
                "or " + FETCH_HINT)

    def _info(self, name: str, data: Mapping[str, Any]) -> EnsembleInfo:
        return EnsembleInfo(
            name=name,
            members=tuple(str(m["name"]) for m in data["members"]),
            created=str(data.get("created", "")),
            metrics=data.get("metrics"),
            enhancement=str(data.get("enhancement", "")),
            path=self.ensemble_path(name),
        )

    def list_ensembles(self) -> list[EnsembleInfo]:
        """Every readable ensemble manifest; unreadable ones are logged and left out."""
        infos = []
        for path in sorted(self.ensembles_dir.glob("*.json")):
            try:
                infos.append(self._info(path.stem, self._manifest(path.stem)))
            except ModelError as exc:
                log.warning("skipping ensemble %s: %s", path, exc.message)
        return infos

    def ensemble_info(self, name: str) -> EnsembleInfo:
        resolved = self.resolve(name)
        return self._info(resolved, self._manifest(resolved))

    # -- the current pointer -------------------------------------------------------------

    def current_name(self) -> str | None:
        if not self.current_file.exists():
            return None
        data = _read_json(self.current_file)
        name = data.get("name")
        if not isinstance(name, str):
            raise ModelError(f"{self.current_file} names no ensemble", hint=FETCH_HINT)
        return name

    def previous_name(self) -> str | None:
        """The ensemble that was current before the last set_current (for going back)."""
        if not self.current_file.exists():
            return None
        previous = _read_json(self.current_file).get("previous")
        return previous if isinstance(previous, str) else None

    def set_current(self, name: str) -> None:
        """Point "current" at an installed ensemble, in one atomic rename."""
        self._manifest(name)  # must exist and be readable
        try:
            previous = self.current_name()
        except ModelError:
            previous = None
        if previous == name:
            previous = self.previous_name()
        _write_json(self.current_file, {"name": name, "previous": previous, "set": _now()})
        log.info("current ensemble is now %s (was %s)", name, previous)

    def resolve(self, name: str) -> str:
        """An ensemble name, with "current" replaced by what it points at."""
        if name != CURRENT:
            return name
        current = self.current_name()
        if current is None:
            raise ModelError(f"no current model is set in {self.root}", hint=FETCH_HINT)
        return current

    # -- loading -------------------------------------------------------------------------

    def load_ensemble(self, name: str, *, device: str = "auto", batch_size: int = 64,
                      cuda_graphs: bool = True) -> Ensemble:
        """Load an ensemble ("current" follows the pointer), checking every member's sha256."""
        from chromowatch.classify.ensemble import Ensemble  # torch: not at `chromowatch --help`

        resolved = self.resolve(name)
        data = self._manifest(resolved)
        members = []
        for member in data["members"]:
            path = self.root / str(member["file"])
            if not path.resolve().is_relative_to(self.root.resolve()):
                raise ModelError(
                    f"{self.ensemble_path(resolved)}: member file {member['file']!r} lies "
                    f"outside {self.root}",
                    hint="reinstall the model",
                )
            bundle = load_bundle(path, expected_sha256=str(member["sha256"]))
            members.append((str(member["name"]), bundle))
        return Ensemble(resolved, members, device=device, batch_size=batch_size,
                        cuda_graphs=cuda_graphs)

    def load_configured(self, classify: ClassifySettings, name: str | None = None) -> Ensemble:
        """The ensemble `name` (default: the configured model) run as `[classify]` says:
        device, batch size, CUDA graphs. A new run-time setting goes here, not to callers."""
        return self.load_ensemble(name or classify.model, device=classify.device,
                                  batch_size=classify.batch_size,
                                  cuda_graphs=classify.cuda_graphs)


    # -- promotion, rollback, old versions (chromowatch.training) -----------------------

    def promote(self, name: str) -> str | None:
        """Make `name` current after loading it completely (every member's sha256, weights
        and architecture checked): a corrupt or incomplete ensemble is refused with a
        ModelError and the current one stays. Returns the previous current name."""
        resolved = self.resolve(name)
        self.load_ensemble(resolved, device="cpu")  # raises on any problem
        try:
            before = self.current_name()
        except ModelError:
            before = None
        self.set_current(resolved)
        return before

    def rollback(self) -> str:
        """Make the previous ensemble current again (checked like `promote`); returns it."""
        previous = self.previous_name()
        if previous is None:
            raise ModelError(f"no previous ensemble is recorded in {self.current_file}",
                             hint="`chromowatch models use NAME` chooses one by name")
        self.promote(previous)
        return previous

    def prune(self, keep: int, *, is_version: Any = None) -> list[str]:
        """Remove all but the newest `keep` versioned ensembles (those `is_version(info)`
        says are versions; default: every ensemble) and the bundles only they used. The
        current and previous ensembles are always kept. Returns the removed names."""
        try:
            protected = {self.current_name(), self.previous_name()}
        except ModelError:
            return []  # unsure what is in use: remove nothing
        infos = self.list_ensembles()
        versions = [i for i in infos if is_version is None or is_version(i)]
        versions.sort(key=lambda i: (i.created, i.name), reverse=True)
        doomed = [i for i in versions[keep:] if i.name not in protected]
        if not doomed:
            return []
        doomed_names = {i.name for i in doomed}
        still_used = {m for i in infos if i.name not in doomed_names for m in i.members}
        for info in doomed:
            info.path.unlink(missing_ok=True)
            for member in info.members:
                if member not in still_used:
                    self.bundle_path(member).unlink(missing_ok=True)
                    self.bundle_path(member).with_suffix(".json").unlink(missing_ok=True)
            log.info("removed old ensemble %s", info.name)
        return sorted(doomed_names)


def describe_library(library: ModelLibrary) -> list[dict[str, Any]]:
    """One plain dict per installed ensemble, for `chromowatch models list` (text or JSON)."""
    try:
        current = library.current_name()
    except ModelError:
        current = None
    return [
        {
            "name": info.name,
            "current": info.name == current,
            "members": list(info.members),
            "enhancement": info.enhancement,
            "created": info.created,
            "metrics": dict(info.metrics) if info.metrics is not None else None,
            "path": str(info.path),
        }
        for info in library.list_ensembles()
    ]
