"""`chromowatch demo`: the main job on an embedded default, from nothing.

Models: the current ensemble if one is installed; else the published models (local copies or
online); else, offline, a small model bootstrapped from generated spreads, and then every
number printed is labelled a demonstration.
"""

from __future__ import annotations

import logging
from pathlib import Path

from chromowatch.errors import ChromowatchError
from chromowatch.settings import Settings

log = logging.getLogger(__name__)

DEMO_SAMPLES = 2
DEMO_SEED = 2023
ONLINE_TIMEOUT_S = 10.0


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def ensure_model(settings: Settings, *, models_from: Path | None, offline: bool) -> str:
    """The name of the ensemble to use, installing or bootstrapping one when none is current."""
    from chromowatch.classify.library import ModelLibrary
    from chromowatch.classify.published import fetch_ikemoto2023

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
    from chromowatch.bootstrap import bootstrap_demo_model

    print("no model installed and the published models are out of reach: training a small "
          "DEMONSTRATION model on generated spreads (about a minute) ...")
    return bootstrap_demo_model(library, settings)


def run_demo(settings: Settings, *, spreads: int, models_from: Path | None,
             offline: bool) -> int:
    from chromowatch.bootstrap import is_demonstration
    from chromowatch.classify.library import ModelLibrary
    from chromowatch.pipeline import check_model_fits, process_file
    from chromowatch.progress import Progress
    from chromowatch.store import Store
    from chromowatch.synth import write_dataset
    from chromowatch.tables import format_counts_table

    name = ensure_model(settings, models_from=models_from, offline=offline)
    library = ModelLibrary(settings.paths.models)
    ensemble = library.load_ensemble(name, device=settings.classify.device,
                                     batch_size=settings.classify.batch_size)
    check_model_fits(ensemble)

    inbox = settings.paths.data / "demo" / "inbox"
    if not any(inbox.glob("*/images/*.png")):
        print(f"generating {DEMO_SAMPLES} samples x {spreads} synthetic spreads in {inbox} ...")
        write_dataset(inbox, samples=DEMO_SAMPLES, spreads=spreads, seed=DEMO_SEED)
    samples = sorted(p.parent.name for p in inbox.glob("*/images"))
    with Store.open(settings.paths.db) as store:
        for sample in samples:
            files = sorted((inbox / sample / "images").glob("*.png"))
            progress = Progress(len(files), sample)
            for path in files:
                result = process_file(path, sample=f"demo-{sample}", settings=settings,
                                      store=store, ensemble=ensemble)
                progress.advance(f"{len(result.crops)} crops")
            progress.close()
        counts = store.sample_counts()
    demo_rows = [c for c in counts if c.sample.startswith("demo-")]
    print()
    print(f"model: {ensemble.version}")
    print(format_counts_table(demo_rows))
    print()
    print(f"results:  {settings.paths.db}  (chromowatch results)")
    print(f"crops:    {settings.paths.crops}")
    print(f"spreads:  {inbox}")
    if is_demonstration(ensemble.name):
        print("\n*** DEMONSTRATION: the model was trained on generated spreads, not on expert "
              "labels. These numbers show the pipeline working; they are not a measurement. "
              "Install the published models with `chromowatch models fetch ikemoto2023 "
              "[--from DIR]`. ***")
    else:
        print("\nNote: the spreads are synthetic, so these numbers show the pipeline working, "
              "not a biological result. Point `chromowatch process` at real spreads.")
    return 0
