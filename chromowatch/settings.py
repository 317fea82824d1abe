"""One settings object, read from a TOML file and CHROMOWATCH_* environment variables.

Precedence: environment > file > defaults. The file is `--config`, else $CHROMOWATCH_CONFIG,
else `$XDG_CONFIG_HOME/chromowatch/chromowatch.toml` (~/.config/...) when it exists.
Environment variables name nested keys with a double underscore:
CHROMOWATCH_CLASSIFY__BATCH_SIZE=32 sets `[classify] batch_size`.

Each section is a pydantic model; add a key by adding a field with a description, and
`chromowatch config generate` (and config/chromowatch.example.toml) follow.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from chromowatch.errors import ConfigError

ENV_PREFIX = "CHROMOWATCH_"
ENV_DELIMITER = "__"
CONFIG_ENV = "CHROMOWATCH_CONFIG"
# Keys whose values `config show` never prints.
SECRET_KEYS = frozenset({"password"})


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "chromowatch" / "chromowatch.toml"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "chromowatch"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class PathsSettings(Section):
    data_dir: Path | None = Field(
        None,
        description="Where crops, reports and the database live. "
        "Unset: $XDG_DATA_HOME/chromowatch, else ~/.local/share/chromowatch.",
    )
    models_dir: Path | None = Field(None, description="Installed models. Unset: <data_dir>/models.")
    database: Path | None = Field(
        None, description="SQLite database file. Unset: <data_dir>/chromowatch.sqlite3."
    )

    @property
    def data(self) -> Path:
        return (self.data_dir or _default_data_dir()).expanduser()

    @property
    def models(self) -> Path:
        return (self.models_dir or self.data / "models").expanduser()

    @property
    def db(self) -> Path:
        return (self.database or self.data / "chromowatch.sqlite3").expanduser()

    @property
    def crops(self) -> Path:
        return self.data / "crops"


class IngestSettings(Section):
    max_pixels: int = Field(
        150_000_000,
        gt=0,
        description="Refuse images with more pixels than this (decompression bombs).",
    )
    max_file_mb: float = Field(1024.0, gt=0, description="Refuse files larger than this many MiB.")
    extensions: list[str] = Field(
        [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"],
        description="File name endings taken as images (case-insensitive).",
    )

    @model_validator(mode="after")
    def _extensions_have_dots(self) -> IngestSettings:
        for ext in self.extensions:
            if not ext.startswith("."):
                raise ValueError(f"extensions must start with a dot, got {ext!r}")
        return self


class SegmentSettings(Section):
    """Cropping chromosomes from a spread.

    Sizes are relative to the spread's own chromosomes (their typical stroke width and
    length, measured in each image), so the defaults work across magnifications.
    """

    threshold_fraction: float = Field(
        0.4,
        gt=0,
        lt=1,
        description="A pixel belongs to an object when its darkness above the flattened "
        "background exceeds this share of the chromosomes' typical peak darkness.",
    )
    noise_sigmas: float = Field(
        6.0, gt=0, description="The threshold is never below this many background noise sigmas."
    )
    min_area_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Objects smaller than this share of a typical chromatid's area are debris.",
    )
    nucleus_widths: float = Field(
        4.0,
        gt=1,
        description="Regions thicker than this many chromosome stroke widths are interphase "
        "nuclei (or stain blotches) and are left out.",
    )
    pair_max_gap: float = Field(
        1.5,
        ge=0,
        description="Two separated chromatids are kept as one class C object when the gap "
        "between them is at most this many of their own thicknesses (and they lie parallel).",
    )
    chromatid_flatness: float = Field(
        0.57,
        gt=0,
        lt=1,
        description="Only objects whose cross-section is peaked like one chromatid's (share "
        "of pixels above 70% of the object's peak darkness at most this) are paired; two "
        "chromatids pressed together (class A) are flatter.",
    )
    pair_max_angle: float = Field(
        45.0, ge=0, le=90, description="Largest angle, in degrees, between paired chromatids."
    )
    split_area: float = Field(
        1.6,
        gt=0,
        description="Objects larger than this many typical object areas are tried for "
        "splitting: a rising threshold looks for a seam, a watershed shares the pixels out.",
    )
    split_max_level: float = Field(
        0.7,
        gt=0,
        le=1,
        description="A seam darker than this share of the typical peak darkness is not one "
        "between two chromosomes (it is a centromere or an overlap): no split there.",
    )
    split_seam_level: float = Field(
        0.95,
        ge=0,
        description="Above split_max_level, a seam up to this share of the typical peak "
        "darkness still parts an object larger than split_area when the two pieces meet at "
        "split_seam_angle or more (two chromosomes touching or crossing, not one parted at "
        "a light band nor sisters). At most split_max_level: off.",
    )
    split_seam_angle: float = Field(
        45.0,
        ge=0,
        le=90,
        description="Smallest angle, in degrees, between the axes of two pieces parted at a "
        "seam above split_max_level (sisters lie within pair_max_angle).",
    )
    split_notch_depth: float = Field(
        0.8,
        gt=0,
        description="Where no seam separates a large object, it is cut between two notches of "
        "its outline at least this many stroke widths deep (pieces must be chromosome-sized).",
    )
    split_max_cut: float = Field(
        2.0,
        ge=0,
        description="Longest cut between two notches, in stroke widths (0: no notch cuts).",
    )
    split_touching_cut: float = Field(
        4.0,
        ge=0,
        description="An object larger than touching_area typical objects that no seam, neck "
        "or split_max_cut cut separates is cut between two notches up to this many stroke "
        "widths apart when that leaves two pieces of at least 0.8 typical objects (a "
        "chromosome's arm touching another along its side). At most split_max_cut: off.",
    )
    split_neck: float = Field(
        0.8,
        ge=0,
        description="Objects of any size are cut where two parts meet in a neck narrower than "
        "this many stroke widths (two small chromosomes touching; a chromosome's own waist is "
        "about as wide as the chromosome). 0: only objects over split_area are split.",
    )
    touching_area: float = Field(
        2.4,
        gt=1,
        description="Objects larger than this many typical object areas that could not be "
        "split are flagged as touching chromosomes (kept for review, out of statistics).",
    )
    metaphase_link: float = Field(
        4.0,
        gt=0,
        description="Chromosomes closer than this many typical chromosome lengths belong to "
        "the same metaphase.",
    )
    metaphase_min_chromosomes: int = Field(
        8, ge=1, description="Fewer chromosomes than this in a cluster is not a metaphase."
    )
    pad: int = Field(2, ge=0, description="Pixels of margin around each crop.")


class EnhanceSettings(Section):
    """The enhancement of Matsumoto et al. 2025, step 2; defaults are the paper's values."""

    mean: float = Field(
        90.0, ge=0, le=255, description="Target pixel mean before contrast stretch."
    )
    std: float = Field(16.0, gt=0, le=128, description="Target pixel standard deviation.")
    alpha: float = Field(3.0, gt=0, description="Contrast gain: dst = alpha*src + beta.")
    beta: float = Field(30.0, description="Brightness offset: dst = alpha*src + beta.")
    gamma: float = Field(3.0, gt=0, description="Gamma: y = (x/255)^gamma * 255.")
    edge_object_fraction: float = Field(
        0.08,
        ge=0,
        le=1,
        description="Objects touching the crop's edge and smaller than this share of its area "
        "are erased to white.",
    )
    mask_margin: int = Field(
        2,
        ge=0,
        description="Pixels kept around the crop's own object; anything farther away (parts of "
        "neighbouring chromosomes) is painted with the crop's background before enhancing.",
    )
    stain: tuple[float, float, float] | None = Field(
        (0.95, 1.12, 0.93),
        description="Relative R, G, B darkness of the stain the crops are recoloured to before "
        "the paper's steps, so other Giemsa hues come out like the published ikemoto2023 crops "
        "the published models saw (chosen so enhanced ddx11 crops match their colour); unset: "
        "no recolouring, the paper's step 2 alone.",
    )
    frame_margin: float | None = Field(
        0.16,
        ge=0,
        le=2,
        description="Mean margin around the chromosome (over its four sides), as a share of "
        "the longer side of its box: the crop is framed to it on its own background before the "
        "paper's steps and on white after them, every side moved by the same amount (an "
        "off-centre chromosome stays off-centre). 0.16 is the published ikemoto2023 crops' "
        "median, and with it the enhanced chromosome comes out as dark as theirs; unset: the "
        "crop as cut.",
    )
    jpeg_quality: int | None = Field(
        95,
        ge=1,
        le=100,
        description="Pass the enhanced crop once through JPEG of this quality, as the published "
        "crops were (their quantisation tables are quality 95's), so its background has their "
        "noise instead of flat white; unset: no JPEG.",
    )


