"""``edge-receiver serve --config FILE``: the HTTP API, its OpenAPI docs and the live page, until SIGTERM.

Listens on ``api.listen`` (default ``127.0.0.1:8080``), reads the store of ``store.path``/``store.dsn``
(the one ``run`` writes, read-only) and hears the broker of ``mqtt`` for statuses and commit notices
(:mod:`receiver.api`). uvicorn runs the app on the main thread and handles SIGTERM/SIGINT gracefully;
the config's errors, and a port already taken, are one line on stderr (exit 2).
"""

from __future__ import annotations

import argparse
import socket

from agent.errors import ConfigError
from agent.service import logs
from agent.service.cli import add_config_argument
from receiver.config import DEFAULT_RECEIVER_CONFIG, load_receiver_config

HELP = "serve the HTTP API, its docs and the live page over the receiver's store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, DEFAULT_RECEIVER_CONFIG, "receiver's")
    parser.add_argument("--no-broker", action="store_true", help="answer from the store alone (no live feed)")


def run(args: argparse.Namespace) -> int:
    import uvicorn  # the API's stack is needed by this command only

    from receiver.api import create_app

    config = load_receiver_config(args.config, check_files=True)
    logs.configure(config.logging.level, config.logging.format)
    api = config.api
    family = socket.AF_INET6 if ":" in api.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((api.host, api.port))
        listener.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    except OSError as error:
        listener.close()
        raise ConfigError(f"api.listen {api.listen}: cannot listen there: {error.strerror}") from error
    log = logs.get_logger("receiver.api")
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    log.info("api_started", url=f"http://{shown}:{port}/", docs=f"http://{shown}:{port}/docs")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, watch=not args.no_broker),
            log_level="warning",
            access_log=False,
            log_config=None,
            lifespan="on",
            ws="websockets-sansio",  # the maintained one (uvicorn deprecates the legacy implementation)
        )
    )
    server.run(sockets=[listener])
    log.info("api_stopped")
    return 0
