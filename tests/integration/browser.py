"""A real headless Chromium for tests, driven over the Chrome DevTools Protocol (aiohttp's WebSocket client).

No Selenium or Playwright: Debian's ``chromium`` package and the DevTools protocol are enough to log
in (a cookie), open a page, read what it rendered and take a screenshot. The browser runs in its own
process group and profile directory and is stopped on every path. :func:`chromium_path` is ``None``
when no Chromium is installed: tests that need it skip.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any

import aiohttp

from tests.processes import stop_group

_DEVTOOLS = re.compile(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)")


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


class Chromium:
    """``with Chromium() as browser: browser.run(coroutine_function)``: one headless browser."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        path = chromium_path()
        if path is None:
            raise RuntimeError("no chromium installed")
        self.path = path
        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="segmind-chromium-")
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> Chromium:
        self.process = subprocess.Popen(
            [
                self.path,
                "--headless=new",
                "--no-sandbox",  # tests may run as root in a container
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.process.stderr is not None
        deadline = time.monotonic() + 60
        seen = b""
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            seen += line
            match = _DEVTOOLS.search(line.decode(errors="replace"))
            if match:
                self.port = int(match.group(2))
                return self
        self.__exit__(None, None, None)
        raise RuntimeError(f"chromium did not start: {seen.decode(errors='replace')[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_group(process, term_wait=20)
            if process.stderr is not None:
                process.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def run(self, scenario: Any, timeout: float = 180) -> Any:
        """Run ``await scenario(page)`` in a fresh tab, ``page`` a :class:`Page`."""

        async def main() -> Any:
            async with aiohttp.ClientSession() as session:
                base = f"http://127.0.0.1:{self.port}"
                async with session.put(f"{base}/json/new?about:blank") as response:
                    target = await response.json(content_type=None)
                async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    page = Page(ws)
                    await page.send(
                        "Emulation.setDeviceMetricsOverride",
                        width=self.width,
                        height=self.height,
                        deviceScaleFactor=1,
                        mobile=False,
                    )
                    return await scenario(page)

        return asyncio.run(asyncio.wait_for(main(), timeout))


class Page:
    """One tab's DevTools session: commands and the values of JavaScript expressions."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        await self.ws.send_str(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads((await self.ws.receive()).data)
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result") or {})

    async def evaluate(self, expression: str) -> Any:
        answer = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression!r}: {answer['exceptionDetails']}")
        return answer.get("result", {}).get("value")

    async def wait_for(self, expression: str, seconds: float = 60) -> Any:
        """Poll a JavaScript expression until it is truthy; its value (or the last one, after ``seconds``)."""
        deadline = time.monotonic() + seconds
        value = None
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):
                value = await self.evaluate(expression)
                if value:
                    return value
            await asyncio.sleep(0.5)
        return value

    async def screenshot(self) -> bytes:
        """The page as PNG bytes."""
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(shot["data"])