class ClassifySettings(Section):
    model: str = Field(
        "current", description='Ensemble to use: an installed ensemble name, or "current".'
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: the GPU when CUDA is available, else the CPU."
    )
    batch_size: int = Field(64, gt=0, le=4096, description="Crops per inference batch.")
    cuda_graphs: bool = Field(
        True,
        description="On CUDA, capture each model's forward pass per batch shape once and "
        "replay it (far fewer kernel launches; a little GPU memory per shape). Off: run "
        "eagerly. Ignored on the CPU.",
    )
    threads: int = Field(0, ge=0, description="CPU threads for torch; 0 lets torch decide.")
    rescore: Literal["all", "open", "off"] = Field(
        "all",
        description="When another model becomes current, the daemon classifies the stored "
        "crops again, in batches between new files: all samples, only those not closed yet "
        "(open: no marker, quiet period or `sample close`), or none (off). Samples with a "
        "report get a new report version afterwards. `chromowatch reclassify` does it by "
        "hand.",
    )


class ModelsSettings(Section):
    published_source: str = Field(
        "https://raw.githubusercontent.com/ikmtd/Classification_Demonstration/main/models/"
        "SqueezeNet_based_models",
        description="Where `models fetch ikemoto2023` downloads from when no --from is given.",
    )
    download_timeout_s: float = Field(30.0, gt=0, description="Per-file download timeout.")


