"""The live feed behind ``/api/live``: what changed in the fleet, pushed to every connected browser.

Contract
- Runs on the API's event loop; :meth:`LiveHub.notify` is the one entry from other threads (paho's,
  through :class:`receiver.fleet.FleetWatch`), and hands the event to the loop with
  ``call_soon_threadsafe``: it never blocks paho's thread.
- An event marks its vin dirty; one flush per :data:`COALESCE_S` reads what changed for the dirty vins
  (in a worker thread: store reads block) and pushes ``{"type": "status", "vehicle": ...}`` (as one entry of
  ``/api/vehicles``), ``{"type": "values", "vin", "until", "signals": {name: [[t, v], ...]}}`` (what was
  stored after the last push, :func:`receiver.answers.values_since`) and ``{"type": "alert", "alert"}``.
  A commit is read from the store no later than :data:`COALESCE_S` plus the read after its ack, which the
  agent gets right after the commit: well within a second.
- Each client has a bounded queue (:data:`QUEUE`); a client that does not keep up is disconnected (its
  page reconnects and reloads), so one slow browser never holds the others or the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from receiver import answers
from receiver.fleet import FleetWatch
from receiver.store import Store

COALESCE_S = 0.2
QUEUE = 256


class LiveHub:
    """The connected clients and the vins changed since the last flush."""

    def __init__(self, store: Callable[[], Store], watch: FleetWatch | None) -> None:
        self.store, self.watch = store, watch
        self.clients: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty: dict[str, set[str]] = {}  # vin -> kinds of event
        self._alerts: list[dict[str, Any]] = []
        self._pushed: dict[str, float | None] = {}  # vin -> the instant of the last value pushed
        self._flushing = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, kind: str, vin: str, detail: Any) -> None:
        """From any thread: an event of ``kind`` (``status``, ``commit``, ``alert``) for ``vin``."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._mark, kind, vin, detail)

    def _mark(self, kind: str, vin: str, detail: Any) -> None:
        if kind == "alert":
            self._alerts.append(detail)
        self._dirty.setdefault(vin, set()).add(kind)
        self._schedule()

    def _schedule(self) -> None:
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_later(COALESCE_S, lambda: asyncio.ensure_future(self._flush()))

    async def _flush(self) -> None:
        dirty, self._dirty = self._dirty, {}
        alerts, self._alerts = self._alerts, []
        try:
            messages = await asyncio.to_thread(self._read, dirty) if self.clients else []
        finally:
            self._flushing = False
            if self._dirty or self._alerts:  # events during the read: one more flush
                self._schedule()
        messages += [{"type": "alert", "alert": alert} for alert in alerts]
        for queue in list(self.clients):
            for message in messages:
                if queue.qsize() >= QUEUE:
                    self.clients.discard(queue)
                    queue.put_nowait(None)  # the reader ends that client
                    break
                queue.put_nowait(message)

    def _read(self, dirty: dict[str, set[str]]) -> list[dict[str, Any]]:
        """Worker thread: the messages for the dirty vins."""
        store, statuses = self.store(), (self.watch.statuses if self.watch else {})
        stored = set(store.vins())
        out: list[dict[str, Any]] = []
        for entry in answers.vehicles(store, statuses, only=set(dirty)):  # only what changed
            out.append({"type": "status", "vehicle": entry})
        for vin, kinds in sorted(dirty.items()):
            if "commit" in kinds and vin in stored:
                until, signals = answers.values_since(store, vin, self._pushed.get(vin))
                self._pushed[vin] = until
                if signals:
                    out.append({"type": "values", "vin": vin, "until": until, "signals": signals})
        return out

    async def serve(self, socket: WebSocket) -> None:
        """One client's connection: a hello with the fleet, then every message until it goes."""
        await socket.accept()
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        statuses = self.watch.statuses if self.watch else {}
        fleet = await asyncio.to_thread(lambda: answers.vehicles(self.store(), statuses))
        await socket.send_json({"type": "hello", "vehicles": fleet})
        self.clients.add(queue)
        receiving = asyncio.ensure_future(self._drain_incoming(socket))
        try:
            while True:
                getting = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getting, receiving}, return_when=asyncio.FIRST_COMPLETED)
                if receiving in done:
                    getting.cancel()
                    return
                message = getting.result()
                if message is None:
                    await socket.close(code=1013, reason="too slow: reconnect")
                    return
                await socket.send_json(message)
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            self.clients.discard(queue)
            receiving.cancel()

    @staticmethod
    async def _drain_incoming(socket: WebSocket) -> None:
        """Read (and ignore) what the client sends, to notice when it goes."""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                await socket.receive_text()
