"""``edge-receiver serve``'s HTTP API and live page: FastAPI on uvicorn, over the same store as ``run``.

Contract
- :func:`create_app` builds the app; uvicorn runs it (``receiver.commands.serve``). Plain ``def`` routes
  run in FastAPI's worker threads, each with a read-only store of its own (:class:`StorePool`: one
  connection per thread, SQLite or PostgreSQL, closed at shutdown); the WebSocket and the live feed run on
  the event loop (:mod:`receiver.live`). The app only reads the store: ``run`` writes it.
- The fleet's statuses and commit notices come from the broker (:class:`receiver.fleet.FleetWatch`,
  started with the app, when ``watch`` is true); without a broker the API still answers from the store.
- Errors: an unknown vin or signal is a 404, a bad parameter a 400 naming it (FastAPI's own validation: a
  422 naming it), data not ready (rollups still being built) or a store that fails a 503; each body is
  ``{"detail": message}``. Times are seconds on the vehicle's clock, as ``export`` prints them.
- Static files: the page (``receiver/web``) at ``/static``, its pinned browser libraries (npm, installed
  by ``make setup``, or copied into the .deb) at ``/static/vendor``; OpenAPI docs at ``/docs``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, WebSocket
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.errors import ConfigError, StorageError
from receiver import answers, prometheus
from receiver.config import ReceiverConfig
from receiver.fleet import FleetWatch
from receiver.live import LiveHub
from receiver.store import NotFoundError, Store, open_store

WEB = Path(__file__).resolve().parent / "web"
VENDOR = {"uplot": "uplot/dist", "swagger-ui": "swagger-ui-dist"}  # URL name -> folder in node_modules


def vendor_root() -> Path:
    """Where the pinned browser libraries are: ``web/vendor`` in the .deb, else npm's ``node_modules``."""
    packaged = WEB / "vendor"
    return packaged if packaged.is_dir() else WEB / "node_modules"


class StorePool:
    """One read-only store per thread that asks (a store is one thread's), all closed by :meth:`close`."""

    def __init__(self, target: str | Path) -> None:
        self.target = target
        self._local = threading.local()
        self._all: list[Store] = []
        self._lock = threading.Lock()

    def __call__(self) -> Store:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = open_store(self.target, readonly=True)
            self._local.store = store
            with self._lock:
                self._all.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            stores, self._all = self._all, []
        for store in stores:
            store.close()


def instant(text: str | None, name: str) -> Fraction | None:
    if text is None or text == "":
        return None
    try:
        return Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"parameter {name!r}: {text!r} is not seconds, such as 1700000040.5") from None


def create_app(config: ReceiverConfig, *, watch: bool = True) -> FastAPI:
    """The API over ``config.store``; with ``watch``, its MQTT client on ``config.mqtt``."""
    pool = StorePool(config.store.target)
    fleet: FleetWatch | None = None
    hub = LiveHub(pool, None)
    if watch:
        fleet = FleetWatch(config, hub.notify)
        hub.watch = fleet

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        hub.bind(asyncio.get_running_loop())
        if fleet is not None:
            fleet.start()
        try:
            yield
        finally:
            if fleet is not None:
                fleet.stop()
            pool.close()

    app = FastAPI(
        title="edge-receiver",
        summary="The fleet's telemetry as the receiver stored it: vehicles, values, history, alerts.",
        version="0.1.0",
        docs_url=None,
        lifespan=lifespan,
    )
    app.state.pool, app.state.fleet, app.state.hub = pool, fleet, hub
    registry = prometheus.registry(pool, fleet)

    def statuses() -> dict[str, Any]:
        return {} if fleet is None else fleet.statuses

    @app.exception_handler(NotFoundError)
    async def not_found(_r: Request, error: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(ConfigError)
    async def bad_parameter(_r: Request, error: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(StorageError)
    async def unavailable(_r: Request, error: StorageError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503)

    @app.get("/health", summary="Whether the store answers (and the broker is heard)")
    def health() -> dict[str, Any]:
        vehicles = len(pool().vins())
        return {"status": "ok", "vehicles": vehicles, "broker": None if fleet is None else fleet.connected}

    @app.get("/metrics", summary="Prometheus text format", response_class=Response)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/vehicles", summary="Every vehicle: status, last seen, backlog, latency, wire cost")
    def vehicles() -> dict[str, Any]:
        return {"vehicles": answers.vehicles(pool(), statuses())}

    @app.get("/api/vehicles/{vin}/signals", summary="The signals stored for a vehicle")
    def signals(vin: str) -> dict[str, Any]:
        store = pool()
        store.rate(vin)  # an unknown vin: 404
        return {"vin": vin, "signals": store.signals(vin)}

    @app.get("/api/vehicles/{vin}/latest", summary="The latest stored value of each signal, with its time")
    def latest(vin: str) -> dict[str, Any]:
        return answers.latest(pool(), vin)

    @app.get("/api/vehicles/{vin}/history", summary="Buckets of count/min/mean/max; gaps are missing buckets")
    def history(
        vin: str,
        signals: Annotated[
            str | None, Query(description="comma-separated MESSAGE.SIGNAL (default: all)")
        ] = None,
        start: Annotated[
            str | None, Query(alias="from", description="first second (default: first value)")
        ] = None,
        end: Annotated[str | None, Query(alias="to", description="last second (default: last value)")] = None,
        points: Annotated[int, Query(ge=1, le=100_000, description="buckets per signal, at most")] = 1000,
    ) -> dict[str, Any]:
        names = _names(signals)
        low, high = instant(start, "from"), instant(end, "to")
        if low is not None and high is not None and low > high:
            raise ConfigError(f"parameter 'from' {start} is after parameter 'to' {end}")
        return answers.history_of(pool(), vin, names, low, high, points)

    @app.get("/api/vehicles/{vin}/aggregates", summary="The tumbling 5 or 15 minute windows")
    def aggregates(
        vin: str,
        window: Annotated[str, Query(pattern="^(5m|15m)$", description="5m or 15m")] = "5m",
        start: Annotated[str | None, Query(alias="from")] = None,
        end: Annotated[str | None, Query(alias="to")] = None,
    ) -> dict[str, Any]:
        return answers.aggregates(pool(), vin, window, instant(start, "from"), instant(end, "to"))

    @app.get("/api/alerts", summary="Alert episodes, newest first")
    def alerts(vin: str | None = None, since: str | None = None) -> dict[str, Any]:
        from receiver import alerts as episodes  # the rules' module; its table may not exist yet

        after = instant(since, "since")
        if vin is not None:
            pool().rate(vin)  # an unknown vin: 404
        return {"alerts": episodes.episodes(pool(), vin, None if after is None else float(after))}

    @app.websocket("/api/live")
    async def live(socket: WebSocket) -> None:
        await hub.serve(socket)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        base = "/static/vendor/swagger-ui"
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="edge-receiver API",
            swagger_js_url=f"{base}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}/swagger-ui.css",
            swagger_favicon_url=f"{base}/favicon-32x32.png",
        )

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html")

    for name, folder in _vendor():
        app.mount(
            f"/static/vendor/{name}", StaticFiles(directory=folder, check_dir=False), name=f"vendor-{name}"
        )
    app.mount("/static", StaticFiles(directory=WEB, check_dir=False), name="static")
    return app


def _vendor() -> Iterator[tuple[str, Path]]:
    root = vendor_root()
    for name, folder in VENDOR.items():
        yield name, root / folder


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise ConfigError(f"parameter 'signals' {text!r}: an empty signal name")
    return names
