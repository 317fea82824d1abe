"""`chromowatch web`: serve the app with uvicorn until interrupted."""

from __future__ import annotations

import logging

from chromowatch.settings import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings, host: str | None, port: int | None) -> int:
    import uvicorn

    from chromowatch.store import Store
    from chromowatch.web.app import create_app

    with Store.open(settings.paths.db) as store:  # migrate before the first request
        if not store.users():
            log.warning("no user can log in yet: chromowatch users add NAME --role admin "
                        "--password-file FILE")
    host = host or settings.web.host
    port = port or settings.web.port
    log.info("serving the review app at http://%s:%d/", host, port)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning",
                proxy_headers=False, server_header=False)
    return 0