class ReportSettings(Section):
    """Per-sample statistics and the HTML/PDF reports."""

    formats: list[Literal["html", "pdf"]] = Field(
        ["html", "pdf"], description="What the daemon renders when a sample completes."
    )
    controls: dict[str, str] = Field(
        {},
        description='Control sample per sample-name pattern (shell-style), first match wins, '
        'e.g. {"ddx11-*" = "wt"}. A sample is never compared with itself.',
    )
    min_chromosomes: int = Field(
        50, ge=1, description="Warn when a sample has fewer scored chromosomes than this."
    )
    min_metaphases: int = Field(
        10, ge=1, description="Warn when a sample has fewer metaphases than this."
    )
    min_confidence: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Crops whose top model probability is below this are left out of the "
        "statistics (unless a person confirmed them); 0 keeps them all, as `results` does.",
    )
    bootstrap: int = Field(
        2000, ge=100, le=100_000, description="Resamples for bootstrap intervals."
    )
    seed: int = Field(0, description="Seed of the bootstrap, so a report can be reproduced.")
    gallery_per_class: int = Field(
        8, ge=0, le=100, description="Example crops shown per class (the most confident)."
    )
    gallery_uncertain: int = Field(
        12, ge=0, le=200, description="Least confident crops shown for review."
    )
    max_overlays: int = Field(
        24, ge=0, le=500, description="Spreads shown as overlay thumbnails (boxes by class)."
    )
    render_timeout_s: float = Field(
        120.0, gt=0, description="The PDF renderer (a separate process) is stopped after this."
    )


class ReviewSettings(Section):
    """The review queue and what a sample's fractions make of reviewed crops."""

    count: int = Field(50, ge=1, le=10_000,
                       description="Crops `review queue` lists when --count is not given.")
    audit_share: float = Field(
        0.5, ge=0, le=1,
        description="Share of newly queued crops drawn at random (the audit) rather than "
        "the least certain; the audit's answers estimate the model's error on the sample. "
        "0: uncertain only (no sample-specific correction), 1: random only.",
    )
    measure: Literal["margin", "entropy", "disagreement"] = Field(
        "margin", description="How 'least certain' is measured: top-two probability margin, "
        "entropy, or disagreement between the ensemble's members.",
    )
    seed: int = Field(0, description="Seed of the audit's random order (fixed, so asking "
                      "twice gives the same crops).")
    min_audit: int = Field(
        20, ge=2, description="Answered audit crops a sample needs before its fractions are "
        "corrected with its own audit (fewer: with the model's validation confusion).",
    )
    suggest: int = Field(
        100, ge=1, description="Crops the 'looks new' warning asks a person to review.",
    )
    confidence_tolerance: float = Field(
        0.05, ge=0, le=1, description="A sample whose mean confidence is this far below every "
        "validation sample's looks new.",
    )
    fraction_tolerance: float = Field(
        0.15, ge=0, le=1, description="A sample whose predicted A, B or C fraction is this far "
        "outside the range the validation samples showed looks new.",
    )


