"""The daemon's current ensemble: loaded at start, reloaded when a new one is promoted.

The classifier thread asks `maybe_reload()` each time round; at most every
`daemon.model_check_s` it compares the model file's identity (inode, mtime, size) with the
loaded one's and loads the new file. A model that cannot be loaded never replaces a working
one, and with no model at all files wait in the ledger until one is installed.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from chromowatch import pipeline
from chromowatch.classify.library import CURRENT, ModelLibrary
from chromowatch.errors import ChromowatchError
from chromowatch.settings import Settings

if TYPE_CHECKING:
    from chromowatch.classify.ensemble import Ensemble

log = logging.getLogger(__name__)


class CurrentModel:
    """Holds the ensemble the classifier thread uses; `reloads` counts changes of version."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ensemble: Ensemble | None = None
        self.reloads = 0
        self._signature: object = None
        self._next_check = 0.0

    def signature(self) -> object:
        """What identifies the configured model's file on disk (None: there is none)."""
        library = ModelLibrary(self.settings.paths.models)
        name = self.settings.classify.model
        path = library.current_file if name == CURRENT else library.ensemble_path(name)
        try:
            st = path.stat()
        except OSError:
            return None
        return (str(path), st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self, *, strict: bool = False) -> None:
        """Load the configured ensemble; keep the old one when the new one cannot be loaded.
        `strict`: raise instead (a run to completion cannot go on without a model)."""
        s = self.settings
        self._signature = self.signature()
        try:
            if s.classify.threads:
                import torch  # the daemon's start-up, not the command line's

                torch.set_num_threads(s.classify.threads)
            ensemble = ModelLibrary(s.paths.models).load_configured(s.classify)
            pipeline.check_model_fits(ensemble)
        except ChromowatchError as exc:
            if strict:
                raise
            if self.ensemble is None:
                log.error("no usable model (%s); files are recorded and wait until one is "
                          "installed (chromowatch models fetch ikemoto2023)", exc)
            else:
                log.error("the new model cannot be used (%s); keeping %s", exc,
                          self.ensemble.version)
            return
        old = self.ensemble
        self.ensemble = ensemble
        if old is None:
            log.info("model %s loaded", ensemble.version)
        elif old.version != ensemble.version:
            self.reloads += 1
            log.info("model reloaded without a restart: %s -> %s", old.version, ensemble.version)

    def maybe_reload(self) -> None:
        """Load the model again if its file changed (checked every daemon.model_check_s)."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.settings.daemon.model_check_s
        if self.signature() != self._signature:
            self.load()

    def reload_soon(self) -> None:
        """New [classify] settings (SIGHUP): the classifier thread reloads at its next check."""
        self._signature = "reload"
        self._next_check = 0.0
