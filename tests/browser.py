"""A small headless-Chromium driver over the Chrome DevTools Protocol, for the report's browser test.

Chromium starts with ``--remote-debugging-port=0`` and a fresh profile; it writes the port it chose
to ``<profile>/DevToolsActivePort``. We open a page target over HTTP, talk to it over its websocket
(``websocket-client``), and collect console messages, uncaught exceptions, log errors and every
network request the page makes.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
)


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """``with Chromium() as page: page.load(url); page.evaluate("1 + 1")``."""

    def __init__(self, binary: str | None = None, timeout_s: float = 15.0, width: int = 1100, height: int = 900):
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise FileNotFoundError(f"expected a Chromium binary on PATH (one of {CANDIDATES})")
        self.timeout_s = timeout_s
        self.width, self.height = width, height
        self.console: list[dict] = []  # {"level", "text"} of console calls, exceptions, log entries
        self.requests: list[str] = []  # URL of every request the page made
        self._next_id = 0

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> "Chromium":
        import websocket  # test extra: websocket-client

        self._profile = tempfile.TemporaryDirectory(
            prefix="bnlab-chromium-", ignore_cleanup_errors=True
        )  # chromium's helper processes may still write the profile as it is removed
        self._proc = subprocess.Popen(
            [
                self.binary,
                *FLAGS,
                f"--user-data-dir={self._profile.name}",
                "--remote-debugging-port=0",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port = self._wait_for_port(Path(self._profile.name) / "DevToolsActivePort")
            req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                target = json.load(resp)
            self._ws = websocket.create_connection(
                target["webSocketDebuggerUrl"], timeout=self.timeout_s, suppress_origin=True
            )
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=self.width,
                height=self.height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._ws.close()
        except Exception:
            pass
        self._stop()

    def _stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._profile.cleanup()

    def _wait_for_port(self, path: Path) -> int:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self._proc.returncode} before it started")
            try:
                first = path.read_text().splitlines()[0]
                return int(first)
            except (OSError, IndexError, ValueError):
                time.sleep(0.05)
        raise TimeoutError(f"chromium did not open its debugging port within {self.timeout_s} s")

    # --- protocol ------------------------------------------------------------------------------

    def call(self, method: str, **params):
        """Send one command and return its result, recording the events that arrive meanwhile."""
        self._next_id += 1
        my_id = self._next_id
        self._ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = self._receive()
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method} failed: {msg['error']}")
                return msg.get("result", {})

    def wait_for_event(self, method: str) -> dict:
        while True:
            msg = self._receive()
            if msg.get("method") == method:
                return msg.get("params", {})

    def _receive(self) -> dict:
        msg = json.loads(self._ws.recv())
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append({"level": params.get("type"), "text": text})
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(
                {
                    "level": "error",
                    "text": details.get("text", "") + " " + str(details.get("exception", {}).get("description", "")),
                }
            )
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append({"level": entry.get("level"), "text": entry.get("text", "")})
        elif method == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))
        return msg

    # --- page ----------------------------------------------------------------------------------

    def load(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[dict]:
        return [m for m in self.console if m["level"] in ("error", "assert")]

    def screenshot(self, path: Path, full_page: bool = True) -> None:
        params = {"format": "png"}
        if full_page:
            height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
            params.update(
                captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}
            )
        data = self.call("Page.captureScreenshot", **params)["data"]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(base64.b64decode(data))