class MailSettings(Section):
    """Report delivery by email; reports wait in the database's outbox until sent."""

    enabled: bool = Field(False, description="Mail each new report version.")
    host: str = Field("", description="SMTP server.")
    port: int = Field(587, ge=1, le=65535, description="SMTP port (587 STARTTLS, 465 SSL).")
    security: Literal["starttls", "ssl", "none"] = Field(
        "starttls", description='"none" only for a relay on this machine.'
    )
    ca_file: Path | None = Field(
        None, description="CA certificates to trust for the server (else the system's)."
    )
    username: str = Field("", description="SMTP login; empty: no authentication.")
    password: str = Field(
        "", description="SMTP password; prefer password_file (or the environment)."
    )
    password_file: Path | None = Field(
        None, description="File holding the SMTP password; wins over password."
    )
    sender: str = Field("chromowatch@localhost", description="From address.")
    recipients: dict[str, list[str]] = Field(
        {},
        description='Recipients per sample-name pattern (shell-style); every matching '
        'pattern adds its addresses, e.g. {"*" = ["lab@example.org"]}.',
    )
    subject_prefix: str = Field("[chromowatch]", description="Start of every subject.")
    timeout_s: float = Field(30.0, gt=0, description="SMTP connection timeout.")
    retry_base_s: float = Field(
        60.0, gt=0, description="Wait before retrying a mail that could not be sent; doubles "
        "with each attempt."
    )
    retry_max_s: float = Field(3600.0, gt=0, description="Longest wait between tries.")

    @field_validator("host")
    @classmethod
    def _host_when_enabled(cls, host: str, info: ValidationInfo) -> str:
        """Mail switched on without a server would only fail at the first report."""
        if info.data.get("enabled") and not host.strip():
            raise ValueError("required when mail.enabled is true (the SMTP server's name)")
        return host


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")


class WatchSettings(Section):
    """The export folders `chromowatch run` watches, and when a file counts as written."""

    roots: list[Path] = Field(
        [], description="Folders to watch, recursively. Empty: <data_dir>/inbox."
    )
    mode: Literal["native", "polling"] = Field(
        "native",
        description="native: the OS's file events (local disks); polling: compare directory "
        "listings (NFS and SMB shares send no events).",
    )
    poll_interval_s: float = Field(
        5.0, gt=0, description="Seconds between listings in polling mode."
    )
    stable_s: float = Field(
        5.0, gt=0, description="A file is taken once its size and mtime are unchanged this long."
    )
    closed_stable_s: float = Field(
        1.0,
        gt=0,
        description="Shorter wait after a close-after-write or moved-in event (local disks).",
    )
    rescan_interval_s: float = Field(
        300.0, gt=0, description="Full rescan of every folder, in every mode (a safety net)."
    )
    health_interval_s: float = Field(
        5.0, gt=0, description="How often each folder is checked for being online and readable."
    )
    expect_mount: bool = Field(
        False,
        description="The folders are mount points: one that is not mounted is offline, "
        "not empty.",
    )
    ignore_patterns: list[str] = Field(
        [],
        description="More file or folder names to ignore (shell patterns), besides hidden, "
        "temporary and partial-download names (.*, ~*, *~, *.part, *.tmp, *.crdownload, "
        "*.partial, *.swp, Thumbs.db, desktop.ini, @eaDir).",
    )


class SamplesSettings(Section):
    """Which sample a file belongs to, and when a sample is complete."""

    pattern: str = Field(
        r"^(?P<sample>[^/]+)/",
        description="Regular expression on the path below the watch root ('/' separated); "
        "group 'sample' names the sample, optional groups 'slide' and 'metaphase' label "
        "the image. Default: the first folder below the root is the sample.",
    )
    unmatched: str = Field(
        "unsorted",
        description='Sample for files the pattern does not match; "" leaves them unprocessed.',
    )
    markers: list[str] = Field(
        ["DONE"], description="A file with one of these names completes its sample."
    )
    quiet_period_s: float = Field(
        43200.0,
        ge=0,
        description="A sample with no new file for this long is complete; 0: never by time.",
    )

    @model_validator(mode="after")
    def _pattern_names_a_sample(self) -> SamplesSettings:
        import re

        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if "sample" not in compiled.groupindex:
            raise ValueError("the pattern needs a named group (?P<sample>...)")
        return self


