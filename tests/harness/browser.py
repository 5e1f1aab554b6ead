"""Debian's headless Chromium driven over its DevTools protocol (CDP), for the live page's tests.

:func:`chromium` starts ``/usr/bin/chromium`` headless on a fresh profile in the caller's folder, reads
its DevTools port from ``DevToolsActivePort`` (a condition, not a sleep), opens the page target's
WebSocket and yields a :class:`Page`; at the end it closes the socket and stops the browser (SIGTERM,
then SIGKILL). No network but loopback is used and nothing is downloaded.
Threads: a :class:`Page` belongs to the caller's thread; one reader thread receives every message,
answers each command's waiter and records console errors, uncaught exceptions and error log entries in
:attr:`Page.errors` (a list: read it, don't mutate it from elsewhere).
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.harness.waiting import wait_for

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1280,1000",
)


def available() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} not found (Debian's chromium package: `make test` installs it)"
    return None


class Page:
    """One page target: commands by :meth:`call`, JavaScript by :meth:`evaluate`."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.errors: list[str] = []
        self._ids = itertools.count(1)
        self._answers: dict[int, dict[str, Any]] = {}
        self._arrived = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for text in self.socket:
                message = json.loads(text)
                if "id" in message:
                    with self._arrived:
                        self._answers[message["id"]] = message
                        self._arrived.notify_all()
                else:
                    self._event(message.get("method", ""), message.get("params", {}))
        except ConnectionClosed:
            pass
        finally:
            with self._arrived:
                self._arrived.notify_all()

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            texts = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            self.errors.append(f"console.{params['type']}: {' '.join(texts)}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            described = details.get("exception", {}).get("description", details.get("text", ""))
            self.errors.append(f"exception: {described}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")

    def call(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        """Send one CDP command and return its result; a CDP error raises ``AssertionError``."""
        number = next(self._ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        with self._arrived:
            if not self._arrived.wait_for(
                lambda: number in self._answers or not self._reader.is_alive(), timeout
            ):
                raise AssertionError(f"CDP {method}: no answer in {timeout} s")
            answer = self._answers.pop(number, None)
        if answer is None:
            raise AssertionError(f"CDP {method}: the browser closed the connection")
        if "error" in answer:
            raise AssertionError(f"CDP {method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise), as JSON."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"JavaScript {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str, timeout: float = 15.0) -> None:
        """Load ``url`` and return once its document has loaded."""
        self.call("Page.navigate", url=url)
        wait_for(lambda: self.evaluate("document.readyState") == "complete", timeout, f"{url} did not load")

    def screenshot(self, path: Path) -> Path:
        """The viewport as a PNG at ``path``."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@contextmanager
def chromium(profile: Path, timeout: float = 20.0) -> Iterator[Page]:
    """Headless Chromium with its profile in ``profile`` (created), one blank page ready for commands."""
    profile.mkdir(parents=True, exist_ok=True)
    log = open(profile / "chromium.log", "wb")  # noqa: SIM115 - closed in finally below
    process = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    active = profile / "DevToolsActivePort"
    try:
        wait_for(
            lambda: active.exists() and len(active.read_text().splitlines()) >= 2,
            timeout,
            lambda: f"chromium wrote no DevToolsActivePort: {(profile / 'chromium.log').read_text()[-2000:]}",
            process,
        )
        port = int(active.read_text().splitlines()[0])
        with urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.loads(answer.read())
        [target] = [t for t in targets if t.get("type") == "page"][:1]
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as socket:
            page = Page(socket)
            for domain in ("Page", "Runtime", "Log"):
                page.call(f"{domain}.enable")
            yield page
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
