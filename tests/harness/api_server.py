"""``receiver.api.create_app`` served by a real uvicorn on a loopback port, in a thread of this process:
for the bench and for tests that need the app's objects beside real HTTP and WebSocket clients.

:func:`serving` yields the base URL once uvicorn has started (its ``started`` flag, not a sleep) and
stops it on exit (``should_exit``, then the thread is joined). The caller owns the config and the store.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from receiver.api import create_app
from receiver.config import ReceiverConfig
from tests.harness.broker import free_port
from tests.harness.waiting import wait_for


@contextmanager
def serving(config: ReceiverConfig, watch: bool = False) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, watch=watch),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            log_config=None,
            ws="websockets-sansio",
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 30, "uvicorn did not start")
        assert thread.is_alive(), "uvicorn stopped at start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