class DaemonSettings(Section):
    """Workers, retries and shutdown of `chromowatch run`."""

    workers: int = Field(
        0, ge=0, description="Processes that decode, segment and enhance; 0: CPU cores - 1 (min 1)."
    )
    task_timeout_s: float = Field(
        300.0, gt=0, description="A file taking longer than this in a worker is abandoned "
        "and the worker replaced."
    )
    queue_size: int = Field(
        8, ge=1, description="Prepared images waiting for the classifier (bounds memory)."
    )
    batch_linger_s: float = Field(
        0.05, ge=0, description="How long the classifier waits to fill a batch across images."
    )
    max_attempts: int = Field(
        4, ge=1, description="Tries per file before it is quarantined with its reason."
    )
    incomplete_wait_s: float = Field(
        60.0, ge=0, description="A file that looks cut short (truncated, corrupt, empty) and "
        "changed less than this long ago is still being written: it is waited for quietly, "
        "without using a try."
    )
    retry_backoff_s: float = Field(
        30.0, gt=0, description="Wait before the first retry; doubles with each attempt."
    )
    retry_backoff_max_s: float = Field(3600.0, gt=0, description="Longest wait between retries.")
    stop_timeout_s: float = Field(
        30.0,
        gt=0,
        description="On SIGTERM/SIGINT, files in flight get this long to finish; the rest "
        "are rolled back and redone at the next start.",
    )
    model_check_s: float = Field(
        10.0, gt=0, description="How often the current model pointer is checked for a promotion."
    )
    heartbeat_s: float = Field(
        5.0, gt=0, description="How often the daemon writes its state for `chromowatch status`."
    )


class ScheduleSettings(Section):
    """Nightly retraining (the `train` command, run as a subprocess)."""

    retrain: bool = Field(True, description="Run retraining on the schedule below.")
    retrain_cron: str = Field(
        "0 2 * * *", description="When to retrain: a cron expression (minute hour day month dow)."
    )
    timezone: str = Field(
        "", description='Time zone of retrain_cron, e.g. "Europe/Berlin"; "": the machine\'s.'
    )
    misfire_grace_hours: float = Field(
        6.0, gt=0, description="A run missed (daemon down, machine asleep) by up to this long "
        "still happens; older misses are caught up once at start."
    )
    catch_up: bool = Field(True, description="At start, run a retraining missed while stopped.")
    retrain_command: list[str] = Field(
        [],
        description="The retraining command; empty: this Python running `-m chromowatch train` "
        "with the daemon's configuration.",
    )
    retrain_timeout_hours: float = Field(
        8.0, gt=0, description="A retraining running longer than this is stopped."
    )
    retrain_nice: int = Field(
        10, ge=0, le=19, description="CPU niceness of retraining, so live processing goes first."
    )

    @model_validator(mode="after")
    def _cron_and_zone_are_valid(self) -> ScheduleSettings:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(self.retrain_cron, timezone=self.timezone or None)
        except Exception as exc:  # apscheduler raises ValueError, zoneinfo its own errors
            raise ValueError(f"invalid retrain_cron or timezone: {exc}") from None
        return self


class MetricsSettings(Section):
    """Prometheus metrics of the daemon; off unless a port or a file is set."""

    port: int = Field(0, ge=0, le=65535, description="Serve /metrics on this port; 0: off.")
    host: str = Field("127.0.0.1", description="Address the metrics port listens on.")
    textfile: Path | None = Field(
        None, description="Also write the metrics to this file (node_exporter textfile collector)."
    )
    interval_s: float = Field(15.0, gt=0, description="How often the metrics file is rewritten.")


