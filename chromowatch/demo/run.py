"""`chromowatch demo`: the main job on an embedded default, from nothing.

Models: the current ensemble if one is installed; else the published models (local copies or
online); else, offline, a small model bootstrapped from generated spreads, and then every
number printed is labelled a demonstration.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from chromowatch.classify.library import ModelLibrary
from chromowatch.classify.published import fetch_ikemoto2023
from chromowatch.demo.bootstrap import bootstrap_demo_model
from chromowatch.demo.synth import write_dataset
from chromowatch.errors import ChromowatchError
from chromowatch.records import is_demonstration
from chromowatch.service.daemon import run_daemon
from chromowatch.service.watch import watch_roots
from chromowatch.settings import Settings

log = logging.getLogger(__name__)

DEMO_SAMPLES = 2
DEMO_SEED = 2023
ONLINE_TIMEOUT_S = 10.0


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def ensure_model(settings: Settings, *, models_from: Path | None, offline: bool) -> str:
    """The name of the ensemble to use, installing or bootstrapping one when none is current."""
    library = ModelLibrary(settings.paths.models)
    current = library.current_name()
    if current is not None:
        return current
    source = settings.models.published_source
    if models_from is not None:
        candidates: list[str | Path] = [models_from]
    elif not _is_url(source):
        candidates = [Path(source)]
    elif not offline:
        candidates = [source]
    else:
        candidates = []
    for candidate in candidates:
        print(f"installing the published ikemoto2023 models from {candidate} ...")
        try:
            info = fetch_ikemoto2023(library, candidate,
                                     timeout=min(settings.models.download_timeout_s,
                                                 ONLINE_TIMEOUT_S))
            library.set_current(info.name)
            return info.name
        except ChromowatchError as exc:
            log.warning("could not install the published models: %s", exc)
    print("no model installed and the published models are out of reach: training a small "
          "DEMONSTRATION model on generated spreads ...")
    started = time.monotonic()
    name = bootstrap_demo_model(library, settings)
    print(f"trained the DEMONSTRATION model in {time.monotonic() - started:.0f} s")
    return name


WEB_HINT = ("\nReview the crops in the browser: create the first user, then start the web app "
            "and open http://127.0.0.1:{port}/\n"
            "  chromowatch users add NAME --role admin --password-file FILE   "
            "(the file's first line is the password)\n"
            "  chromowatch web")


def run_demo(settings: Settings, *, spreads: int, models_from: Path | None,
             offline: bool) -> int:
    """Install or bootstrap a model, fill the daemon's inbox with generated samples marked
    complete, and run the daemon until every sample is processed and reported."""
    started = time.monotonic()
    name = ensure_model(settings, models_from=models_from, offline=offline)
    inbox = watch_roots(settings)[0]
    if not any(inbox.glob("*/images/*.png")):
        print(f"generating {DEMO_SAMPLES} samples x {spreads} synthetic spreads in {inbox} ...")
        write_dataset(inbox, samples=DEMO_SAMPLES, spreads=spreads, seed=DEMO_SEED)
    for sample in sorted(p for p in inbox.iterdir() if p.is_dir()):
        (sample / settings.samples.markers[0]).touch()
    code = run_daemon(settings, until_complete=True)
    print(f"\nthe demo took {time.monotonic() - started:.0f} s on {os.cpu_count()} CPU core(s)")
    if is_demonstration(name):
        print("\n*** DEMONSTRATION: the model was trained on generated spreads, not on expert "
              "labels. These numbers show the pipeline working; they are not a measurement. "
              "Install the published models with `chromowatch models fetch ikemoto2023 "
              "[--from DIR]`. ***")
    else:
        print("\nNote: the spreads are synthetic, so these numbers show the pipeline working, "
              "not a biological result. Put real spreads in a sample folder under "
              f"{inbox} and run `chromowatch run`.")
    print(WEB_HINT.format(port=settings.web.port))
    return code
