"""Each thread its own database connection, the one way the daemon's threads get one.

An SQLite connection belongs to the thread that opened it. The dispatcher, classifier, writer,
watcher, hook and retraining threads each call `ThreadStores.get()` and keep what they get;
the connections live in the instance, so two daemons in one process (tests) share nothing.
"""

from __future__ import annotations

import threading
from pathlib import Path

from chromowatch.store import Store


class ThreadStores:
    """Connections to one database, one per thread that asks."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self._local = threading.local()

    def get(self) -> Store:
        """This thread's connection, opened at its first call."""
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = Store.open(self.db)
            self._local.store = store
        return store

    def close_mine(self) -> None:
        """Close this thread's connection (a loop's last act); a later get() opens another.

        Threads that never call it (pool threads) have theirs closed when they end."""
        store: Store | None = getattr(self._local, "store", None)
        if store is not None:
            self._local.store = None
            store.close()