class WebSettings(Section):
    """The review web app (`chromowatch web`): where it listens, its session cookie, logins."""

    host: str = Field("127.0.0.1", description="Address `chromowatch web` listens on "
                      "(keep 127.0.0.1 and put a TLS proxy in front to reach it from elsewhere).")
    port: int = Field(8765, ge=1, le=65535, description="Port `chromowatch web` listens on.")
    secret_key: str = Field(
        "", description="Key that signs session cookies. Empty: generated once and kept in "
        "<data_dir>/web-secret (mode 0600).",
    )
    secure_cookies: bool = Field(
        False, description="Mark the session cookie Secure (sent over HTTPS only): set it when "
        "the app is reached through a TLS proxy.",
    )
    session_hours: float = Field(12.0, gt=0, description="A login lasts this many hours.")
    page_size: int = Field(24, ge=1, le=500, description="Crop tiles per review page.")
    lease_s: float = Field(
        300.0, gt=0, description="Seconds the crops shown to one reviewer are kept from "
        "other reviewers of the same sample.",
    )
    login_attempts: int = Field(
        5, ge=1, description="Failed logins allowed per user name and per client address "
        "within login_window_s; further attempts are refused until the window passes.",
    )
    login_window_s: float = Field(300.0, gt=0, description="Window of login_attempts.")
    trusted_user_header: str = Field(
        "", description="A header naming the logged-in user, set by a reverse proxy that "
        "authenticates (e.g. Remote-User); honoured only from trusted_proxies, and only for "
        "users that exist (`chromowatch users add`). Empty: off. The proxy must strip a "
        "client's own header of that name.",
    )
    trusted_proxies: list[str] = Field(
        [], description="Addresses or networks (127.0.0.1, 10.0.0.0/8) whose "
        "trusted_user_header is believed.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for p in value:
            ipaddress.ip_network(p, strict=False)  # a ValueError names the bad entry
        return value


class TrainingSettings(Section):
    """Fine-tuning on confirmed labels, evaluation on a fixed holdout, promotion (`train`)."""

    members: list[str] = Field(
        ["squeezenet1_1", "squeezenet1_1", "squeezenet1_1", "squeezenet1_1"],
        min_length=1,
        description="Architectures fine-tuned, one member each (repeat a name for several). "
        "Start points, in order: a bundle of that architecture in the base ensemble, ImageNet "
        "weights in torchvision's cache (TORCH_HOME), random initialisation (with a warning).",
    )
    base: str = Field(
        "current", description="Ensemble whose bundles are the start points (\"current\": the "
        "one in use)."
    )
    unfreeze: dict[str, list[str]] = Field(
        {},
        description="Parameter-name prefixes trained after the head, per architecture, e.g. "
        '{squeezenet1_1 = ["features.12", "classifier"]}; unset: the paper\'s later blocks '
        "(DenseNet161 from Dense Block 2, MobileNetV2 all, ShuffleNetV2 from Stage 3, "
        "SqueezeNet from Fire8).",
    )
    head_epochs: int = Field(
        2, ge=0, le=100, description="Epochs training only the classifier head first."
    )
    max_epochs: int = Field(
        14, ge=1, le=1000, description="Most epochs with the later blocks unfrozen."
    )
    patience: int = Field(
        4, ge=1, description="Stop after this many epochs without a better validation loss."
    )
    batch_size: int = Field(32, ge=2, le=1024, description="Crops per training step.")
    lr: float = Field(3e-4, gt=0, description="Learning rate (AdamW) of the later blocks.")
    head_lr: float = Field(3e-3, gt=0, description="Learning rate of the head-only epochs.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    label_smoothing: float = Field(
        0.05, ge=0, lt=1, description="Label smoothing of the loss (calibration follows)."
    )
    holdout_percent: float = Field(
        20.0, gt=0, lt=100, description="Share of confirmed crops kept for the holdout, chosen "
        "by hashing each crop's content: stable as labels grow, never trained on."
    )
    validation_percent: float = Field(
        15.0, gt=0, lt=100, description="Share of the rest used for early stopping, member "
        "choice and calibration (hashed the same way)."
    )
    seed: int = Field(0, description="Seed of sampling, augmentation and initialisation.")
    rotation: bool = Field(True, description="Augment with rotations by any angle.")
    scale_jitter: float = Field(
        0.15, ge=0, lt=1, description="Augment: resolution and margin changed by up to this share."
    )
    contrast_jitter: float = Field(
        0.15, ge=0, lt=1,
        description="Augment: stain darkness, gamma and saturation changed by up to this share.",
    )
    margin_jitter: float = Field(
        0.6, ge=0, lt=1,
        description="Augment: each side's margin around the chromosome redrawn, up to this "
        "share more or less than the crop's mean margin (crop sources frame differently: the "
        "published crops are off-centre, chromowatch's centred; see BENCHMARKS.md, crop style).",
    )
    background_jitter: float = Field(
        8.0, ge=0, le=64,
        description="Augment: the white background made up to this many grey levels darker "
        "(black stays black).",
    )
    blur: float = Field(
        1.0, ge=0, le=10,
        description="Augment: half the views blurred with a Gaussian of sigma up to this many "
        "px (crops upsampled from smaller spreads are softer); 0: never.",
    )
    jpeg_min_quality: int = Field(
        70, ge=0, le=100,
        description="Augment: half the views passed through JPEG of a quality from this to "
        "100 (the published crops are JPEGs); 0: never.",
    )
    promote_margin: float = Field(
        0.01, ge=0, le=1, description="A candidate must beat the current ensemble's holdout "
        "accuracy by at least this much to become current."
    )
    class_margin: float = Field(
        0.05, ge=0, le=1,
        description="A candidate must also lose no class's holdout F1 (precision and recall "
        "together) by more than this.",
    )
    cross_validation: Literal["off", "samples", "spreads", "both"] = Field(
        "samples",
        description="Cross-sample validation in `train`: the same recipe is trained again with "
        "one whole group of crops left out and scored on that group. \"samples\": leave each "
        "labelled sample out (needs two samples); \"spreads\": leave each spread of a sample "
        "with several spreads out (crops imported one per file, e.g. `import-folder`, have no "
        "spread); \"both\"; \"off\". Each fold costs about one more training run.",
    )
    cross_validation_max_folds: int = Field(
        4, ge=1, le=100, description="At most this many folds (the largest groups first)."
    )
    cross_validation_max_epochs: int = Field(
        0, ge=0, le=1000, description="Most epochs with the later blocks unfrozen in a fold; "
        "0: max_epochs (the same recipe as the candidate)."
    )
    cross_margin: float = Field(
        0.03, ge=0, le=1, description="A candidate must also not be worse than the current "
        "ensemble on the left-out groups by more than this: pooled accuracy, and the worst "
        "group's A/B/C fraction error (when both have cross-sample figures)."
    )
    keep_versions: int = Field(
        5, ge=1, description="Trained ensembles kept (current and previous always are)."
    )
    balance_samples: bool = Field(
        True, description="Every labelled sample weighs the same in training (and every "
        "class within the draw), so a new sample's few reviewed crops count; false: one "
        "crop, one vote (benchmarks/review_loop.py compares them).",
    )
    min_per_class: int = Field(
        5, ge=1, description="Refuse to train with fewer training crops of any class."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description='Where to train: "auto" uses CUDA when available.'
    )
    threads: int = Field(0, ge=0, description="CPU threads for training; 0 lets torch decide.")
    imagenet_download: bool = Field(
        True, description="Let torchvision download ImageNet weights missing from its cache."
    )
    timeout_hours: float = Field(
        6.0, gt=0, description="A training subprocess running longer than this is stopped."
    )


class Settings(BaseSettings):
    """All of chromowatch's settings; passed down as one object."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    paths: PathsSettings = Field(default_factory=PathsSettings)  # type: ignore[arg-type]
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # type: ignore[arg-type]
    segment: SegmentSettings = Field(default_factory=SegmentSettings)  # type: ignore[arg-type]
    enhance: EnhanceSettings = Field(default_factory=EnhanceSettings)  # type: ignore[arg-type]
    classify: ClassifySettings = Field(default_factory=ClassifySettings)  # type: ignore[arg-type]
    models: ModelsSettings = Field(default_factory=ModelsSettings)  # type: ignore[arg-type]
    report: ReportSettings = Field(default_factory=ReportSettings)  # type: ignore[arg-type]
    review: ReviewSettings = Field(default_factory=ReviewSettings)  # type: ignore[arg-type]
    mail: MailSettings = Field(default_factory=MailSettings)  # type: ignore[arg-type]
    logging: LoggingSettings = Field(default_factory=LoggingSettings)  # type: ignore[arg-type]
    watch: WatchSettings = Field(default_factory=WatchSettings)  # type: ignore[arg-type]
    samples: SamplesSettings = Field(default_factory=SamplesSettings)  # type: ignore[arg-type]
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)  # type: ignore[arg-type]
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)  # type: ignore[arg-type]
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)  # type: ignore[arg-type]
    training: TrainingSettings = Field(default_factory=TrainingSettings)  # type: ignore[arg-type]
    web: WebSettings = Field(default_factory=WebSettings)  # type: ignore[arg-type]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file's contents arrive as init kwargs; the environment overrides them.
        return (env_settings, init_settings)


@dataclass(frozen=True)
class LoadedSettings:
    """The settings with where they came from, for `config show`."""

    settings: Settings
    file: Path | None
    file_data: dict[str, Any]

    def source_of(self, section: str, key: str) -> str:
        env = f"{ENV_PREFIX}{section.upper()}{ENV_DELIMITER}{key.upper()}"
        if env in os.environ:
            return f"env {env}"
        if key in self.file_data.get(section, {}):
            return f"file {self.file}"
        return "default"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {path} does not exist",
            hint="create it with `chromowatch config generate > FILE`, or leave --config out",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"configuration file {path} is not valid TOML: {exc}",
            hint="fix the line named above; `chromowatch config generate` shows the format",
        ) from None


def _describe(error: Mapping[str, Any], loaded_from: Path | None) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    key = ".".join(loc) or "(top level)"
    env = ENV_PREFIX + ENV_DELIMITER.join(part.upper() for part in loc)
    if env in os.environ:
        where = f" (from environment variable {env})"
    elif loaded_from is not None:
        where = f" (in {loaded_from})"
    else:
        where = ""
    msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        msg = "unknown key; `chromowatch config generate` lists the valid keys"
    elif "input" in error and not isinstance(error["input"], dict):
        msg = f"{msg}; got {error['input']!r}"
    return f"invalid configuration key {key}{where}: {msg}"


def load_settings(config: Path | str | None = None) -> LoadedSettings:
    """Read the configuration file and environment; raise ConfigError naming any bad key."""
    path: Path | None
    explicit = config or os.environ.get(CONFIG_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        data = _read_toml(path)
    else:
        path = default_config_path()
        if path.is_file():
            data = _read_toml(path)
        else:
            path, data = None, {}
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe(errors[0], path)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(first + more) from None
    return LoadedSettings(settings=settings, file=path, file_data=data)


def iter_fields() -> Iterator[tuple[str, str, Any, str]]:
    """(section, key, default, description) for every key of the schema, in order."""
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for key, sub in model.model_fields.items():
            yield section, key, sub.default, sub.description or ""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def generate_example() -> str:
    """A commented TOML file with every key at its default, built from the schema."""
    lines = [
        "# chromowatch configuration (generated by `chromowatch config generate`).",
        "# Every key is shown at its default; delete what you do not change.",
        "# Environment variables override this file: CHROMOWATCH_SECTION__KEY=value.",
    ]
    current = None
    for section, key, default, description in iter_fields():
        if section != current:
            doc = (Settings.model_fields[section].annotation.__doc__ or "").strip()
            lines.append("")
            lines.append(f"[{section}]")
            if doc and not doc.startswith("Usage docs"):
                lines.extend(f"# {line.strip()}" for line in doc.splitlines())
            current = section
        lines.append(f"# {description}" if description else "#")
        if default is None:
            lines.append(f"# {key} = ...")
        else:
            lines.append(f"{key} = {_toml_value(default)}")
    return "\n".join(lines) + "\n"


def effective_values(loaded: LoadedSettings) -> list[tuple[str, Any, str]]:
    """(dotted key, effective value, source) for `config show`; derived paths resolved."""
    rows: list[tuple[str, Any, str]] = []
    s = loaded.settings
    # JSON mode: paths (also inside lists, e.g. watch.roots) become strings for printing.
    dumped = s.model_dump(mode="json")
    for section, key, _default, _ in iter_fields():
        value = dumped[section][key]
        source = loaded.source_of(section, key)
        if section == "paths" and value is None:
            derived = {
                "data_dir": s.paths.data,
                "models_dir": s.paths.models,
                "database": s.paths.db,
            }
            value, source = str(derived[key]), "default (derived)"
        if key in SECRET_KEYS and value:
            value = "********"
        rows.append((f"{section}.{key}", value, source))
    return rows
